"""Client transports: how an EnclaveClient reaches the host of its enclave."""

from __future__ import annotations

from typing import Protocol

from sanctorum.attestation.instance_info import EnclaveInstanceInfo
from sanctorum.common.errors import TransportError


class EnclaveTransport(Protocol):
    """The three things a client needs from a host."""

    def get_attestation(self) -> bytes:
        """The serialized :class:`EnclaveInstanceInfo` (untrusted: the client verifies it)."""
        ...

    def deliver_mail(self, mail: bytes, correlation_id: str) -> bytes | None:
        """Deliver ``mail``; returns the first reply for ``correlation_id``, if any."""
        ...

    def poll_mail(self, correlation_id: str) -> bytes | None:
        """The next queued reply for ``correlation_id``, or None."""
        ...


class AsyncEnclaveTransport(Protocol):
    """:class:`EnclaveTransport` for asyncio."""

    async def get_attestation(self) -> bytes: ...

    async def deliver_mail(self, mail: bytes, correlation_id: str) -> bytes | None: ...

    async def poll_mail(self, correlation_id: str) -> bytes | None: ...


class _Mailbox(Protocol):
    def take(self, routing_hint: str | None) -> bytes | None: ...


class _Host(Protocol):
    @property
    def enclave_instance_info(self) -> EnclaveInstanceInfo: ...

    @property
    def mailbox(self) -> _Mailbox | None: ...

    def deliver_mail(self, mail: bytes, routing_hint: str | None = None) -> None: ...


class InProcessTransport:
    """Talks to an ``EnclaveHost`` in the same process (tests, demos, embedded hosts).

    The host must have been started without an ``on_mail_commands`` callback, so that replies
    queue in its mailbox where this transport can pick them up.
    """

    def __init__(self, host: _Host) -> None:
        self._host = host

    def _mailbox(self) -> _Mailbox:
        mailbox = self._host.mailbox
        if mailbox is None:
            raise TransportError(
                "the host sends mail commands to its own on_mail_commands callback, so replies "
                "never reach this transport: start the host without one"
            )
        return mailbox

    def get_attestation(self) -> bytes:
        return self._host.enclave_instance_info.serialize()

    def deliver_mail(self, mail: bytes, correlation_id: str) -> bytes | None:
        mailbox = self._mailbox()
        self._host.deliver_mail(mail, correlation_id)
        return mailbox.take(correlation_id)

    def poll_mail(self, correlation_id: str) -> bytes | None:
        return self._mailbox().take(correlation_id)
