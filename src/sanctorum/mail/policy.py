"""Padding policies: how large a mail's body is made before encryption.

Encryption hides content, not length. Padding stops the host from learning, say, which bid was
larger from the size of the mail that carried it. The true length travels inside the encryption.

The default, :meth:`MinSizePolicy.buckets`, pads every body to a size class that depends on
its own length only: all bodies up to 1 KiB look alike, and a larger one shows only its class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque

DEFAULT_FLOOR = 1 << 10
"""Bodies up to this size all pad to it under the default policy."""
DEFAULT_DOUBLING_UP_TO = 64 << 10
"""Up to this size the default policy's classes are powers of two; above it, Padmé's.

Doubling is cheap up to here, where X25519 costs more than the bytes; above it the cost of
sealing and opening grows with the bytes, so a doubling would cost up to twice as much
(bench/mail_bench.py)."""


class MinSizePolicy(ABC):
    """Decides the minimum size of the next body. Use the factory methods to create one."""

    @abstractmethod
    def padded_size(self, body_size: int) -> int:
        """The size to pad a body of ``body_size`` bytes to; records the size it was given."""

    @staticmethod
    def default() -> MinSizePolicy:
        """What ``EnclaveClient`` and an enclave's post offices pad with unless told otherwise:
        :meth:`buckets` with its defaults."""
        return _Buckets(DEFAULT_FLOOR, DEFAULT_DOUBLING_UP_TO)

    @staticmethod
    def buckets(
        floor: int = DEFAULT_FLOOR, doubling_up_to: int = DEFAULT_DOUBLING_UP_TO
    ) -> MinSizePolicy:
        """Pad every body to a size class that depends only on its own length (the default).

        Bodies of up to ``floor`` bytes pad to ``floor``. Above it a body pads to the next
        power of two, up to ``doubling_up_to`` (a power of two), and above that to the next
        size :func:`padme` gives (at most 1/32 more above 64 KiB). With the defaults the host
        cannot tell apart bodies of 0 to 1,024 bytes, sees 6 classes from there to 64 KiB and
        32 per doubling above. ``doubling_up_to=1`` gives Padmé alone above the floor; a
        larger one gives powers of two further up.
        """
        return _Buckets(floor, doubling_up_to)

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
        """Pad to the average size of the last ``window`` bodies, this one included.

        Conclave's default, no longer Sanctorum's: the first mail, and every mail larger than
        the average, goes out at its exact length, and the padded size of a smaller one still
        grows with its length.
        """
        return _MovingAverage(window)


def padme(size: int) -> int:
    """``size`` rounded up to the next Padmé size (Nikitin et al., "Reducing metadata leakage
    from encrypted files and communication with PURBs", PETS 2019).

    With ``E = floor(log2(size))``, the low ``E - floor(log2(E)) - 1`` bits are rounded up to
    zero: the result shows O(log log size) bits of the size and is at most 12% larger.
    """
    if size < 2:
        return size
    exponent = size.bit_length() - 1
    mask = (1 << (exponent - exponent.bit_length())) - 1
    return (size + mask) & ~mask


class _Buckets(MinSizePolicy):
    def __init__(self, floor: int, doubling_up_to: int) -> None:
        if floor < 0:
            raise ValueError(f"a bucket floor must be ≥ 0, not {floor}")
        if doubling_up_to < 1 or doubling_up_to & (doubling_up_to - 1):
            raise ValueError(f"doubling_up_to must be a power of two, not {doubling_up_to}")
        self._floor = floor
        self._doubling_up_to = doubling_up_to

    def padded_size(self, body_size: int) -> int:
        # Stateless on purpose: a class that depended on earlier mail would let the host
        # compare mails of a conversation with each other.
        if body_size <= self._floor:
            return self._floor
        if body_size <= self._doubling_up_to:
            return 1 << (body_size - 1).bit_length()
        return padme(body_size)

    def __repr__(self) -> str:
        return f"MinSizePolicy.buckets({self._floor}, {self._doubling_up_to})"


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
