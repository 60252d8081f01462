"""The persistent map as a mapping, its transactions and its serialisation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanctorum.common.errors import PersistentMapFullError, SealedStateError
from sanctorum.enclave.persistent_map import PersistentMap, entry_size


def test_staged_changes_are_visible_until_discarded() -> None:
    state = PersistentMap(1 << 20)
    state["a"] = b"1"
    state["b"] = b"2"
    state.apply()
    state["a"] = b"changed"
    del state["b"]
    state["c"] = b"3"
    assert dict(state) == {"a": b"changed", "c": b"3"}
    assert len(state) == 2
    assert "b" not in state
    assert state.changed
    state.discard()
    assert dict(state) == {"a": b"1", "b": b"2"}
    assert not state.changed


def test_bad_keys_and_values() -> None:
    state = PersistentMap(100)
    with pytest.raises(TypeError, match="keys are str"):
        state[b"k"] = b"v"  # type: ignore[index]
    with pytest.raises(TypeError, match="values are bytes"):
        state["k"] = "v"  # type: ignore[assignment]
    with pytest.raises(KeyError):
        del state["missing"]


def test_size_limit_counts_keys_values_and_overhead() -> None:
    state = PersistentMap(entry_size("k", bytes(10)))
    state["k"] = bytes(10)
    state.apply()
    state["k"] = bytes(11)
    with pytest.raises(PersistentMapFullError):
        state.apply()
    assert dict(state) == {"k": bytes(10)}  # nothing of the failed call was kept


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text(max_size=20), st.binary(max_size=50), max_size=20),
    st.dictionaries(st.binary(min_size=32, max_size=32), st.binary(min_size=16, max_size=16)),
)
def test_serialisation_round_trips(entries: dict[str, bytes], told: dict[bytes, bytes]) -> None:
    state = PersistentMap(1 << 20)
    state.update(entries)
    state.apply()
    data = state.serialize(bytes(16), told)
    again = PersistentMap(1 << 20)
    assert again.load(data) == told
    assert dict(again) == entries
    assert again.staged_size() == state.staged_size()


def test_malformed_state_is_refused() -> None:
    state = PersistentMap(100)
    data = state.serialize(bytes(16), {})
    for bad in (b"", b"\x02" + data[1:], data + b"\0", data[:-1]):
        with pytest.raises(SealedStateError):
            PersistentMap(100).load(bad)
