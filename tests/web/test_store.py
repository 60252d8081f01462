"""The web host's durable store: sealed state kept in commit order, old state dirs refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sanctorum import EnclaveStateError
from sanctorum.host import StoreSealedState
from sanctorum.web.store import MailboxStore


def test_only_a_newer_commit_replaces_the_sealed_state(tmp_path: Path) -> None:
    store = MailboxStore(tmp_path / "mailbox.sqlite3")
    store.apply([StoreSealedState(b"commit 2", 2)])
    store.apply([StoreSealedState(b"commit 1", 1)])  # a call that returned late
    assert store.sealed_state() == b"commit 2"
    store.apply([StoreSealedState(b"commit 3", 3)])
    store.close()
    assert MailboxStore(tmp_path / "mailbox.sqlite3").sealed_state() == b"commit 3"


def test_a_state_dir_of_an_older_version_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "mailbox.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE sealed_state (only_row INTEGER PRIMARY KEY, blob BLOB)")
    with pytest.raises(EnclaveStateError, match=r"older version of Sanctorum.*new state dir"):
        MailboxStore(path)
