"""The runtime's sealed state: what one commit records, encoded canonically (sans-IO).

The runtime seals it with the signer-policy key of the security versions it runs at
(``sanctorum.enclave.sealing``) and hands it to the host to store::

    version u8 | commit number u64 | commit id (16)
    | parts u8 (bit 0: persistent map, bit 1: filesystem)
    | persistent map state (u32 length)                         if bit 0
    | key count u8 | filesystem keys (32 each) | sectors u32 | generation u64
      | root (32)                                                 if bit 1
    | padding (u32 length, zeros)

The padding takes the whole to the size class mail bodies use (``MinSizePolicy.default()``), so
the size of the blob the host stores shows the state's class, not the exact length of the
values and answers a call wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

from sanctorum.common.codec import Reader, Writer
from sanctorum.common.errors import SealedStateError
from sanctorum.enclave.filesystem import FileSystemRecord
from sanctorum.mail.policy import MinSizePolicy
from sanctorum.mail.private_header import COMMIT_ID_SIZE

_VERSION = 1
_MAP, _FILESYSTEM = 1, 2
_KEY_SIZE = _ROOT_SIZE = 32
_MAX_MAP_STATE = 1 << 31
_FIXED_SIZE = 1 + 8 + COMMIT_ID_SIZE + 1 + 4  # version, number, id, parts, padding length
_RECORD_SIZE = 1 + 4 + 8 + _ROOT_SIZE  # and the keys
_SIZE_CLASSES = MinSizePolicy.default()  # stateless: the class depends on the length only


@dataclass(frozen=True)
class RuntimeState:
    """One commit: its number and id, the persistent map and the persistent filesystem's
    record."""

    commit_number: int
    commit_id: bytes
    map_state: bytes | None = None
    filesystem: FileSystemRecord | None = None


def encode_state(state: RuntimeState) -> bytes:
    parts = (_MAP if state.map_state is not None else 0) | (
        _FILESYSTEM if state.filesystem is not None else 0
    )
    writer = Writer().u8(_VERSION).u64(state.commit_number).raw(state.commit_id).u8(parts)
    if state.map_state is not None:
        writer.bytes32(state.map_state)
    if state.filesystem is not None:
        record = state.filesystem
        writer.u8(len(record.keys))
        for key in record.keys:
            writer.raw(key)
        writer.u32(record.sectors).u64(record.generation).raw(record.root)
    unpadded = (
        _FIXED_SIZE
        + (0 if state.map_state is None else 4 + len(state.map_state))
        + (0 if state.filesystem is None else _RECORD_SIZE + _KEY_SIZE * len(state.filesystem.keys))
    )
    padding = _SIZE_CLASSES.padded_size(unpadded) - unpadded
    return writer.u32(padding).raw(bytes(padding)).getvalue()


def decode_state(data: bytes) -> RuntimeState:
    """The state :func:`encode_state` wrote; :class:`SealedStateError` if it is malformed."""
    reader = Reader(data, error=SealedStateError, what="the sealed state")
    if reader.u8("version") != _VERSION:
        raise reader.fail(f"unsupported version (expected {_VERSION})")
    commit_number = reader.u64("commit number")
    commit_id = reader.raw(COMMIT_ID_SIZE, "commit id")
    parts = reader.u8("parts")
    if parts & ~(_MAP | _FILESYSTEM):
        raise reader.fail(f"unknown parts {parts:#x}")
    map_state = reader.bytes32("persistent map", _MAX_MAP_STATE) if parts & _MAP else None
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
    return RuntimeState(commit_number, commit_id, map_state, filesystem)
