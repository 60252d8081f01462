"""The runtime's sealed state codec: round trips, padding to size classes, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanctorum.common.errors import SealedStateError
from sanctorum.enclave.filesystem import FileSystemRecord
from sanctorum.enclave.state import RuntimeState, decode_state, encode_state

RECORD = FileSystemRecord(
    keys=(bytes(range(32)), bytes(32)), sectors=80, generation=7, root=bytes(32)
)


@given(
    map_state=st.none() | st.binary(max_size=5000),
    filesystem=st.none() | st.just(RECORD),
)
def test_states_round_trip(map_state: bytes | None, filesystem: FileSystemRecord | None) -> None:
    state = RuntimeState(2**64 - 1, bytes(range(16)), map_state, filesystem)
    assert decode_state(encode_state(state)) == state


def test_the_encoded_size_shows_only_a_size_class() -> None:
    """What one call writes (a value, an answer kept for resends) must not show its exact length
    in the size of the blob the host stores."""
    sizes = {len(encode_state(RuntimeState(1, bytes(16), bytes(n), RECORD))) for n in range(850)}
    assert sizes == {1024}
    larger = {len(encode_state(RuntimeState(1, bytes(16), bytes(n)))) for n in range(1100, 1900)}
    assert larger == {2048}


def test_malformed_states_are_refused() -> None:
    good = encode_state(RuntimeState(1, bytes(16), b"map", RECORD))
    bad_padding = bytearray(good)
    bad_padding[-1] = 1
    for bad in (b"", b"\x02" + good[1:], good[:-1], good + b"\0", bytes(bad_padding)):
        with pytest.raises(SealedStateError):
            decode_state(bad)
