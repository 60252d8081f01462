"""The hidden conversation header: round trips, and every malformed form refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanctorum.common.errors import MailFormatError
from sanctorum.mail.private_header import ConversationHeader, RequestId

request_ids = (
    st.builds(RequestId, st.integers(0, 2**64 - 1), st.binary(min_size=16, max_size=16)) | st.none()
)
commit_ids = st.binary(min_size=16, max_size=16)


@st.composite
def headers(draw: st.DrawFn) -> ConversationHeader:
    commit_id = draw(commit_ids | st.none())
    last_told = draw(commit_ids | st.none()) if commit_id is not None else None
    lineage = draw(commit_ids | st.none()) if commit_id is not None else None
    return ConversationHeader(draw(request_ids), draw(request_ids), commit_id, last_told, lineage)


@given(headers())
def test_every_shape_round_trips(header: ConversationHeader) -> None:
    assert ConversationHeader.decode(header.encode()) == header


def test_no_header_is_no_fields() -> None:
    assert ConversationHeader.decode(b"") == ConversationHeader()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x02", "malformed"),
        (b"\x01\x00", "another version"),
        (b"\x02\x10" + bytes(16), "unknown or inconsistent flags"),  # lineage, no commit
        (b"\x02\x20", "unknown or inconsistent flags"),
        (b"\x02\x08" + bytes(16), "unknown or inconsistent flags"),  # last told, no commit
        (b"\x02\x04" + bytes(15), "wrong length"),
        (b"\x02\x01" + bytes(25), "wrong length"),
    ],
)
def test_malformed_headers_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(MailFormatError, match=problem):
        ConversationHeader.decode(data)


@given(st.binary(max_size=80))
def test_arbitrary_bytes_give_a_header_or_a_mail_format_error(data: bytes) -> None:
    try:
        header = ConversationHeader.decode(data)
    except MailFormatError:
        return
    assert header.encode() == data or data == b""
