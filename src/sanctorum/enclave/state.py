"""The runtime's sealed state: what commits record, encoded canonically (sans-IO).

The host keeps a **snapshot** (the whole state at one commit) and the **journal records** of
the commits after it, each record holding only what its commit changed. The runtime seals each
with the signer-policy key of the security versions it runs at (``sanctorum.enclave.sealing``)::

    snapshot:        1 u8 | commit number u64 | commit id (16)
                     | parts u8 (bit 0: persistent map, bit 1: filesystem)
                     | persistent map state (u32 length)                    if bit 0
                     | filesystem record                                    if bit 1
                     | padding (u32 length, zeros)

    journal record:  2 u8 | commit number u64 | commit id (16) | previous commit id (16)
                     | parts u8 (bit 0: map changes, bit 1: filesystem)
                     | persistent map changes (u32 length)                  if bit 0
                     | filesystem record                                    if bit 1
                     | padding (u32 length, zeros)

    filesystem record: key count u8 | keys (32 each) | sectors u32 | generation u64 | root (32)

A record names the commit it follows by that commit's (random, secret) id, so a journal the host
hands back with a record dropped, reordered, replayed or taken from another chain does not
chain (:func:`replay_journal`). The padding takes each to the size classes mail bodies use
(``MinSizePolicy.default()``), so the size of a blob shows its class, not the exact length of
the values and answers a call wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

from sanctorum.common.codec import Reader, Writer
from sanctorum.common.errors import SealedStateError, SealedStateJournalError
from sanctorum.enclave.filesystem import FileSystemRecord
from sanctorum.mail.policy import MinSizePolicy
from sanctorum.mail.private_header import COMMIT_ID_SIZE

_SNAPSHOT, _RECORD = 1, 2
_MAP, _FILESYSTEM = 1, 2
_KEY_SIZE = _ROOT_SIZE = 32
_MAX_MAP_STATE = 1 << 31
_FIXED_SIZE = 1 + 8 + COMMIT_ID_SIZE + 1 + 4  # kind, number, id, parts, padding length
_RECORD_FIXED_SIZE = _FIXED_SIZE + COMMIT_ID_SIZE  # and the previous commit's id
_FILESYSTEM_SIZE = 1 + 4 + 8 + _ROOT_SIZE  # and the keys
_SIZE_CLASSES = MinSizePolicy.default()  # stateless: the class depends on the length only


@dataclass(frozen=True)
class RuntimeState:
    """A snapshot: one commit's number and id, the whole persistent map and the persistent
    filesystem's record."""

    commit_number: int
    commit_id: bytes
    map_state: bytes | None = None
    filesystem: FileSystemRecord | None = None


@dataclass(frozen=True)
class JournalRecord:
    """One commit after a snapshot: what it changed in the persistent map (encoded by
    :meth:`PersistentMap.encode_changes`) and the filesystem's record as it left it."""

    commit_number: int
    commit_id: bytes
    previous_commit_id: bytes
    map_changes: bytes | None = None
    filesystem: FileSystemRecord | None = None


def encode_state(state: RuntimeState | JournalRecord) -> bytes:
    """The plaintext of a snapshot or a journal record, padded to its size class."""
    map_part = state.map_state if isinstance(state, RuntimeState) else state.map_changes
    parts = (_MAP if map_part is not None else 0) | (
        _FILESYSTEM if state.filesystem is not None else 0
    )
    writer = Writer()
    if isinstance(state, RuntimeState):
        writer.u8(_SNAPSHOT).u64(state.commit_number).raw(state.commit_id)
        unpadded = _FIXED_SIZE
    else:
        writer.u8(_RECORD).u64(state.commit_number).raw(state.commit_id)
        writer.raw(state.previous_commit_id)
        unpadded = _RECORD_FIXED_SIZE
    writer.u8(parts)
    if map_part is not None:
        writer.bytes32(map_part)
        unpadded += 4 + len(map_part)
    if state.filesystem is not None:
        record = state.filesystem
        writer.u8(len(record.keys))
        for key in record.keys:
            writer.raw(key)
        writer.u32(record.sectors).u64(record.generation).raw(record.root)
        unpadded += _FILESYSTEM_SIZE + _KEY_SIZE * len(record.keys)
    padding = _SIZE_CLASSES.padded_size(unpadded) - unpadded
    return writer.u32(padding).raw(bytes(padding)).getvalue()


def decode_state(data: bytes) -> RuntimeState | JournalRecord:
    """The snapshot or record :func:`encode_state` wrote; :class:`SealedStateError` if it is
    malformed."""
    reader = Reader(data, error=SealedStateError, what="the sealed state")
    kind = reader.u8("kind")
    if kind not in (_SNAPSHOT, _RECORD):
        raise reader.fail(f"unknown kind {kind} (expected {_SNAPSHOT} or {_RECORD})")
    commit_number = reader.u64("commit number")
    commit_id = reader.raw(COMMIT_ID_SIZE, "commit id")
    previous = reader.raw(COMMIT_ID_SIZE, "previous commit id") if kind == _RECORD else b""
    parts = reader.u8("parts")
    if parts & ~(_MAP | _FILESYSTEM):
        raise reader.fail(f"unknown parts {parts:#x}")
    map_part = reader.bytes32("persistent map", _MAX_MAP_STATE) if parts & _MAP else None
    filesystem = None
    if parts & _FILESYSTEM:
        count = reader.u8("filesystem key count")
        if not count:
            raise reader.fail("a filesystem has at least one key")
        filesystem = FileSystemRecord(
            keys=tuple(reader.raw(_KEY_SIZE, "filesystem key") for _ in range(count)),
            sectors=reader.u32("filesystem sectors"),
            generation=reader.u64("filesystem generation"),
            root=reader.raw(_ROOT_SIZE, "filesystem root"),
        )
    padding = reader.u32("padding length")
    if reader.raw(padding, "padding").count(0) != padding:
        raise reader.fail("the padding is not zeros")
    reader.expect_end()
    if kind == _SNAPSHOT:
        return RuntimeState(commit_number, commit_id, map_part, filesystem)
    return JournalRecord(commit_number, commit_id, previous, map_part, filesystem)


def check_follows(record: RuntimeState | JournalRecord, number: int, commit_id: bytes) -> None:
    """That ``record`` is the journal record of the commit right after commit ``number`` (id
    ``commit_id``); :class:`SealedStateJournalError` if the host dropped, reordered, replayed or
    mixed in records."""
    if isinstance(record, RuntimeState):
        raise SealedStateJournalError(
            f"the sealed state holds a second snapshot (commit {record.commit_number}) after "
            f"commit {number}: pass the latest snapshot first and then only the journal records "
            "stored after it, in the order they were stored"
        )
    if record.commit_number != number + 1 or record.previous_commit_id != commit_id:
        why = (
            "does not follow it: a record between them is missing, or the records are out of order"
            if record.commit_number > number + 1
            else "was already applied: a record is repeated or out of order"
            if record.commit_number <= number
            else "follows another commit of that number: the records come from two chains"
        )
        raise SealedStateJournalError(
            f"journal record {record.commit_number} of the sealed state comes after commit "
            f"{number} but {why}. The journal was altered, or a record was not stored; the "
            "enclave refuses to start rather than lose or mix up commits (pass the snapshot and "
            "every record stored after it, in the order they were stored)"
        )
