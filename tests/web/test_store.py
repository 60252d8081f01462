"""The web host's durable store: sealed state kept in commit order, old state dirs refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sanctorum import EnclaveStateError
from sanctorum.host import PostMail, StoreSealedState
from sanctorum.web.store import MailboxStore


def test_the_journal_is_appended_and_a_snapshot_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "mailbox.sqlite3"
    store = MailboxStore(path)
    assert store.sealed_state() is None
    store.apply([StoreSealedState(b"snapshot 1", 1)])
    store.apply([StoreSealedState(b"record 2", 2, snapshot=False)])
    store.apply([StoreSealedState(b"record 3", 3, snapshot=False)])
    assert store.sealed_state() == (b"snapshot 1", b"record 2", b"record 3")
    store.apply([StoreSealedState(b"snapshot 4", 4)])
    store.apply([StoreSealedState(b"record 5", 5, snapshot=False)])
    store.close()
    store = MailboxStore(path)
    assert store.sealed_state() == (b"snapshot 4", b"record 5")
    rows = sqlite3.connect(path).execute("SELECT commit_number FROM sealed_journal").fetchall()
    assert sorted(rows) == [(4,), (5,)]  # what a snapshot replaced is deleted, not kept
    store.close()


def test_a_commit_replaces_the_rows_of_a_chain_the_enclave_left(tmp_path: Path) -> None:
    """An enclave resumed from commit 2 (its host lost 3 and 4 in memory): its own commit 3
    replaces the stale 3 and 4, so the journal never mixes two chains."""
    store = MailboxStore(tmp_path / "mailbox.sqlite3")
    store.apply([StoreSealedState(b"snapshot 1", 1)])
    for number in (2, 3, 4):
        store.apply([StoreSealedState(f"record {number}".encode(), number, snapshot=False)])
    store.apply([StoreSealedState(b"record 3 again", 3, snapshot=False)])
    assert store.sealed_state() == (b"snapshot 1", b"record 2", b"record 3 again")
    store.close()


def test_a_record_that_would_leave_a_hole_is_refused_and_nothing_is_stored(
    tmp_path: Path,
) -> None:
    store = MailboxStore(tmp_path / "mailbox.sqlite3")
    with pytest.raises(EnclaveStateError, match="does not follow the last commit stored"):
        store.apply([StoreSealedState(b"record 1", 1, snapshot=False)])  # no snapshot yet
    store.apply([StoreSealedState(b"snapshot 1", 1)])
    with pytest.raises(EnclaveStateError, match=r"record 3 does not follow .* \(1\)"):
        store.apply([PostMail(b"reply", "client"), StoreSealedState(b"record 3", 3, False)])
    assert store.sealed_state() == (b"snapshot 1",)
    assert store.next_mail("client", None) is None  # the call's mail went with it
    store.close()


def test_a_state_dir_from_before_the_journal_keeps_its_state(tmp_path: Path) -> None:
    """A store with the single-blob table of the previous version: its blob (a snapshot in
    today's format) becomes the journal's snapshot."""
    path = tmp_path / "mailbox.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE sealed_state (only_row INTEGER PRIMARY KEY CHECK (only_row = 1), "
            "blob BLOB NOT NULL, commit_number INTEGER NOT NULL)"
        )
        old.execute("INSERT INTO sealed_state VALUES (1, ?, 7)", (b"old blob",))
    old.close()
    store = MailboxStore(path)
    assert store.sealed_state() == (b"old blob",)
    store.apply([StoreSealedState(b"record 8", 8, snapshot=False)])
    assert store.sealed_state() == (b"old blob", b"record 8")
    store.close()


def test_a_state_dir_of_an_older_version_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "mailbox.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE sealed_state (only_row INTEGER PRIMARY KEY, blob BLOB)")
    with pytest.raises(EnclaveStateError, match=r"older version of Sanctorum.*new state dir"):
        MailboxStore(path)
