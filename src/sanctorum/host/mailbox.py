"""An in-memory mailbox: the host's default place for mail the enclave posts."""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Iterable

from sanctorum.common.commands import MailCommand, PostMail


class InMemoryMailbox:
    """Queues posted mail per routing hint, first in first out. Thread-safe.

    Replies are lost if the process ends; the web host keeps them in a durable store instead.
    """

    def __init__(self) -> None:
        self._queues: defaultdict[str | None, deque[bytes]] = defaultdict(deque)
        self._lock = threading.Lock()

    def handle(self, commands: Iterable[MailCommand]) -> None:
        """A mail-commands callback for :meth:`EnclaveHost.start`."""
        with self._lock:
            for command in commands:
                if isinstance(command, PostMail):
                    self._queues[command.routing_hint].append(command.mail)

    def take(self, routing_hint: str | None) -> bytes | None:
        """The oldest queued mail for ``routing_hint``, or None."""
        with self._lock:
            queue = self._queues.get(routing_hint)
            if not queue:
                return None
            mail = queue.popleft()
            if not queue:
                del self._queues[routing_hint]
            return mail

    def pending(self, routing_hint: str | None) -> int:
        """How many mails wait for ``routing_hint``."""
        with self._lock:
            return len(self._queues.get(routing_hint, ()))
