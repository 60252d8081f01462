"""EnclaveClient and AsyncEnclaveClient: verify an enclave and exchange mail with it.

The protocol lives in :class:`ClientCore`, which does no I/O: it checks attestations, seals
mail, opens and checks replies, and keeps the state ``save()`` writes. The two clients only move
its bytes through a transport, one blocking and one with asyncio.
"""

from __future__ import annotations

import json
import secrets
import threading
from typing import Any, Self

from sanctorum.attestation.constraint import EnclaveConstraint
from sanctorum.attestation.instance_info import EnclaveInstanceInfo
from sanctorum.client.transport import AsyncEnclaveTransport, EnclaveTransport
from sanctorum.common.errors import (
    ClientStateError,
    EnclaveRollbackError,
    EnclaveStateError,
    InvalidKeyError,
    MailDecryptionError,
    MailReplayError,
    MailSenderError,
    SanctorumError,
)
from sanctorum.common.keys import Curve25519PrivateKey, Curve25519PublicKey
from sanctorum.mail.format import EnclaveMail, open_mail, validate_topic
from sanctorum.mail.post_office import PostOffice
from sanctorum.mail.private_header import COMMIT_ID_SIZE, CommitHeader

_STATE_VERSION = 1
_EARLIER_INSTANCES = 4  # how many restarted instances' replies can still be opened


class ClientCore:
    """Everything a client of one enclave service knows and checks, without any I/O.

    ``private_key`` is the client's identity as enclaves see it (the mail's authenticated
    sender); a fresh one is made if none is given. :meth:`save` keeps it, so keep saved state
    secret.

    With ``rollback_detection`` (the default), a reply from an enclave with persistent state
    raises :class:`EnclaveRollbackError` if the enclave no longer remembers the last state it
    told this client about: the host restarted it from an older copy of its state.
    """

    def __init__(
        self,
        constraint: EnclaveConstraint | str,
        private_key: Curve25519PrivateKey | None = None,
        *,
        rollback_detection: bool = True,
    ) -> None:
        self.constraint = (
            constraint
            if isinstance(constraint, EnclaveConstraint)
            else EnclaveConstraint.parse(constraint)
        )
        self.private_key = private_key or Curve25519PrivateKey.generate()
        self.correlation_id = secrets.token_hex(16)
        """The routing hint under which the host queues this client's replies."""
        self._instance_info: EnclaveInstanceInfo | None = None
        self._post_offices: dict[str, PostOffice] = {}
        self._earlier: dict[Curve25519PublicKey, dict[str, PostOffice]] = {}
        # Sequence state restored from save(), used if the enclave still has the same key.
        self._saved_enclave_key: Curve25519PublicKey | None = None
        self._saved_sequences: dict[str, tuple[int, int]] = {}
        self.rollback_detection = rollback_detection
        self._last_commit: bytes | None = None  # the enclave state we last heard of
        self._lock = threading.RLock()

    @property
    def public_key(self) -> Curve25519PublicKey:
        """How enclaves see this client."""
        return self.private_key.public_key

    @property
    def enclave_instance_info(self) -> EnclaveInstanceInfo:
        """The verified attestation of the enclave this client talks to."""
        if self._instance_info is None:
            raise EnclaveStateError("the client is not started: call start(transport) first")
        return self._instance_info

    def adopt(self, attestation: bytes) -> bool:
        """Verify ``attestation`` and check the constraint, then talk to that instance.

        Returns whether it is another instance (a new key) than before. Raises
        :class:`InvalidEnclaveError` if it does not verify or fails the constraint; nothing is
        sent to such an enclave.
        """
        info = EnclaveInstanceInfo.deserialize(attestation)
        self.constraint.check(info)
        with self._lock:
            changed = (
                self._instance_info is None
                or info.encryption_key != self._instance_info.encryption_key
            )
            self._adopt(info)
        return changed

    def _adopt(self, info: EnclaveInstanceInfo) -> None:
        if self._instance_info is None or info.encryption_key != self._instance_info.encryption_key:
            # A new enclave instance: topics start afresh unless saved state was for it. Replies
            # the earlier instance queued before it stopped can still be opened.
            if self._instance_info is not None and self._post_offices:
                self._earlier[self._instance_info.encryption_key] = self._post_offices
                while len(self._earlier) > _EARLIER_INSTANCES:
                    del self._earlier[next(iter(self._earlier))]
            self._post_offices = {}
            if info.encryption_key == self._saved_enclave_key:
                for topic, (next_out, next_in) in self._saved_sequences.items():
                    self._post_offices[topic] = PostOffice(
                        self.private_key,
                        info.encryption_key,
                        topic,
                        next_sequence_number=next_out,
                        next_reply_sequence_number=next_in,
                    )
            self._saved_enclave_key = None
            self._saved_sequences = {}
        self._instance_info = info

    def _post_office(self, topic: str) -> PostOffice:
        post_office = self._post_offices.get(topic)
        if post_office is None:
            post_office = self.enclave_instance_info.create_post_office(self.private_key, topic)
            self._post_offices[topic] = post_office
        return post_office

    def seal(self, body: bytes, envelope: bytes | None = None, topic: str = "default") -> bytes:
        """Seal ``body`` to the adopted enclave instance on ``topic`` (the next in sequence)."""
        validate_topic(topic)
        with self._lock:
            return self._post_office(topic).encrypt_mail(body, envelope or b"")

    def open_reply(self, mail: bytes) -> EnclaveMail:
        """Open a reply: from the attested enclave, in order, and not from a rolled-back state.

        Raises a :class:`MailError` or :class:`EnclaveRollbackError`; a rejected reply changes
        nothing but the rollback check, which keeps failing once it has failed.
        """
        with self._lock:
            return self._open_reply(mail)

    def _open_reply(self, mail: bytes) -> EnclaveMail:
        opened = open_mail(self.private_key, mail)
        current = self._instance_info.encryption_key if self._instance_info else None
        offices = (
            self._post_offices
            if opened.authenticated_sender == current
            else self._earlier.get(opened.authenticated_sender, {})
        )
        post_office = offices.get(opened.topic)
        if post_office is None:
            raise MailSenderError(
                f"received a mail on topic {opened.topic!r} from a sender this client did not "
                "write to on that topic"
            )
        reply = post_office.accept_reply(opened)
        header = CommitHeader.decode(reply.private_header)
        if header is not None:
            if self.rollback_detection and header.last_told != self._last_commit:
                raise EnclaveRollbackError(
                    "the enclave has been rolled back: it answers from a state older than the "
                    "one it last told this client about (the host restarted it from an old "
                    "copy of its sealed state); do not trust this answer"
                )
            self._last_commit = header.commit_id
        return reply

    def save(self) -> bytes:
        """This client's identity, correlation id and sequence state, to :meth:`restore` later.

        It contains the client's private key: store it as a secret.
        """
        with self._lock:
            state: dict[str, Any] = {
                "version": _STATE_VERSION,
                "constraint": self.constraint.format(),
                "private_key": self.private_key.encoded.hex(),
                "correlation_id": self.correlation_id,
                "rollback_detection": self.rollback_detection,
                "last_commit": self._last_commit.hex() if self._last_commit else None,
            }
            if self._instance_info is not None:
                state["enclave_key"] = self._instance_info.encryption_key.encoded.hex()
                state["topics"] = {
                    topic: [office.next_sequence_number, office.next_reply_sequence_number]
                    for topic, office in self._post_offices.items()
                }
            return json.dumps(state, sort_keys=True).encode()

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """A client from :meth:`save`'s bytes; call :meth:`start` to reconnect.

        If the enclave still runs the same instance, topics continue where they were; if it has
        restarted (new key), they start afresh.
        """
        try:
            state = json.loads(data)
            if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
                raise ClientStateError(
                    "saved client state is not of version "
                    f"{_STATE_VERSION}; it was made by another version of Sanctorum"
                )
            client = cls(
                EnclaveConstraint.parse(state["constraint"]),
                Curve25519PrivateKey(bytes.fromhex(state["private_key"])),
                rollback_detection=bool(state.get("rollback_detection", True)),
            )
            last_commit = state.get("last_commit")
            if last_commit is not None:
                client._last_commit = bytes.fromhex(last_commit)
                if len(client._last_commit) != COMMIT_ID_SIZE:
                    raise ClientStateError("saved client state has a malformed commit id")
            correlation_id = state["correlation_id"]
            if not isinstance(correlation_id, str) or not correlation_id:
                raise ClientStateError("saved client state has no correlation id")
            client.correlation_id = correlation_id
            if "enclave_key" in state:
                client._saved_enclave_key = Curve25519PublicKey(bytes.fromhex(state["enclave_key"]))
                for topic, (next_out, next_in) in state["topics"].items():
                    if not all(isinstance(n, int) and n >= 0 for n in (next_out, next_in)):
                        raise ClientStateError(f"bad sequence numbers for topic {topic!r}")
                    client._saved_sequences[validate_topic(topic)] = (next_out, next_in)
            return client
        except ClientStateError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, InvalidKeyError) as error:
            raise ClientStateError(f"saved client state is malformed: {error!r}") from None
        except SanctorumError as error:
            raise ClientStateError(f"saved client state is invalid: {error}") from None


class EnclaveClient(ClientCore):
    """A client of one enclave service (blocking I/O; see :class:`AsyncEnclaveClient`).

    It checks the enclave's attestation against ``constraint`` before sending anything, seals
    every mail to the attested key, and accepts replies only from that enclave, in order::

        client = EnclaveClient("C:9A0F… SEC:INSECURE")
        client.start(WebTransport("http://localhost:8080"))
        reply = client.send_mail(b"hello")

    If the enclave has restarted (the host answers ``MAIL_DECRYPTION``), the client fetches
    the new attestation, checks the constraint again and resends, once.
    """

    _transport: EnclaveTransport | None = None

    def start(self, transport: EnclaveTransport) -> None:
        """Fetch the attestation through ``transport`` and check it (see :meth:`adopt`)."""
        self.adopt(transport.get_attestation())
        self._transport = transport

    def _require_transport(self) -> EnclaveTransport:
        if self._transport is None:
            raise EnclaveStateError("the client is not started: call start(transport) first")
        return self._transport

    def send_mail(
        self, body: bytes, envelope: bytes | None = None, topic: str = "default"
    ) -> EnclaveMail | None:
        """Seal ``body`` to the enclave and deliver it; returns the enclave's first reply to it,
        or None if the enclave did not reply at once (see :meth:`poll_mail`)."""
        transport = self._require_transport()
        try:
            reply = transport.deliver_mail(self.seal(body, envelope, topic), self.correlation_id)
        except MailDecryptionError:
            # Most likely the enclave restarted with a new key: attest again, then resend.
            if not self.adopt(transport.get_attestation()):
                raise
            reply = transport.deliver_mail(self.seal(body, envelope, topic), self.correlation_id)
        return self.open_reply(reply) if reply else None

    def poll_mail(self) -> EnclaveMail | None:
        """The next reply the host queued for this client, or None."""
        transport = self._require_transport()
        while True:
            reply = transport.poll_mail(self.correlation_id)
            if not reply:
                return None
            try:
                return self.open_reply(reply)
            except MailReplayError:
                continue  # a second copy of a reply already received: drop it


class AsyncEnclaveClient(ClientCore):
    """:class:`EnclaveClient` for asyncio: the same checks, awaitable I/O."""

    _transport: AsyncEnclaveTransport | None = None

    async def start(self, transport: AsyncEnclaveTransport) -> None:
        """Fetch the attestation through ``transport`` and check it (see :meth:`adopt`)."""
        self.adopt(await transport.get_attestation())
        self._transport = transport

    def _require_transport(self) -> AsyncEnclaveTransport:
        if self._transport is None:
            raise EnclaveStateError("the client is not started: await start(transport) first")
        return self._transport

    async def send_mail(
        self, body: bytes, envelope: bytes | None = None, topic: str = "default"
    ) -> EnclaveMail | None:
        """As :meth:`EnclaveClient.send_mail`."""
        transport = self._require_transport()
        try:
            reply = await transport.deliver_mail(
                self.seal(body, envelope, topic), self.correlation_id
            )
        except MailDecryptionError:
            if not self.adopt(await transport.get_attestation()):
                raise
            reply = await transport.deliver_mail(
                self.seal(body, envelope, topic), self.correlation_id
            )
        return self.open_reply(reply) if reply else None

    async def poll_mail(self) -> EnclaveMail | None:
        """As :meth:`EnclaveClient.poll_mail`."""
        transport = self._require_transport()
        while True:
            reply = await transport.poll_mail(self.correlation_id)
            if not reply:
                return None
            try:
                return self.open_reply(reply)
            except MailReplayError:
                continue
