"""The SHA-256 hash type used for code hashes, signer hashes and key fingerprints."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sanctorum.common.errors import InvalidKeyError

_SIZE = 32


@dataclass(frozen=True, slots=True)
class SHA256Hash:
    """A 32-byte SHA-256 digest, formatted as upper-case hex as in enclave constraints."""

    digest: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.digest, bytes) or len(self.digest) != _SIZE:
            raise InvalidKeyError(f"a SHA-256 hash is {_SIZE} bytes, not {len(self.digest)}")

    @classmethod
    def of(cls, data: bytes) -> SHA256Hash:
        """Hash ``data``."""
        return cls(hashlib.sha256(data).digest())

    @classmethod
    def parse(cls, text: str) -> SHA256Hash:
        """Parse 64 hex digits (either case)."""
        cleaned = text.strip()
        if len(cleaned) != 2 * _SIZE:
            raise InvalidKeyError(
                f"a SHA-256 hash is {2 * _SIZE} hex digits, got {len(cleaned)}: {text[:80]!r}"
            )
        try:
            return cls(bytes.fromhex(cleaned))
        except ValueError:
            raise InvalidKeyError(f"not a hex SHA-256 hash: {text[:80]!r}") from None

    def __bytes__(self) -> bytes:
        return self.digest

    def __str__(self) -> str:
        return self.digest.hex().upper()

    def __repr__(self) -> str:
        return f"SHA256Hash({self})"


ZERO_HASH = SHA256Hash(bytes(_SIZE))
