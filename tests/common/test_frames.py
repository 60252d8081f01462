"""The host↔enclave frame codec: round trips, recovery from bad frames, and fuzzing."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanctorum.common import frames
from sanctorum.common.commands import MailCommand, PostMail, StoreSealedState
from sanctorum.common.errors import FrameError, SanctorumError
from sanctorum.common.frames import (
    BadFrame,
    Frame,
    FrameDecoder,
    FrameType,
    LoadRequest,
    decode_call_result,
    decode_commands,
    decode_deliver_mail,
    decode_error,
    decode_load,
    decode_optional_bytes,
    decode_ready,
    encode_call_result,
    encode_commands,
    encode_deliver_mail,
    encode_error,
    encode_frame,
    encode_load,
    encode_optional_bytes,
    encode_ready,
)

FRAMES = [
    Frame(FrameType.CALL, 1, b"data"),
    Frame(FrameType.HOST_CALLBACK_RESULT, 2**64 - 1, b"", parent_id=7),
    Frame(FrameType.DELIVER_MAIL, 3, bytes(100_000), parent_id=1),
]


def test_round_trip_in_one_piece_and_byte_by_byte() -> None:
    stream = b"".join(encode_frame(frame) for frame in FRAMES)
    assert FrameDecoder().feed(stream) == FRAMES
    decoder = FrameDecoder()
    events = []
    for index in range(len(stream)):
        events += decoder.feed(stream[index : index + 1])
    assert events == FRAMES
    assert decoder.buffered == 0


def test_a_stream_split_at_every_byte_boundary_decodes() -> None:
    frames = [*FRAMES[:2], Frame(FrameType.CALL, 9, b"x" * 40, parent_id=3)]
    stream = b"".join(encode_frame(frame) for frame in frames)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        events = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert events == frames, cut
        assert decoder.buffered == 0
    for first in range(0, len(stream) + 1, 3):  # and at every pair of boundaries
        for second in range(first, len(stream) + 1, 2):
            decoder = FrameDecoder()
            parts = (stream[:first], stream[first:second], stream[second:])
            assert [event for part in parts for event in decoder.feed(part)] == frames


def test_views_of_a_reused_receive_buffer_decode_frames_larger_than_it() -> None:
    """As the host and the enclave feed it: views of one buffer, overwritten after each feed."""
    frames = [
        Frame(FrameType.CALL, 1, bytes(range(256)) * 1024),  # 256 KiB: four buffers and more
        Frame(FrameType.CALL_RESULT, 2, b"small"),
        Frame(FrameType.DELIVER_MAIL, 3, b"m" * 70_000, parent_id=1),
    ]
    stream = b"".join(encode_frame(frame) for frame in frames)
    for size in (1, 7, 4096, 65536):
        buffer = bytearray(size)
        decoder = FrameDecoder()
        events: list[Frame | BadFrame] = []
        for start in range(0, len(stream), size):
            chunk = stream[start : start + size]
            buffer[: len(chunk)] = chunk
            with memoryview(buffer) as view:
                events += decoder.feed(view[: len(chunk)])
            buffer[:] = bytes(size)  # the decoder kept nothing that points into it
        assert events == frames
        assert all(type(event.payload) is bytes for event in events if isinstance(event, Frame))
        assert decoder.buffered == 0


def test_bytearray_input_decodes() -> None:
    assert FrameDecoder().feed(bytearray(encode_frame(FRAMES[0]))) == [FRAMES[0]]


def test_oversized_frame_is_skipped_byte_by_byte() -> None:
    decoder = FrameDecoder(max_frame_size=1000)
    stream = encode_frame(Frame(FrameType.CALL, 5, bytes(3000))) + encode_frame(FRAMES[0])
    events = [
        event for index in range(len(stream)) for event in decoder.feed(stream[index : index + 1])
    ]
    assert len(events) == 2
    assert isinstance(events[0], BadFrame)
    assert events[1] == FRAMES[0]
    assert decoder.buffered == 0


def test_oversized_frame_is_skipped_and_the_stream_recovers() -> None:
    decoder = FrameDecoder(max_frame_size=1000)
    big = encode_frame(Frame(FrameType.CALL, 5, bytes(5000)))
    small = encode_frame(Frame(FrameType.CALL, 6, b"after"))
    events = decoder.feed(big[:3000]) + decoder.feed(big[3000:] + small)
    assert isinstance(events[0], BadFrame)
    assert "over the limit" in events[0].reason
    assert events[1:] == [Frame(FrameType.CALL, 6, b"after")]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x01\x03", "shorter than a frame header"),
        (struct.pack(">BBQQ", 9, 3, 4, 0), "version 9"),
        (struct.pack(">BBQQ", 1, 99, 4, 0), "unknown frame type 99"),
    ],
)
def test_malformed_frames_become_events(body: bytes, reason: str) -> None:
    events = FrameDecoder().feed(struct.pack(">I", len(body)) + body)
    assert len(events) == 1
    assert isinstance(events[0], BadFrame)
    assert reason in events[0].reason


def test_payloads_round_trip() -> None:
    commands: list[MailCommand] = [
        PostMail(b"mail-1", "hint"),
        StoreSealedState(b"blob", 2**64 - 1),
        StoreSealedState(b"record", 7, snapshot=False),
        PostMail(b"", None),
    ]
    assert decode_call_result(encode_call_result(b"reply", commands)) == (b"reply", commands)
    assert decode_call_result(encode_call_result(None, [])) == (None, [])
    assert decode_commands(encode_commands(commands)) == commands
    assert decode_deliver_mail(encode_deliver_mail(b"m", "r")) == (b"m", "r", None)
    assert decode_deliver_mail(encode_deliver_mail(b"m", None)) == (b"m", None, None)
    assert decode_deliver_mail(encode_deliver_mail(b"m", "r", b"{}")) == (b"m", "r", b"{}")
    assert decode_load(encode_load("simulation", b"zip")) == LoadRequest("simulation", b"zip")
    assert decode_load(encode_load("simulation", b"zip", [b"s", b"", b"r"], "/f")) == LoadRequest(
        "simulation", b"zip", (b"s", b"", b"r"), "/f"
    )
    assert decode_optional_bytes(encode_optional_bytes(None), "x") is None
    assert decode_ready(encode_ready(b"info", 41, commands)) == (b"info", 41, commands)


def test_errors_keep_their_class() -> None:
    for _, cls in frames._ERROR_CODES:  # every class the boundary carries
        error = cls(f"{cls.__name__} happened")
        decoded = decode_error(encode_error(error))
        assert type(decoded) is type(error)
        assert str(decoded) == str(error)
    assert type(decode_error(encode_error(KeyError("x")))) is SanctorumError


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_decoder_never_raises(chunks: list[bytes]) -> None:
    decoder = FrameDecoder(max_frame_size=4096)
    for chunk in chunks:
        for event in decoder.feed(chunk):
            assert isinstance(event, (Frame, BadFrame))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_payload_decoders_raise_only_frame_errors(payload: bytes) -> None:
    for decode in (
        decode_call_result,
        decode_commands,
        decode_deliver_mail,
        decode_load,
        decode_ready,
    ):
        with contextlib.suppress(FrameError):  # anything else fails the test
            decode(payload)
    assert isinstance(decode_error(payload), SanctorumError)
