"""Sequence-number bookkeeping for Mail (sans-IO, thread-safe)."""

from __future__ import annotations

import threading
from collections.abc import Hashable

from sanctorum.common.errors import MailGapError, MailReplayError


class SequenceTracker:
    """The next sequence number expected per stream (for example a (sender, topic) pair).

    :meth:`check` raises without changing anything; :meth:`advance` records a mail as consumed.
    Use :meth:`check_and_advance` when both must happen atomically. With ``gaps_allowed``, a
    number above the expected one is accepted (only replays are refused): replies may skip the
    numbers of mail an enclave withdrew when a call failed.
    """

    def __init__(
        self, expected: dict[Hashable, int] | None = None, *, gaps_allowed: bool = False
    ) -> None:
        self._expected: dict[Hashable, int] = dict(expected or {})
        self._gaps_allowed = gaps_allowed
        self._lock = threading.Lock()

    def expected(self, stream: Hashable) -> int:
        return self._expected.get(stream, 0)

    def check(self, stream: Hashable, sequence_number: int, what: str = "mail") -> None:
        expected = self._expected.get(stream, 0)
        if sequence_number < expected:
            raise MailReplayError(
                f"{what} has sequence number {sequence_number} but {expected} was expected: "
                "it was already received (a replay, or a mail that arrived after a later one)"
            )
        if sequence_number > expected and not self._gaps_allowed:
            raise MailGapError(
                f"{what} has sequence number {sequence_number} but {expected} was expected: "
                f"{sequence_number - expected} earlier mail(s) were dropped or are being "
                "delivered out of order; deliver them first"
            )

    def advance(self, stream: Hashable, sequence_number: int) -> None:
        self._expected[stream] = sequence_number + 1

    def check_and_advance(self, stream: Hashable, sequence_number: int, what: str = "mail") -> None:
        with self._lock:
            self.check(stream, sequence_number, what)
            self.advance(stream, sequence_number)
