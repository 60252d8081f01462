"""The framed protocol between a host and an enclave in another process (sans-IO).

Every frame is ``u32 length`` followed by that many bytes: ``u8 version``, ``u8 type``,
``u64 call id``, ``u64 parent call id``, payload. The call id ties a request to its answer and
to the host callbacks it makes; the parent id marks a call the host makes from inside one of
those callbacks, so the enclave runs it on the thread that is waiting (re-entry).

:class:`FrameDecoder` turns bytes into :class:`Frame` objects and :class:`BadFrame` events; it
never raises on bad input and recovers after an oversized frame by skipping it, so one bad frame
costs one error reply, not the connection. Payload helpers encode the values each frame carries.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sanctorum.common.codec import Reader, Writer
from sanctorum.common.commands import MailCommand, PostMail, StoreSealedState
from sanctorum.common.errors import (
    BundleError,
    DependencyMismatchError,
    EnclaveCallError,
    EnclaveCrashedError,
    EnclaveLoadError,
    EnclaveStateError,
    FileSystemRollbackError,
    FrameError,
    InvalidEnclaveError,
    KdsError,
    KdsKeyRequiredError,
    MailDecryptionError,
    MailFormatError,
    MailGapError,
    MailReplayError,
    MailSenderError,
    NewerSealedStateError,
    PersistentMapFullError,
    SanctorumError,
    SealedStateError,
    SealedStateJournalError,
)

VERSION = 1
_HEADER = struct.Struct(">IBBQQ")
_LENGTH = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEADER_BODY = _HEADER.size - _LENGTH.size
MAX_DATA_SIZE = 128 << 20
# The largest frame, LOAD, carries the bundle and the sealed state: a snapshot and the journal
# records after it, which the enclave keeps to at most two such sizes.
DEFAULT_MAX_FRAME_SIZE = 3 * MAX_DATA_SIZE + (1 << 20)


class FrameType(enum.IntEnum):
    LOAD = 1
    """host → enclave: mode and bundle bytes; answered by READY or ERROR."""
    READY = 2
    """enclave → host: the serialized EnclaveInstanceInfo and on_startup's mail commands."""
    CALL = 3
    """host → enclave: call_enclave data."""
    CALL_RESULT = 4
    """enclave → host: optional reply and mail commands."""
    HOST_CALLBACK = 5
    """enclave → host: call_untrusted_host data, under the call that made it."""
    HOST_CALLBACK_RESULT = 6
    """host → enclave: the callback's optional answer."""
    DELIVER_MAIL = 7
    """host → enclave: routing hint and mail."""
    MAIL_RESULT = 8
    """enclave → host: mail commands."""
    UPDATE_ATTESTATION = 9
    """host → enclave: produce fresh evidence."""
    ATTESTATION = 10
    """enclave → host: the serialized EnclaveInstanceInfo."""
    SHUTDOWN = 11
    """host → enclave: run on_shutdown and exit."""
    SHUTDOWN_DONE = 12
    """enclave → host: on_shutdown has run."""
    ERROR = 13
    """either way: error code and message, in answer to the frame with this call id."""


class Frame(NamedTuple):
    type: FrameType
    call_id: int
    payload: bytes = b""
    parent_id: int = 0


_TYPES = {frame_type.value: frame_type for frame_type in FrameType}
_HEADER_FIELDS = struct.Struct(">BBQQ")


@dataclass(frozen=True)
class BadFrame:
    """A frame that could not be parsed; answer it with an ERROR frame."""

    call_id: int
    reason: str


def encode_frame(frame: Frame) -> bytes:
    return frame_header(frame) + frame.payload


def frame_header(frame: Frame) -> bytes:
    """The bytes before ``frame.payload`` in the encoded frame (to send the two without
    joining them, when the payload is large)."""
    return _HEADER.pack(
        _HEADER_BODY + len(frame.payload), VERSION, frame.type, frame.call_id, frame.parent_id
    )


class FrameDecoder:
    """Feed it bytes as they arrive; it returns the complete frames and bad-frame events.

    ``feed`` accepts any bytes-like object and keeps no reference to it: a caller may pass a
    view of a receive buffer it reuses. Frames are parsed straight out of what is fed; only the
    tail of an incomplete frame is copied and kept, and each payload is copied once.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._buffer = bytearray()
        self._max_frame_size = max_frame_size
        self._skip = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame | BadFrame]:
        if not self._buffer and not self._skip and len(data) >= _HEADER.size:
            # Fast path: exactly one whole, well-formed frame, the usual case for a call or
            # its answer.
            length, version, kind, call_id, parent_id = _HEADER.unpack_from(data)
            frame_type = _TYPES.get(kind)
            if (
                len(data) == _LENGTH.size + length
                and length <= self._max_frame_size
                and version == VERSION
                and frame_type is not None
            ):
                return [Frame(frame_type, call_id, bytes(data[_HEADER.size :]), parent_id)]
        events: list[Frame | BadFrame] = []
        if self._buffer:
            self._buffer += data
            with memoryview(self._buffer) as view:
                used = self._parse_frames(view, events)
            del self._buffer[:used]  # once per feed, not once per frame
        else:
            with memoryview(data) as view:
                used = self._parse_frames(view, events)
                if used < len(view):
                    self._buffer += view[used:]
        return events

    def _parse_frames(self, view: memoryview, events: list[Frame | BadFrame]) -> int:
        """Append the events of the whole frames in ``view``; the number of bytes used."""
        size = len(view)
        offset = 0
        while True:
            if self._skip:
                skipped = min(self._skip, size - offset)
                offset += skipped
                self._skip -= skipped
                if self._skip:
                    return offset
            if size - offset < _LENGTH.size:
                return offset
            (length,) = _LENGTH.unpack_from(view, offset)
            if length > self._max_frame_size:
                events.append(
                    BadFrame(
                        0,
                        f"frame of {length} bytes is over the limit of "
                        f"{self._max_frame_size}; skipped",
                    )
                )
                offset += _LENGTH.size
                self._skip = length
                continue
            end = offset + _LENGTH.size + length
            if end > size:
                return offset
            events.append(_parse(view, offset + _LENGTH.size, end))
            offset = end

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buffer)


def _parse(view: memoryview, start: int, end: int) -> Frame | BadFrame:
    """The frame whose body (after the length) is ``view[start:end]``."""
    if end - start < _HEADER_BODY:
        return BadFrame(0, f"frame of {end - start} bytes is shorter than a frame header")
    version, kind, call_id, parent_id = _HEADER_FIELDS.unpack_from(view, start)
    if version != VERSION:
        return BadFrame(call_id, f"frame version {version} is not {VERSION}")
    frame_type = _TYPES.get(kind)
    if frame_type is None:
        return BadFrame(call_id, f"unknown frame type {kind}")
    return Frame(frame_type, call_id, view[start + _HEADER_BODY : end].tobytes(), parent_id)


# -- payloads ---------------------------------------------------------------------------------


def _reader(payload: bytes, what: str) -> Reader:
    return Reader(payload, error=FrameError, what=what)


def encode_optional_bytes(value: bytes | None) -> bytes:
    if value is None:
        return b"\0"
    return Writer().u8(1).bytes32(value).getvalue()


def decode_optional_bytes(payload: bytes, what: str) -> bytes | None:
    reader = _reader(payload, what)
    value = _read_optional_bytes(reader)
    reader.expect_end()
    return value


def _read_optional_bytes(reader: Reader) -> bytes | None:
    present = reader.u8("presence flag")
    if present == 0:
        return None
    if present != 1:
        raise reader.fail(f"presence flag is {present}, not 0 or 1")
    return reader.bytes32("data", MAX_DATA_SIZE)


def _write_optional_text(writer: Writer, text: str | None) -> None:
    if text is None:
        writer.u8(0)
    else:
        writer.u8(1).text16(text)


def _read_optional_text(reader: Reader) -> str | None:
    present = reader.u8("presence flag")
    if present == 0:
        return None
    if present != 1:
        raise reader.fail(f"presence flag is {present}, not 0 or 1")
    return reader.text16("text")


def _write_commands(writer: Writer, commands: list[MailCommand]) -> None:
    writer.u32(len(commands))
    for command in commands:
        if isinstance(command, PostMail):
            writer.u8(1)
            _write_optional_text(writer, command.routing_hint)
            writer.bytes32(command.mail)
        else:  # 2: a snapshot, 3: a journal record
            writer.u8(2 if command.snapshot else 3).u64(command.commit_number)
            writer.bytes32(command.blob)


def _read_commands(reader: Reader) -> list[MailCommand]:
    count = reader.u32("command count")
    if count > reader.remaining:
        raise reader.fail(f"{count} commands cannot fit in {reader.remaining} bytes")
    commands: list[MailCommand] = []
    for _ in range(count):
        kind = reader.u8("command kind")
        if kind == 1:
            hint = _read_optional_text(reader)
            commands.append(PostMail(reader.bytes32("mail", MAX_DATA_SIZE), hint))
        elif kind in (2, 3):
            number = reader.u64("commit number")
            blob = reader.bytes32("sealed state", MAX_DATA_SIZE)
            commands.append(StoreSealedState(blob, number, snapshot=kind == 2))
        else:
            raise reader.fail(f"unknown mail command kind {kind}")
    return commands


_NO_COMMANDS = struct.pack(">I", 0)
_NO_REPLY = b"\0" + _NO_COMMANDS


def encode_call_result(reply: bytes | None, commands: list[MailCommand]) -> bytes:
    if not commands:  # the common case, kept short: it is on every call's path
        if reply is None:
            return _NO_REPLY
        return b"\1" + _LENGTH.pack(len(reply)) + reply + _NO_COMMANDS
    writer = Writer().raw(encode_optional_bytes(reply))
    _write_commands(writer, commands)
    return writer.getvalue()


def decode_call_result(payload: bytes) -> tuple[bytes | None, list[MailCommand]]:
    if payload == _NO_REPLY:
        return None, []
    if payload[-4:] == _NO_COMMANDS and payload[:1] == b"\1":
        (size,) = _LENGTH.unpack_from(payload, 1)
        if 1 + 4 + size + 4 == len(payload) and size <= MAX_DATA_SIZE:
            return payload[5 : 5 + size], []
    reader = _reader(payload, "call result")
    reply = _read_optional_bytes(reader)
    commands = _read_commands(reader)
    reader.expect_end()
    return reply, commands


def encode_ready(instance_info: bytes, restored_commit: int, commands: list[MailCommand]) -> bytes:
    """READY: the serialised instance info, the number of the commit the enclave resumed from
    (0: none), and the mail commands ``on_startup`` made."""
    return _U64.pack(restored_commit) + encode_call_result(instance_info, commands)


def decode_ready(payload: bytes) -> tuple[bytes, int, list[MailCommand]]:
    if len(payload) < 8:
        raise FrameError("malformed READY frame: truncated")
    (restored_commit,) = _U64.unpack_from(payload)
    instance_info, commands = decode_call_result(payload[8:])
    if instance_info is None:
        raise FrameError("malformed READY frame: it carries no instance info")
    return instance_info, restored_commit, commands


def encode_commands(commands: list[MailCommand]) -> bytes:
    writer = Writer()
    _write_commands(writer, commands)
    return writer.getvalue()


def decode_commands(payload: bytes) -> list[MailCommand]:
    reader = _reader(payload, "mail result")
    commands = _read_commands(reader)
    reader.expect_end()
    return commands


_MAX_KDS_ANSWER_SIZE = 4 << 20


def encode_deliver_mail(
    mail: bytes, routing_hint: str | None, kds_answer: bytes | None = None
) -> bytes:
    """``kds_answer``: the KDS's answer to the host's request for the key of the mail's key
    spec (a mail sealed to a KDS key)."""
    writer = Writer()
    _write_optional_text(writer, routing_hint)
    writer.bytes32(mail)
    if kds_answer is not None:
        writer.bytes32(kds_answer)
    return writer.getvalue()


def decode_deliver_mail(payload: bytes) -> tuple[bytes, str | None, bytes | None]:
    reader = _reader(payload, "deliver-mail frame")
    hint = _read_optional_text(reader)
    mail = reader.bytes32("mail", MAX_DATA_SIZE)
    kds_answer = reader.bytes32("KDS answer", _MAX_KDS_ANSWER_SIZE) if reader.remaining else None
    reader.expect_end()
    return mail, hint, kds_answer


@dataclass(frozen=True)
class LoadRequest:
    mode: str
    bundle: bytes
    sealed_state: tuple[bytes, ...] | None = None
    """The latest snapshot, then the journal records after it."""
    filesystem_file: str | None = None


def encode_load(
    mode: str,
    bundle: bytes,
    sealed_state: Sequence[bytes] | None = None,
    filesystem_file: os.PathLike[str] | str | None = None,
) -> bytes:
    writer = Writer().text16(mode).bytes32(bundle)
    if sealed_state is None:
        writer.u8(0)
    else:
        writer.u8(1).u32(len(sealed_state))
        for blob in sealed_state:
            writer.bytes32(blob)
    _write_optional_text(writer, None if filesystem_file is None else os.fspath(filesystem_file))
    return writer.getvalue()


def decode_load(payload: bytes) -> LoadRequest:
    reader = _reader(payload, "load frame")
    mode = reader.text16("mode", 32)
    bundle = reader.bytes32("bundle", MAX_DATA_SIZE)
    sealed_state = None
    present = reader.u8("sealed state presence flag")
    if present > 1:
        raise reader.fail(f"presence flag is {present}, not 0 or 1")
    if present:
        count = reader.u32("sealed state blob count")
        if count > reader.remaining // 4:
            raise reader.fail(f"{count} sealed state blobs cannot fit in {reader.remaining} bytes")
        sealed_state = tuple(reader.bytes32("sealed state", MAX_DATA_SIZE) for _ in range(count))
    filesystem_file = _read_optional_text(reader)
    reader.expect_end()
    return LoadRequest(mode, bundle, sealed_state, filesystem_file)


# -- errors -----------------------------------------------------------------------------------

# Most specific first: an error crosses the boundary as the first class it is an instance of.
_ERROR_CODES: list[tuple[int, type[SanctorumError]]] = [
    (2, MailDecryptionError),
    (3, MailFormatError),
    (4, MailReplayError),
    (5, MailGapError),
    (6, MailSenderError),
    (7, FrameError),
    (8, EnclaveStateError),
    (9, BundleError),
    (20, DependencyMismatchError),
    (10, EnclaveLoadError),
    (11, EnclaveCrashedError),
    (12, PersistentMapFullError),
    (15, FileSystemRollbackError),
    (16, NewerSealedStateError),
    (17, SealedStateJournalError),
    (19, KdsKeyRequiredError),
    (18, KdsError),
    (13, SealedStateError),
    (14, InvalidEnclaveError),
    (1, EnclaveCallError),
]
_CLASSES = dict(_ERROR_CODES)
_UNKNOWN = 0


def encode_error(error: BaseException) -> bytes:
    code = next((code for code, cls in _ERROR_CODES if isinstance(error, cls)), _UNKNOWN)
    return Writer().u8(code).bytes32(str(error).encode("utf-8", "replace")).getvalue()


def decode_error(payload: bytes) -> SanctorumError:
    """The exception an ERROR frame stands for (never raises on a malformed one)."""
    try:
        reader = _reader(payload, "error frame")
        code = reader.u8("error code")
        message = reader.bytes32("message", 1 << 20).decode("utf-8", "replace")
        reader.expect_end()
    except FrameError as error:
        return error
    return _CLASSES.get(code, SanctorumError)(message)
