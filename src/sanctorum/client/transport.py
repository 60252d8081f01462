"""Client transports: how an EnclaveClient reaches the host of its enclave.

A transport only moves bytes. Everything a conversation needs to survive (which mail was
opened, sequence numbers, request counters) lives in the client, which tells the transport what
to acknowledge; so a saved client works with a fresh transport in a fresh process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sanctorum.attestation.instance_info import EnclaveInstanceInfo
from sanctorum.common.errors import (
    KdsError,
    MailFormatError,
    MailRefusedError,
    MailTooLargeError,
    TransportError,
)
from sanctorum.common.keys import Curve25519PublicKey
from sanctorum.mail.format import DEFAULT_MAX_MAIL_SIZE


@dataclass(frozen=True)
class ReceivedMail:
    """A mail the host handed over, with the id to acknowledge it by once it is opened."""

    mail_id: int
    mail: bytes


class EnclaveTransport(Protocol):
    """What a client needs from a host.

    ``acknowledge`` is the id of the last mail the client opened: the host may drop mail up to
    it. :meth:`deliver_mail` raises :class:`MailRefusedError` when the host refused the mail
    before the enclave saw it, so the client can reuse its sequence number.
    """

    @property
    def max_mail_size(self) -> int | None:
        """The largest mail the host accepts, once known (None: no known limit)."""
        ...

    def get_attestation(self, instance: Curve25519PublicKey | None = None) -> bytes:
        """The serialized :class:`EnclaveInstanceInfo` (untrusted: the client verifies it) of
        the current instance, or of the instance with encryption key ``instance`` (one the
        host ran before, whose mail may still be queued)."""
        ...

    def deliver_mail(
        self, mail: bytes, correlation_id: str, acknowledge: int | None
    ) -> ReceivedMail | None:
        """Deliver ``mail``; returns the oldest mail waiting for ``correlation_id``, if any."""
        ...

    def poll_mail(self, correlation_id: str, acknowledge: int | None) -> ReceivedMail | None:
        """The oldest mail waiting for ``correlation_id``, or None."""
        ...


class AsyncEnclaveTransport(Protocol):
    """:class:`EnclaveTransport` for asyncio."""

    @property
    def max_mail_size(self) -> int | None: ...

    async def get_attestation(self, instance: Curve25519PublicKey | None = None) -> bytes: ...

    async def deliver_mail(
        self, mail: bytes, correlation_id: str, acknowledge: int | None
    ) -> ReceivedMail | None: ...

    async def poll_mail(
        self, correlation_id: str, acknowledge: int | None
    ) -> ReceivedMail | None: ...


class _Mailbox(Protocol):
    def next_mail(
        self, routing_hint: str | None, acknowledged: int | None = None
    ) -> tuple[int, bytes] | None: ...


class _Host(Protocol):
    @property
    def enclave_instance_info(self) -> EnclaveInstanceInfo: ...

    def instance_info_of(
        self, encryption_key: Curve25519PublicKey
    ) -> EnclaveInstanceInfo | None: ...

    @property
    def mailbox(self) -> _Mailbox | None: ...

    def deliver_mail(self, mail: bytes, routing_hint: str | None = None) -> None: ...


class InProcessTransport:
    """Talks to an ``EnclaveHost`` in the same process (tests, demos, embedded hosts).

    The host must have been started without an ``on_mail_commands`` callback, so that replies
    queue in its mailbox where this transport can pick them up. ``max_mail_size`` plays a web
    host's body limit: larger mail is refused before it reaches the enclave.
    """

    def __init__(self, host: _Host, *, max_mail_size: int = DEFAULT_MAX_MAIL_SIZE) -> None:
        self._host = host
        self._max_mail_size = max_mail_size

    @property
    def max_mail_size(self) -> int:
        return self._max_mail_size

    def _mailbox(self) -> _Mailbox:
        mailbox = self._host.mailbox
        if mailbox is None:
            raise TransportError(
                "the host sends mail commands to its own on_mail_commands callback, so replies "
                "never reach this transport: start the host without one"
            )
        return mailbox

    def get_attestation(self, instance: Curve25519PublicKey | None = None) -> bytes:
        if instance is None:
            return self._host.enclave_instance_info.serialize()
        info = self._host.instance_info_of(instance)
        if info is None:
            raise TransportError(f"the host never ran an enclave instance with key {instance}")
        return info.serialize()

    def deliver_mail(
        self, mail: bytes, correlation_id: str, acknowledge: int | None
    ) -> ReceivedMail | None:
        mailbox = self._mailbox()
        if len(mail) > self._max_mail_size:
            raise MailTooLargeError(
                f"the host refused a mail of {len(mail)} bytes: its limit is "
                f"{self._max_mail_size} bytes"
            )
        if acknowledge is not None:  # first, so it can never name mail this delivery made
            mailbox.next_mail(correlation_id, acknowledge)
        try:
            self._host.deliver_mail(mail, correlation_id)
        except (MailFormatError, KdsError) as error:
            raise MailRefusedError(f"the enclave refused the mail: {error}") from error
        return self.poll_mail(correlation_id, None)

    def poll_mail(self, correlation_id: str, acknowledge: int | None) -> ReceivedMail | None:
        found = self._mailbox().next_mail(correlation_id, acknowledge)
        return None if found is None else ReceivedMail(*found)
