"""The persistent map: a transactional ``MutableMapping[str, bytes]`` sealed after each call.

Changes are staged in one layer per call: a call nested in a host callback opens a layer of its
own, which joins the enclosing call's layer when it returns and is dropped if it raises, at
every depth. When the outermost call returns, the layers are committed as one sealed blob; if it
raises, its layer is dropped.

Beside the application's entries the map keeps the runtime's own records (rollback detection,
the last request applied per client and topic), staged and committed with them and counted
against the same maximum size. The committed state is serialised canonically for snapshots,
and each commit's changes for journal records (the runtime seals both with the rest of its
state: ``sanctorum.enclave.state``)::

    state:    version u8
              | entry count u32 | (key u16-len UTF-8, value u32-len)*      application entries
              | record count u32 | (key u16-len, value u32-len)*           runtime records

    changes:  version u8
              | entry count u32 | (key u16-len UTF-8, value u32-len or 0xFFFFFFFF: deleted)*
              | record count u32 | (key u16-len, value u32-len)*
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, MutableMapping
from typing import Generic, TypeVar

from sanctorum.common.codec import Reader
from sanctorum.common.errors import (
    EnclaveStateError,
    PersistentMapFullError,
    SealedStateError,
)

_VERSION = 3
_DELETED = object()
_ENTRY_OVERHEAD = 6  # the two length prefixes
_DELETED_LENGTH = 0xFFFFFFFF  # in a change, instead of a value's length
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_K = TypeVar("_K", str, bytes)


def entry_size(key: str | bytes, value: bytes) -> int:
    """What one entry counts against the maximum size."""
    encoded = key.encode("utf-8") if isinstance(key, str) else key
    return _ENTRY_OVERHEAD + len(encoded) + len(value)


class _Table(Generic[_K]):
    """Committed entries plus a stack of staged layers (the innermost last)."""

    def __init__(self) -> None:
        self.committed: dict[_K, bytes] = {}
        self.size = 0
        self.layers: list[dict[_K, object]] = []

    def get(self, key: _K) -> bytes | None:
        for layer in reversed(self.layers):
            staged = layer.get(key)
            if staged is not None:
                return None if staged is _DELETED else staged  # type: ignore[return-value]
        return self.committed.get(key)

    def stage(self, key: _K, value: object) -> None:
        if not self.layers:
            raise EnclaveStateError(
                "the persistent map can only change while the enclave handles a call or mail"
            )
        self.layers[-1][key] = value

    def flattened(self) -> dict[_K, object]:
        if len(self.layers) == 1:
            return self.layers[0]
        merged: dict[_K, object] = {}
        for layer in self.layers:
            merged.update(layer)
        return merged

    def staged_size(self) -> int:
        size = self.size
        for key, value in self.flattened().items():
            old = self.committed.get(key)
            if old is not None:
                size -= entry_size(key, old)
            if value is not _DELETED:
                assert isinstance(value, bytes)
                size += entry_size(key, value)
        return size

    def merge_from(self, depth: int) -> None:
        layers = self.layers
        if len(layers) > depth >= 1:
            for layer in layers[depth:]:
                layers[depth - 1].update(layer)
            del layers[depth:]

    def apply(self, size: int) -> None:
        for key, value in self.flattened().items():
            if value is _DELETED:
                self.committed.pop(key, None)
            else:
                assert isinstance(value, bytes)
                self.committed[key] = value
        self.size = size
        self.layers.clear()

    def encode_changes(self, parts: list[bytes]) -> None:
        staged = self.flattened() if self.layers else {}
        parts.append(_U32.pack(len(staged)))
        for key, value in staged.items():
            encoded = key.encode("utf-8") if isinstance(key, str) else key
            if value is _DELETED:
                parts += (_U16.pack(len(encoded)), encoded, _U32.pack(_DELETED_LENGTH))
            else:
                assert isinstance(value, bytes)
                parts += (_U16.pack(len(encoded)), encoded, _U32.pack(len(value)), value)

    def replay(self, changes: dict[_K, bytes | None]) -> None:
        committed = self.committed
        for key, value in changes.items():
            old = committed.pop(key, None)
            if old is not None:
                self.size -= entry_size(key, old)
            if value is not None:
                committed[key] = value
                self.size += entry_size(key, value)

    def iterate(self) -> Iterator[_K]:
        staged = self.flattened() if self.layers else {}
        for key in self.committed:
            if staged.get(key) is not _DELETED:
                yield key
        for key, value in staged.items():
            if value is not _DELETED and key not in self.committed:
                yield key


class PersistentMap(MutableMapping[str, bytes]):
    """Reads see the call's own changes; nothing is kept unless the outermost call commits."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._entries: _Table[str] = _Table()
        self._records: _Table[bytes] = _Table()

    # -- the mapping -------------------------------------------------------------------------

    def __getitem__(self, key: str) -> bytes:
        value = self._entries.get(key) if isinstance(key, str) else None
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: bytes) -> None:
        if not isinstance(key, str):
            raise TypeError(f"persistent map keys are str, not {type(key).__name__}")
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"persistent map values are bytes, not {type(value).__name__}")
        if len(key.encode("utf-8")) > 0xFFFF:
            raise ValueError("a persistent map key is at most 65535 UTF-8 bytes")
        self._entries.stage(key, bytes(value))

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._entries.stage(key, _DELETED)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._entries.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        return self._entries.iterate()

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # -- the runtime's records ---------------------------------------------------------------

    def record(self, key: bytes) -> bytes | None:
        return self._records.get(key)

    def committed_record(self, key: bytes) -> bytes | None:
        """A record as the last commit left it, whatever the current call staged."""
        return self._records.committed.get(key)

    def set_record(self, key: bytes, value: bytes) -> None:
        self._records.stage(key, value)

    # -- transactions ------------------------------------------------------------------------

    def begin(self) -> int:
        """Open a layer for a call; returns its depth, for :meth:`end` and :meth:`abort`."""
        self._entries.layers.append({})
        self._records.layers.append({})
        return len(self._entries.layers) - 1

    def end(self, depth: int) -> None:
        """A nested call returned: its layer joins the enclosing one."""
        self._entries.merge_from(depth)
        self._records.merge_from(depth)

    def abort(self, depth: int) -> None:
        """A call raised: drop its layer and any it still holds open."""
        del self._entries.layers[depth:]
        del self._records.layers[depth:]

    @property
    def changed(self) -> bool:
        return any(self._entries.layers) or any(self._records.layers)

    def staged_size(self) -> int:
        """The size the map would have if the staged changes were committed."""
        return self._entries.staged_size() + self._records.staged_size()

    def check_size(self) -> tuple[int, int]:
        """The staged sizes of entries and records; :class:`PersistentMapFullError` (and
        every staged change dropped) if they would take the map over its maximum."""
        entries, records = self._entries.staged_size(), self._records.staged_size()
        if entries + records > self.max_size:
            self.abort(0)
            raise PersistentMapFullError(
                f"the persistent map would grow to {entries + records} bytes ({records} of them "
                f"the runtime's per-client records), over its maximum of {self.max_size}; none "
                "of this call's changes were kept (raise max_persistent_map_size or store less)"
            )
        return entries, records

    def apply(self) -> bytes:
        """Make every staged change permanent in memory; returns the changes, encoded for a
        journal record (the caller seals them, or a snapshot of :meth:`serialize`)."""
        entries, records = self.check_size()
        parts = [bytes([_VERSION])]
        self._entries.encode_changes(parts)
        self._records.encode_changes(parts)
        self._entries.apply(entries)
        self._records.apply(records)
        return b"".join(parts)

    # -- serialisation -----------------------------------------------------------------------

    def serialize(self) -> bytes:
        parts = [bytes([_VERSION])]
        for table in (self._entries, self._records):
            parts.append(_U32.pack(len(table.committed)))
            for key, value in table.committed.items():
                encoded = key.encode("utf-8") if isinstance(key, str) else key
                parts += (_U16.pack(len(encoded)), encoded, _U32.pack(len(value)), value)
        return b"".join(parts)

    def load(self, data: bytes) -> None:
        """Replace the committed state with ``data``."""
        reader = Reader(data, error=SealedStateError, what="persistent map state")
        if reader.u8("version") != _VERSION:
            raise reader.fail("unsupported version")
        entries = _read_table(reader, "entry", lambda: reader.text16("key"), len(data))
        records = _read_table(reader, "record", lambda: reader.bytes16("record key"), len(data))
        reader.expect_end()
        for table, committed in ((self._entries, entries), (self._records, records)):
            table.committed = committed
            table.size = sum(entry_size(key, value) for key, value in committed.items())
        self.abort(0)

    def replay(self, data: bytes) -> None:
        """Apply one journal record's changes (:meth:`apply`'s result) to the committed
        state."""
        reader = Reader(data, error=SealedStateError, what="persistent map changes")
        if reader.u8("version") != _VERSION:
            raise reader.fail("unsupported version")
        entries = _read_changes(reader, "entry", lambda: reader.text16("key"), len(data))
        records = _read_changes(reader, "record", lambda: reader.bytes16("record key"), len(data))
        reader.expect_end()
        self._entries.replay(entries)
        self._records.replay(records)


def _read_table(
    reader: Reader, what: str, read_key: Callable[[], _K], limit: int
) -> dict[_K, bytes]:
    table: dict[_K, bytes] = {}
    for _ in range(reader.u32(f"{what} count")):
        key = read_key()
        table[key] = reader.bytes32(f"{what} value", limit)
    return table


def _read_changes(
    reader: Reader, what: str, read_key: Callable[[], _K], limit: int
) -> dict[_K, bytes | None]:
    changes: dict[_K, bytes | None] = {}
    for _ in range(reader.u32(f"{what} change count")):
        key = read_key()
        size = reader.u32(f"{what} value length")
        if size == _DELETED_LENGTH:
            changes[key] = None
        elif size > limit:
            raise reader.fail(f"{what} value is {size} bytes, more than the {limit} there are")
        else:
            changes[key] = reader.raw(size, f"{what} value")
    return changes
