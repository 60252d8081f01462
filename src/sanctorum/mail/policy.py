"""Padding policies: how large a mail's body is made before encryption.

Encryption hides content, not length. Padding every mail of a conversation to a common size
stops the host from learning, say, which bid was larger from the size of the mail that carried
it. The true length travels inside the encryption.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque


class MinSizePolicy(ABC):
    """Decides the minimum size of the next body. Use the factory methods to create one."""

    @abstractmethod
    def padded_size(self, body_size: int) -> int:
        """The size to pad a body of ``body_size`` bytes to; records the size it was given."""

    @staticmethod
    def fixed(size: int) -> MinSizePolicy:
        """Pad every body to at least ``size`` bytes."""
        return _Fixed(size)

    @staticmethod
    def largest_seen() -> MinSizePolicy:
        """Pad every body to the largest body this policy has seen so far."""
        return _LargestSeen()

    @staticmethod
    def moving_average(window: int = 16) -> MinSizePolicy:
        """Pad to the average size of the last ``window`` bodies (the default policy)."""
        return _MovingAverage(window)


class _Fixed(MinSizePolicy):
    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"a fixed minimum size must be ≥ 0, not {size}")
        self._size = size

    def padded_size(self, body_size: int) -> int:
        return max(body_size, self._size)

    def __repr__(self) -> str:
        return f"MinSizePolicy.fixed({self._size})"


class _LargestSeen(MinSizePolicy):
    def __init__(self) -> None:
        self._largest = 0

    def padded_size(self, body_size: int) -> int:
        self._largest = max(self._largest, body_size)
        return self._largest

    def __repr__(self) -> str:
        return "MinSizePolicy.largest_seen()"


class _MovingAverage(MinSizePolicy):
    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"a moving-average window must be ≥ 1, not {window}")
        self._sizes: deque[int] = deque(maxlen=window)
        self._total = 0
        self._window = window

    def padded_size(self, body_size: int) -> int:
        if len(self._sizes) == self._window:
            self._total -= self._sizes[0]
        self._sizes.append(body_size)
        self._total += body_size
        return max(body_size, -(-self._total // len(self._sizes)))

    def __repr__(self) -> str:
        return f"MinSizePolicy.moving_average({self._window})"
