"""An in-memory mailbox: the host's default place for mail the enclave posts."""

from __future__ import annotations

import itertools
import secrets
import threading
from collections import defaultdict, deque
from collections.abc import Iterable

from sanctorum.common.commands import MailCommand, PostMail

# Shared, so two mailboxes of one process never reuse an id; from a random start, so ids a
# reader saw in another process are not handed out again here.
_ids = itertools.count(secrets.randbelow(1 << 40) + 1)


class InMemoryMailbox:
    """Queues posted mail per routing hint, first in first out, each with an id. Thread-safe.

    A mail stays until its reader acknowledges it (by the id of the last mail it opened), like
    the web host's durable store, so a reader that fails to open a mail does not lose it. An
    acknowledgement is honoured only while the mail it names is still queued, so an id from
    another mailbox never drops mail its reader has not seen. Ids are unique in the process.
    Replies are lost if the process ends; the web host keeps them in a durable store instead.
    """

    def __init__(self) -> None:
        self._queues: defaultdict[str | None, deque[tuple[int, bytes]]] = defaultdict(deque)
        self._lock = threading.Lock()

    def handle(self, commands: Iterable[MailCommand]) -> None:
        """A mail-commands callback for :meth:`EnclaveHost.start`."""
        with self._lock:
            for command in commands:
                if isinstance(command, PostMail):
                    self._queues[command.routing_hint].append((next(_ids), command.mail))

    def next_mail(
        self, routing_hint: str | None, acknowledged: int | None = None
    ) -> tuple[int, bytes] | None:
        """Drop mail up to ``acknowledged``; the oldest one left for ``routing_hint``."""
        with self._lock:
            queue = self._queues.get(routing_hint)
            if not queue:
                return None
            if acknowledged is not None and any(mail_id == acknowledged for mail_id, _ in queue):
                while queue[0][0] != acknowledged:
                    queue.popleft()
                queue.popleft()
            if not queue:
                del self._queues[routing_hint]
                return None
            return queue[0]

    def pending(self, routing_hint: str | None) -> int:
        """How many mails wait for ``routing_hint`` (acknowledged ones are gone)."""
        with self._lock:
            return len(self._queues.get(routing_hint, ()))
