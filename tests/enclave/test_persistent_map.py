"""The persistent map as a mapping, its transactions and its serialisation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanctorum.common.errors import EnclaveStateError, PersistentMapFullError, SealedStateError
from sanctorum.enclave.persistent_map import PersistentMap, entry_size


def test_staged_changes_are_visible_until_discarded() -> None:
    state = PersistentMap(1 << 20)
    state.begin()
    state["a"] = b"1"
    state["b"] = b"2"
    state.apply()
    depth = state.begin()
    state["a"] = b"changed"
    del state["b"]
    state["c"] = b"3"
    assert dict(state) == {"a": b"changed", "c": b"3"}
    assert len(state) == 2
    assert "b" not in state
    assert state.changed
    state.abort(depth)
    assert dict(state) == {"a": b"1", "b": b"2"}
    assert not state.changed


def test_nested_layers_join_on_success_and_vanish_on_failure() -> None:
    state = PersistentMap(1 << 20)
    outer = state.begin()
    state["outer"] = b"1"
    failed = state.begin()
    state["failed"] = b"x"
    state["outer"] = b"overwritten by a call that fails"
    state.abort(failed)
    assert dict(state) == {"outer": b"1"}
    succeeded = state.begin()
    state["nested"] = b"2"
    deeper = state.begin()
    state["deeper"] = b"3"
    state.end(deeper)
    state.end(succeeded)
    assert dict(state) == {"outer": b"1", "nested": b"2", "deeper": b"3"}
    state.abort(outer)  # the outermost call fails: everything goes
    assert dict(state) == {}
    assert not state.changed


def test_changes_outside_a_call_are_refused() -> None:
    state = PersistentMap(100)
    with pytest.raises(EnclaveStateError, match="only change while the enclave handles"):
        state["k"] = b"v"


def test_bad_keys_and_values() -> None:
    state = PersistentMap(100)
    state.begin()
    with pytest.raises(TypeError, match="keys are str"):
        state[b"k"] = b"v"  # type: ignore[index]
    with pytest.raises(TypeError, match="values are bytes"):
        state["k"] = "v"  # type: ignore[assignment]
    with pytest.raises(KeyError):
        del state["missing"]


def test_size_limit_counts_keys_values_and_overhead() -> None:
    state = PersistentMap(entry_size("k", bytes(10)))
    state.begin()
    state["k"] = bytes(10)
    state.apply()
    state.begin()
    state["k"] = bytes(11)
    with pytest.raises(PersistentMapFullError):
        state.apply()
    assert dict(state) == {"k": bytes(10)}  # nothing of the failed call was kept


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text(max_size=20), st.binary(max_size=50), max_size=20),
    st.dictionaries(st.binary(min_size=32, max_size=32), st.binary(min_size=16, max_size=16)),
)
def test_serialisation_round_trips(entries: dict[str, bytes], records: dict[bytes, bytes]) -> None:
    state = PersistentMap(1 << 20)
    state.begin()
    state.update(entries)
    for key, value in records.items():
        state.set_record(key, value)
    state.apply()
    data = state.serialize()
    again = PersistentMap(1 << 20)
    again.load(data)
    assert dict(again) == entries
    assert {key: again.record(key) for key in records} == records
    assert again.staged_size() == state.staged_size()


def test_runtime_records_count_against_the_limit() -> None:
    state = PersistentMap(entry_size("k", b"v") + entry_size(b"r", bytes(10)))
    state.begin()
    state["k"] = b"v"
    state.set_record(b"r", bytes(10))
    state.apply()
    state.begin()
    state.set_record(b"r2", b"")
    with pytest.raises(PersistentMapFullError, match="runtime's per-client records"):
        state.apply()
    assert state.record(b"r2") is None


def test_malformed_state_is_refused() -> None:
    state = PersistentMap(100)
    data = state.serialize()
    for bad in (b"", b"\x01" + data[1:], data + b"\0", data[:-1]):
        with pytest.raises(SealedStateError):
            PersistentMap(100).load(bad)
