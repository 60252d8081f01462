"""The runtime's sealed state: what one commit records, encoded canonically (sans-IO).

The runtime seals it with the signer-policy key of the security versions it runs at
(``sanctorum.enclave.sealing``) and hands it to the host to store::

    version u8 | commit id (16) | parts u8 (bit 0: persistent map, bit 1: filesystem)
    | persistent map state (u32 length)                         if bit 0
    | filesystem key (32) | sectors u32 | generation u64 | root (32)   if bit 1
"""

from __future__ import annotations

from dataclasses import dataclass

from sanctorum.common.codec import Reader, Writer
from sanctorum.common.errors import SealedStateError
from sanctorum.enclave.filesystem import FileSystemRecord
from sanctorum.mail.private_header import COMMIT_ID_SIZE

_VERSION = 1
_MAP, _FILESYSTEM = 1, 2
_KEY_SIZE = _ROOT_SIZE = 32
_MAX_MAP_STATE = 1 << 31


@dataclass(frozen=True)
class RuntimeState:
    """One commit: its id, the persistent map and the persistent filesystem's record."""

    commit_id: bytes
    map_state: bytes | None = None
    filesystem: FileSystemRecord | None = None


def encode_state(state: RuntimeState) -> bytes:
    parts = (_MAP if state.map_state is not None else 0) | (
        _FILESYSTEM if state.filesystem is not None else 0
    )
    writer = Writer().u8(_VERSION).raw(state.commit_id).u8(parts)
    if state.map_state is not None:
        writer.bytes32(state.map_state)
    if state.filesystem is not None:
        record = state.filesystem
        writer.raw(record.key).u32(record.sectors).u64(record.generation).raw(record.root)
    return writer.getvalue()


def decode_state(data: bytes) -> RuntimeState:
    """The state :func:`encode_state` wrote; :class:`SealedStateError` if it is malformed."""
    reader = Reader(data, error=SealedStateError, what="the sealed state")
    if reader.u8("version") != _VERSION:
        raise reader.fail(f"unsupported version (expected {_VERSION})")
    commit_id = reader.raw(COMMIT_ID_SIZE, "commit id")
    parts = reader.u8("parts")
    if parts & ~(_MAP | _FILESYSTEM):
        raise reader.fail(f"unknown parts {parts:#x}")
    map_state = reader.bytes32("persistent map", _MAX_MAP_STATE) if parts & _MAP else None
    filesystem = None
    if parts & _FILESYSTEM:
        filesystem = FileSystemRecord(
            key=reader.raw(_KEY_SIZE, "filesystem key"),
            sectors=reader.u32("filesystem sectors"),
            generation=reader.u64("filesystem generation"),
            root=reader.raw(_ROOT_SIZE, "filesystem root"),
        )
    reader.expect_end()
    return RuntimeState(commit_id, map_state, filesystem)
