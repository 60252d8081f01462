"""The one error hierarchy of Sanctorum.

Every error the toolkit raises on purpose derives from :class:`SanctorumError`, so callers can
catch the whole family at one place, and every message says what was wrong and what to do.
"""

from __future__ import annotations


class SanctorumError(Exception):
    """Root of every error Sanctorum raises."""


class InvalidEnclaveError(SanctorumError):
    """Attestation evidence is malformed or does not verify, or an enclave fails a constraint."""


class InvalidConstraintError(SanctorumError, ValueError):
    """A constraint string or constraint value is not well formed."""


class InvalidSignatureError(SanctorumError):
    """A signature does not verify under the enclave's data signing key."""


class InvalidKeyError(SanctorumError, ValueError):
    """Key or hash bytes have the wrong length or form."""


class MailError(SanctorumError):
    """Base class of every Mail failure."""


class MailFormatError(MailError):
    """Bytes that claim to be a mail are malformed, truncated, oversized or of another version."""


class MailDecryptionError(MailError):
    """A mail does not decrypt: it was sealed for another key, or was altered in transit.

    The most common cause is an enclave restart: the enclave has a new encryption key, so the
    client should fetch the new attestation and send again.
    """


class MailSenderError(MailError):
    """A mail decrypted but was not sent by the party it had to come from."""


class UnattestedSenderError(MailSenderError):
    """A mail comes from an enclave key this client has not verified an attestation for.

    Clients fetch the host's current attestation and try again; the error stands if the mail's
    sender is still not an attested instance that meets the client's constraint.
    """

    def __init__(self, message: str, sender: bytes) -> None:
        super().__init__(message)
        self.sender = sender


class MailSequenceError(MailError):
    """A mail's sequence number is not the next one expected for its sender and topic."""


class MailReplayError(MailSequenceError):
    """A mail's sequence number was already used: the mail was replayed (or arrived late)."""


class MailGapError(MailSequenceError):
    """A mail's sequence number skips ahead: an earlier mail was dropped or reordered."""


class EnclaveError(SanctorumError):
    """Base class of failures of the host↔enclave machinery."""


class EnclaveLoadError(EnclaveError):
    """An enclave could not be loaded: bad class, bad configuration or unsupported mode."""


class DependencyMismatchError(EnclaveLoadError):
    """A native dependency installed where the enclave runs is not the one it was built with:
    a recorded file is missing, or its size or hash differ."""


class FrameError(EnclaveError):
    """A frame crossing the host↔enclave boundary is malformed, oversized or out of order."""


class EnclaveCrashedError(EnclaveError):
    """The enclave's process died; start a fresh instance (``EnclaveHost.restart()``)."""


class BundleError(EnclaveLoadError):
    """An enclave project or bundle is invalid, or a bundle was altered after it was signed."""


class SealedStateError(EnclaveError):
    """Sealed state could not be opened: it belongs to another enclave identity or platform, or
    was altered. The enclave refuses to start rather than start empty."""


class FileSystemRollbackError(SealedStateError):
    """The persistent filesystem file is not the one the sealed state records: it was emptied,
    replaced by an older copy, or belongs to other state. The enclave refuses to start."""


class SealedStateJournalError(SealedStateError):
    """The journal records the host passed with the snapshot do not chain: one was dropped,
    reordered, replayed, or taken from another chain. The enclave refuses to start."""


class NewerSealedStateError(SealedStateError):
    """The sealed state was written by newer security versions (a higher revocation or TCB
    level) than this enclave's: an enclave never reads state a newer version wrote."""


class EnclaveRollbackError(SanctorumError):
    """The enclave's persistent state is older than what it already told this client: the host
    restarted it from an old copy of its sealed state."""


class EnclaveStateError(EnclaveError):
    """The enclave host was used in the wrong state (not started, already closed, …)."""


class StateDirInUseError(EnclaveStateError):
    """Another host process holds the state dir; a second host would lose its mail and state."""


class MailPendingError(EnclaveError):
    """A web host put a mail in the database for the host serving its partition, which did not
    handle it in time. It may still be handled: the outcome is unknown (HTTP 504)."""


class LeaseLostError(EnclaveStateError):
    """A web host's lease on a partition of the service ran out or was taken over by another
    host: what its enclave instance made since is not stored, and the instance is stopped."""


TRACEBACK_HEADING = "Traceback inside the enclave (most recent call last):"


class EnclaveCallError(EnclaveError):
    """Code inside the enclave raised while handling a call or a mail.

    The enclave's own exception is kept as ``__cause__`` where it can cross the boundary
    (mock mode). In mock, simulation and debug modes the message ends with the traceback of the
    enclave's code (:attr:`enclave_traceback`); a release enclave sends the exception's type
    only, since a message or traceback may hold its data.
    """

    @property
    def enclave_traceback(self) -> str | None:
        """The traceback of the enclave's code, if the enclave sent one."""
        message = str(self)
        _, found, rest = message.partition(TRACEBACK_HEADING)
        return rest.strip("\n") if found else None


class ClientStateError(SanctorumError, ValueError):
    """Saved client state cannot be restored: it is malformed or from another version."""


class TransportError(SanctorumError):
    """A client transport could not reach the host, or the host answered with an error."""


class MailRefusedError(TransportError):
    """The host refused a mail before the enclave saw it (too large, malformed request, out of
    sequence, or the host could not be reached): nothing was spent, and sending again is safe."""


class MailTooLargeError(MailRefusedError):
    """A mail would be larger than the host accepts; it was refused before it was sealed."""


class ProjectInitError(SanctorumError):
    """``sanctorum init`` cannot create a project there: the directory is not empty, or a name
    cannot be a Python module or class name."""


class PersistentMapFullError(EnclaveCallError):
    """A call's changes would take the persistent map over its configured maximum size; none of
    them were committed."""


class KdsError(SanctorumError):
    """A key derivation service could not give a key, or gave one that cannot be trusted."""


class KdsKeyRequiredError(KdsError):
    """A mail is sealed to a KDS key the enclave instance does not hold yet: its host must ask
    the KDS for it and deliver the mail again with the answer (``EnclaveHost`` does)."""


class KeySpecError(KdsError, ValueError):
    """A key spec is not well formed: its name, master key type or policy constraint."""


class KdsRequestError(KdsError):
    """The KDS refused a request: ``status`` 400 if it was malformed or its attestation does
    not verify, 403 if the requester may not have the key."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
