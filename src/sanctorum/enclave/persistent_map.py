"""The persistent map: a transactional ``MutableMapping[str, bytes]`` sealed after each call.

Changes made during one call are staged; when the call returns they are committed as one
sealed blob (with the rollback-detection table, see docs/persistence.md); if it raises they are
dropped. The committed state is serialised canonically::

    version u8 | commit id (16) | entry count u32 | (key u16-len UTF-8, value u32-len)*
    | client count u32 | (client key 32, last commit told 16)*
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, MutableMapping

from sanctorum.common.codec import Reader
from sanctorum.common.errors import PersistentMapFullError, SealedStateError

COMMIT_ID_SIZE = 16
_VERSION = 1
_DELETED = object()
_ENTRY_OVERHEAD = 6  # the two length prefixes
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def entry_size(key: str, value: bytes) -> int:
    """What one entry counts against the maximum size."""
    return _ENTRY_OVERHEAD + len(key.encode("utf-8")) + len(value)


class PersistentMap(MutableMapping[str, bytes]):
    """Reads see the call's own changes; nothing is kept unless the call commits."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._committed: dict[str, bytes] = {}
        self._committed_size = 0
        self._staged: dict[str, object] = {}

    # -- the mapping -------------------------------------------------------------------------

    def __getitem__(self, key: str) -> bytes:
        staged = self._staged.get(key)
        if staged is _DELETED:
            raise KeyError(key)
        if staged is not None:
            assert isinstance(staged, bytes)
            return staged
        return self._committed[key]

    def __setitem__(self, key: str, value: bytes) -> None:
        if not isinstance(key, str):
            raise TypeError(f"persistent map keys are str, not {type(key).__name__}")
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"persistent map values are bytes, not {type(value).__name__}")
        if len(key.encode("utf-8")) > 0xFFFF:
            raise ValueError("a persistent map key is at most 65535 UTF-8 bytes")
        self._staged[key] = bytes(value)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._staged[key] = _DELETED

    def __contains__(self, key: object) -> bool:
        staged = self._staged.get(key) if isinstance(key, str) else None
        if staged is not None:
            return staged is not _DELETED
        return key in self._committed

    def __iter__(self) -> Iterator[str]:
        for key in self._committed:
            if self._staged.get(key) is not _DELETED:
                yield key
        for key, value in self._staged.items():
            if value is not _DELETED and key not in self._committed:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # -- transactions ------------------------------------------------------------------------

    @property
    def changed(self) -> bool:
        return bool(self._staged)

    def discard(self) -> None:
        """Drop the call's changes."""
        self._staged.clear()

    def staged_size(self) -> int:
        """The size the map would have if the call's changes were committed."""
        size = self._committed_size
        for key, value in self._staged.items():
            old = self._committed.get(key)
            if old is not None:
                size -= entry_size(key, old)
            if value is not _DELETED:
                assert isinstance(value, bytes)
                size += entry_size(key, value)
        return size

    def apply(self) -> None:
        """Make the call's changes permanent in memory (the caller seals the result)."""
        size = self.staged_size()
        if size > self.max_size:
            self._staged.clear()
            raise PersistentMapFullError(
                f"the persistent map would grow to {size} bytes, over its maximum of "
                f"{self.max_size}; none of this call's changes were kept (raise "
                "max_persistent_map_size or store less)"
            )
        for key, value in self._staged.items():
            if value is _DELETED:
                del self._committed[key]
            else:
                assert isinstance(value, bytes)
                self._committed[key] = value
        self._committed_size = size
        self._staged.clear()

    # -- serialisation -----------------------------------------------------------------------

    def serialize(self, commit_id: bytes, last_told: dict[bytes, bytes]) -> bytes:
        parts = [bytes([_VERSION]), commit_id, _U32.pack(len(self._committed))]
        for key, value in self._committed.items():
            encoded = key.encode("utf-8")
            parts += (_U16.pack(len(encoded)), encoded, _U32.pack(len(value)), value)
        parts.append(_U32.pack(len(last_told)))
        for client, commit in last_told.items():
            parts += (client, commit)
        return b"".join(parts)

    def load(self, data: bytes) -> dict[bytes, bytes]:
        """Replace the committed state with ``data``; returns the last-told table."""
        reader = Reader(data, error=SealedStateError, what="persistent map state")
        if reader.u8("version") != _VERSION:
            raise reader.fail("unsupported version")
        reader.raw(COMMIT_ID_SIZE, "commit id")
        entries: dict[str, bytes] = {}
        size = 0
        for _ in range(reader.u32("entry count")):
            key = reader.text16("key")
            value = reader.bytes32("value", len(data))
            entries[key] = value
            size += entry_size(key, value)
        last_told = {}
        for _ in range(reader.u32("client count")):
            client = reader.raw(32, "client key")
            last_told[client] = reader.raw(COMMIT_ID_SIZE, "commit id")
        reader.expect_end()
        self._committed, self._committed_size = entries, size
        self._staged.clear()
        return last_told
