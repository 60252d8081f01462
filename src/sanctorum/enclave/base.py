"""The Enclave base class: subclass it to write an enclave."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, ClassVar

from sanctorum.common.errors import EnclaveStateError, InvalidConstraintError
from sanctorum.common.keys import Curve25519PublicKey
from sanctorum.enclave.sealing import SealingPolicy, SecurityVersions
from sanctorum.mail.format import EnclaveMail
from sanctorum.mail.policy import MinSizePolicy
from sanctorum.mail.post_office import PostOffice

if TYPE_CHECKING:
    from sanctorum.attestation.constraint import EnclaveConstraint
    from sanctorum.attestation.instance_info import EnclaveInstanceInfo
    from sanctorum.enclave.filesystem import EnclaveFileSystem
    from sanctorum.enclave.runtime import EnclaveRuntime


class Enclave:
    """Base class of every enclave.

    Override :meth:`receive_from_untrusted_host` to serve local calls from the host and
    :meth:`receive_mail` to serve clients. Mail handed to :meth:`receive_mail` has already been
    decrypted, authenticated and checked to be the next in sequence for its sender and topic.

    An enclave that does not set ``thread_safe = True`` is entered by one thread at a time; the
    runtime inside the enclave enforces it, not the (untrusted) host.
    """

    # The settings below are for a class that no enclave.toml names (a quick test, an enclave
    # written in a test file). For the entry class of a project, enclave.toml decides in every
    # mode, mock included (sanctorum.host.mock_settings), and a class attribute that says
    # otherwise is refused.
    thread_safe: ClassVar[bool] = False
    """Set to True if the enclave can handle several calls at once (``thread_safe`` in
    ``enclave.toml``)."""
    filesystem_size: ClassVar[int] = 0
    memory_filesystem_size: ClassVar[int] = 0
    """Bytes of persistent and of in-memory filesystem (0: none): ``filesystem_size`` and
    ``memory_filesystem_size`` in ``enclave.toml``."""
    persistent_map_size: ClassVar[int | None] = None
    """A maximum size in bytes enables :attr:`persistent_map` (``persistent_map`` and
    ``max_persistent_map_size`` in ``enclave.toml``)."""

    _runtime: EnclaveRuntime | None = None

    # -- hooks to override -------------------------------------------------------------------

    def on_startup(self) -> None:
        """Called once, before the first call or mail. Its persistent-map and file changes
        are committed when it returns; the mail it posts and that commit reach the host's
        ``on_mail_commands`` before ``EnclaveHost.start`` returns."""

    def on_shutdown(self) -> None:
        """Called once when the host closes the enclave. Nothing it changes is committed or
        posted: the host is no longer listening (persist from your calls instead)."""

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        """Handle ``EnclaveHost.call_enclave(data)``; the return value goes back to the host.

        Remember the host is untrusted: treat ``data`` as attacker-controlled.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not accept calls from the host: override "
            "receive_from_untrusted_host to handle them"
        )

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        """Handle a mail from a client. Reply with :meth:`post_office` and :meth:`post_mail`."""
        raise NotImplementedError(
            f"{type(self).__name__} does not accept mail: override receive_mail to handle it"
        )

    # -- services of the runtime -------------------------------------------------------------

    @property
    def runtime(self) -> EnclaveRuntime:
        if self._runtime is None:
            raise EnclaveStateError(
                "this enclave is not running yet: enclave services are available from "
                "on_startup onwards, once a host has loaded and started it"
            )
        return self._runtime

    @property
    def enclave_instance_info(self) -> EnclaveInstanceInfo:
        """This instance's attestation, as clients see it."""
        return self.runtime.instance_info

    @property
    def kds_enclave_instance_info(self) -> EnclaveInstanceInfo | None:
        """The attestation of the KDS that gave this instance its last key (it met the KDS
        constraint of the ``[kds]`` table), or None if it took no key from a KDS yet."""
        return self.runtime.kds_instance_info

    def create_attestation_quote(self, report_data: bytes) -> bytes:
        """Evidence from the platform that this enclave vouches for ``report_data`` (exactly 64
        bytes of its choosing: a hash of a result, a key of another protocol). A third party
        verifies it with ``AttestationQuote.deserialize`` and checks it against a constraint
        like an attestation (docs/concepts.md). TypeError if not bytes, ValueError if not 64."""
        return self.runtime.create_attestation_quote(report_data)

    def call_untrusted_host(self, data: bytes) -> bytes | None:
        """Call the host's callback for the current ``call_enclave`` or ``deliver_mail``;
        returns its answer (the host's word: trust it no more than the host)."""
        return self.runtime.call_untrusted_host(data)

    def verify_enclave(
        self, attestation: bytes, constraint: EnclaveConstraint | str
    ) -> EnclaveInstanceInfo:
        """Another enclave's attestation (as its host serves it), verified inside this enclave
        and checked against ``constraint``: :class:`InvalidEnclaveError` if it fails. Mail to
        it goes through ``post_office(info, topic)``; mail from it has
        ``authenticated_sender == info.encryption_key``."""
        # Imported when used: most enclaves never verify another, and the enclave process
        # starts faster without the verifiers.
        from sanctorum.attestation.constraint import EnclaveConstraint
        from sanctorum.attestation.instance_info import EnclaveInstanceInfo

        if isinstance(constraint, str):
            constraint = EnclaveConstraint.parse(constraint)
        elif not isinstance(constraint, EnclaveConstraint):
            raise InvalidConstraintError(
                f"a constraint is an EnclaveConstraint or a str, not {type(constraint).__name__}"
            )
        info = EnclaveInstanceInfo.deserialize(attestation)
        constraint.check(info)
        return info

    def post_office(
        self,
        destination: Curve25519PublicKey | EnclaveMail | EnclaveInstanceInfo,
        topic: str | None = None,
        min_size_policy: MinSizePolicy | None = None,
    ) -> PostOffice:
        """The post office for replying to ``destination`` on ``topic``.

        Given a received mail, it replies to the mail's authenticated sender on the mail's topic.
        Given another enclave's attestation (from :meth:`verify_enclave`), it mails that
        enclave instance. The same post office is returned for the same destination and topic,
        so sequence numbers continue.
        """
        if isinstance(destination, EnclaveMail):
            topic = topic or destination.topic
            destination = destination.authenticated_sender
        elif not isinstance(destination, Curve25519PublicKey):
            from sanctorum.attestation.instance_info import EnclaveInstanceInfo  # when used

            if not isinstance(destination, EnclaveInstanceInfo):
                raise TypeError(
                    "a post office's destination is a Curve25519PublicKey, an EnclaveMail or an "
                    f"EnclaveInstanceInfo (from verify_enclave), not {type(destination).__name__}"
                )
            destination = destination.encryption_key
        return self.runtime.post_office(destination, topic or "default", min_size_policy)

    def post_mail(self, encrypted_mail: bytes, routing_hint: str | None) -> None:
        """Ask the host to deliver ``encrypted_mail`` when the current call returns."""
        self.runtime.post_mail(encrypted_mail, routing_hint)

    @property
    def persistent_map(self) -> MutableMapping[str, bytes]:
        """Durable key-value state: changes made while handling one call or mail are sealed
        and handed to the host when it returns, and dropped if it raises."""
        return self.runtime.persistent_map

    @property
    def filesystem(self) -> EnclaveFileSystem:
        """The enclave's files: persistent and encrypted on the host, or in memory, or both
        (then ``/tmp`` is in memory). ``filesystem.fsspec()`` gives an fsspec view."""
        return self.runtime.filesystem

    def sealing_key(
        self,
        policy: SealingPolicy = SealingPolicy.SIGNER,
        purpose: bytes = b"",
        versions: SecurityVersions | None = None,
    ) -> bytes:
        """A 32-byte key only this enclave identity on this platform can derive (see
        :mod:`sanctorum.enclave.sealing`), for sealing data of your own.

        ``versions`` asks for the key of older security versions (to open data sealed before
        an upgrade; record them beside the data); newer ones raise :class:`SealedStateError`.
        """
        return self.runtime.sealing_key(policy, b"user:" + purpose, versions)

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` with the enclave's data signing key (clients check it with
        ``EnclaveInstanceInfo.verifier()``)."""
        return self.runtime.sign(data)
