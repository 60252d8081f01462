"""The web host's durable store, in both engines (SQLite and a real PostgreSQL): sealed state
kept in commit order, mail acknowledged by id, one host per store; old state dirs refused."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sanctorum import EnclaveStateError, StateDirInUseError
from sanctorum.host import PostMail, StoreSealedState
from sanctorum.web.postgres_store import PostgresMailboxStore
from sanctorum.web.store import MailboxStore, SqliteMailboxStore
from tests.postgres import PostgresServer


def test_the_journal_is_appended_and_a_snapshot_replaces_it(
    open_store: Callable[[], MailboxStore],
) -> None:
    store = open_store()
    assert store.sealed_state() is None
    store.apply([StoreSealedState(b"snapshot 1", 1)])
    store.apply([StoreSealedState(b"record 2", 2, snapshot=False)])
    store.apply([StoreSealedState(b"record 3", 3, snapshot=False)])
    assert store.sealed_state() == (b"snapshot 1", b"record 2", b"record 3")
    store.apply([StoreSealedState(b"snapshot 4", 4)])
    store.apply([StoreSealedState(b"record 5", 5, snapshot=False)])
    store.close()
    store = open_store()
    assert store.sealed_state() == (b"snapshot 4", b"record 5")
    store.close()


def test_what_a_snapshot_replaced_is_deleted_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "mailbox.sqlite3"
    store = SqliteMailboxStore(path)
    for number in (1, 2, 3):
        store.apply([StoreSealedState(b"snapshot", number)])
    store.close()
    rows = sqlite3.connect(path).execute("SELECT commit_number FROM sealed_journal").fetchall()
    assert rows == [(3,)]


def test_a_commit_replaces_the_rows_of_a_chain_the_enclave_left(
    open_store: Callable[[], MailboxStore],
) -> None:
    """An enclave resumed from commit 2 (its host lost 3 and 4 in memory): its own commit 3
    replaces the stale 3 and 4, so the journal never mixes two chains."""
    store = open_store()
    store.apply([StoreSealedState(b"snapshot 1", 1)])
    for number in (2, 3, 4):
        store.apply([StoreSealedState(f"record {number}".encode(), number, snapshot=False)])
    store.apply([StoreSealedState(b"record 3 again", 3, snapshot=False)])
    assert store.sealed_state() == (b"snapshot 1", b"record 2", b"record 3 again")


def test_a_record_that_would_leave_a_hole_is_refused_and_nothing_is_stored(
    open_store: Callable[[], MailboxStore],
) -> None:
    store = open_store()
    with pytest.raises(EnclaveStateError, match="does not follow the last commit stored"):
        store.apply([StoreSealedState(b"record 1", 1, snapshot=False)])  # no snapshot yet
    store.apply([StoreSealedState(b"snapshot 1", 1)])
    with pytest.raises(EnclaveStateError, match=r"record 3 does not follow .* \(1\)"):
        store.apply([PostMail(b"reply", "client"), StoreSealedState(b"record 3", 3, False)])
    assert store.sealed_state() == (b"snapshot 1",)
    assert store.next_mail("client", None) is None  # the call's mail went with it


def test_mail_waits_until_acknowledged_and_ids_rise_across_restarts(
    open_store: Callable[[], MailboxStore],
) -> None:
    store = open_store()
    store.apply([PostMail(b"one", "alice"), PostMail(b"two", "alice"), PostMail(b"x", "bob")])
    first = store.next_mail("alice", None)
    assert first is not None
    assert first[1] == b"one"
    assert store.next_mail("alice", None) == first  # not acknowledged: handed out again
    second = store.next_mail("alice", first[0])
    assert second is not None
    assert second[1] == b"two"
    assert second[0] > first[0]
    assert store.next_mail("alice", second[0]) is None
    bound = store.high_water
    store.apply([PostMail(b"three", "alice")])
    third = store.next_mail("alice", None)
    assert third is not None
    assert store.next_mail("alice", third[0], bound) == third  # over the bound: not honoured
    store.close()
    store = open_store()
    bobs = store.next_mail("bob", None)
    assert bobs is not None
    assert bobs[1] == b"x"  # kept across the restart, not acknowledged
    store.apply([PostMail(b"four", "carol")])
    fourth = store.next_mail("carol", None)
    assert fourth is not None
    assert fourth[0] > third[0] + 1  # the ids jumped at the restart
    assert store.next_mail("alice", third[0]) is None


def test_an_acknowledgement_of_mail_no_longer_there_drops_nothing(
    open_store: Callable[[], MailboxStore],
) -> None:
    store = open_store()
    store.apply([PostMail(b"one", "alice")])
    first = store.next_mail("alice", None)
    assert first is not None
    assert store.next_mail("alice", first[0] + 1000) == first  # an id it never handed out


def test_attestations_of_past_instances_are_kept(open_store: Callable[[], MailboxStore]) -> None:
    store = open_store()
    store.apply([PostMail(b"m", "a")], (b"key one", b"attestation one"))
    store.apply([PostMail(b"n", "a")], (b"key two", b"attestation two"))
    store.close()
    store = open_store()
    assert store.attestation_of(b"key one") == b"attestation one"
    assert store.attestation_of(b"key two") == b"attestation two"
    assert store.attestation_of(b"key three") is None


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
    store = SqliteMailboxStore(path)
    assert store.sealed_state() == (b"old blob",)
    store.apply([StoreSealedState(b"record 8", 8, snapshot=False)])
    assert store.sealed_state() == (b"old blob", b"record 8")
    store.close()


def test_a_state_dir_of_an_older_version_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "mailbox.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE sealed_state (only_row INTEGER PRIMARY KEY, blob BLOB)")
    with pytest.raises(EnclaveStateError, match=r"older version of Sanctorum.*new state dir"):
        SqliteMailboxStore(path)


# -- PostgreSQL only ------------------------------------------------------------------------


def test_a_second_host_on_one_database_is_refused_until_the_first_is_gone(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.new_database()
    first = PostgresMailboxStore(url)
    with pytest.raises(StateDirInUseError, match="in use by another Sanctorum host"):
        PostgresMailboxStore(url, wait_for_lock=0.2)
    first.close()
    PostgresMailboxStore(url).close()


def test_a_killed_hosts_database_is_free_at_once(postgres_server: PostgresServer) -> None:
    """The lock is the server's, tied to the connection: SIGKILL ends it."""
    url = postgres_server.new_database()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from sanctorum.web.postgres_store import PostgresMailboxStore\n"
            "store = PostgresMailboxStore(sys.argv[1]); print('held', flush=True); time.sleep(60)",
            url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(StateDirInUseError):
        PostgresMailboxStore(url, wait_for_lock=0)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    # The server notices the closed socket at once, but asynchronously: the wait covers it.
    PostgresMailboxStore(url, wait_for_lock=5).close()


def test_a_database_of_another_schema_version_is_refused(postgres_server: PostgresServer) -> None:
    url = postgres_server.new_database()
    PostgresMailboxStore(url).close()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("UPDATE sanctorum_schema SET version = 99")
    with pytest.raises(EnclaveStateError, match=r"schema version 99.*a new database"):
        PostgresMailboxStore(url)


def test_hosts_starting_at_once_create_the_schema_once(postgres_server: PostgresServer) -> None:
    url = postgres_server.new_database()
    errors: list[BaseException] = []

    def start() -> None:
        try:
            PostgresMailboxStore(url, wait_for_lock=0).close()
        except StateDirInUseError:
            pass  # another one held the database at that moment: what a second host gets
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_an_unreachable_database_is_named_without_its_password() -> None:
    with pytest.raises(EnclaveStateError, match=r"cannot connect to the database") as caught:
        PostgresMailboxStore("postgresql://someone:hunter2@127.0.0.1:1/nowhere?connect_timeout=2")
    assert "hunter2" not in str(caught.value)
    assert "user=someone" in str(caught.value)


def test_without_the_driver_the_database_option_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    with pytest.raises(EnclaveStateError, match=r"\[postgres\] extra .* pip install"):
        PostgresMailboxStore("postgresql://127.0.0.1:1/x")


def test_a_reply_the_store_lost_restarts_the_enclave_and_the_client_goes_on(
    tmp_path: Path,
) -> None:
    """The store fails to keep a stateless enclave's reply (a database that went away): the
    enclave took the mail, so a resend to the same instance would be a replay. The web host
    restarts it, and the client reaches the new instance and gets its answer."""
    from behaviour_enclave import Recorder

    from sanctorum import EnclaveMode
    from sanctorum.web.service import EnclaveService
    from tests.web.conftest import serve, web_client

    service = EnclaveService(Recorder, EnclaveMode.MOCK, tmp_path / "state")
    service.start()
    host = serve(service)
    try:
        client, transport = web_client(host.url)
        reply = client.send_mail(b"one")
        assert reply is not None
        first_instance = service.host.enclave_instance_info.encryption_key
        apply = service.store.apply
        failures = [EnclaveStateError("the database went away")]

        def failing_once(*arguments: Any, **keywords: Any) -> None:
            if failures:
                raise failures.pop()
            apply(*arguments, **keywords)

        service.store.apply = failing_once  # type: ignore[method-assign]
        reply = client.send_mail(b"two")  # 503, the restart, then the new instance
        assert reply is not None
        assert reply.body == b"TWO"
        assert failures == []
        assert service.host.enclave_instance_info.encryption_key != first_instance
        transport.close()
    finally:
        host.stop()


def test_the_host_logs_which_store_it_uses_without_the_password(
    postgres_server: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from behaviour_enclave import Recorder

    from sanctorum import EnclaveMode
    from sanctorum.web.service import EnclaveService

    url = postgres_server.new_database().replace("postgres@", "postgres:hunter2@")
    with caplog.at_level("INFO", logger="sanctorum.web"):
        EnclaveService(Recorder, EnclaveMode.MOCK, tmp_path / "a", database=url).close()
        EnclaveService(Recorder, EnclaveMode.MOCK, tmp_path / "b").close()
    opened = [r.getMessage() for r in caplog.records if getattr(r, "event", "") == "store_opened"]
    assert len(opened) == 2
    assert "PostgreSQL database" in opened[0]
    assert f"port={postgres_server.port}" in opened[0]
    assert "hunter2" not in opened[0]
    assert (
        opened[1]
        == f"mailbox and sealed state in the SQLite file {tmp_path / 'b' / 'mailbox.sqlite3'}"
    )
