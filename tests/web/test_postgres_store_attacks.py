"""Attacks on the web host's PostgreSQL store (and, where the contract is shared, on SQLite).

The database is as untrusted as the host for what it holds, but the host process must never
crash or hang on what the database holds or answers, must never hand one routing hint's mail
to another, must keep exactly-once delivery (an acknowledgement drops only mail its reader
saw) and rising ids, and must refuse a second host on one database. Each test asserts the
safe behaviour: it passes when the attack fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import psycopg
import pytest

from sanctorum import EnclaveHost, EnclaveMode, StateDirInUseError
from sanctorum.common import Curve25519PrivateKey
from sanctorum.common.errors import EnclaveStateError, SanctorumError
from sanctorum.host import PostMail, StoreSealedState
from sanctorum.web.postgres_store import PostgresMailboxStore
from sanctorum.web.service import EnclaveService
from sanctorum.web.store import MailboxStore, SqliteMailboxStore
from tests.postgres import PostgresServer
from tests.web.conftest import RunningHost, serve
from tests.web.test_store_crashes import Tally, _model

_T = TypeVar("_T")
_REPO = Path(__file__).resolve().parents[2]
_HANG = 8.0  # seconds after which a store call counts as hung


# -- helpers ---------------------------------------------------------------------------------


@dataclass
class _Engine:
    """One store's location, in either engine, and the operator's direct access to it."""

    name: str
    location: str
    opened: list[MailboxStore] = field(default_factory=list)

    def open(self) -> MailboxStore:
        store: MailboxStore
        if self.name == "sqlite":
            store = SqliteMailboxStore(Path(self.location))
        else:
            store = PostgresMailboxStore(self.location)
        self.opened.append(store)
        return store

    def open_postgres(self, wait_for_lock: float = 5.0) -> PostgresMailboxStore:
        store = PostgresMailboxStore(self.location, wait_for_lock=wait_for_lock)
        self.opened.append(store)
        return store

    def operator(self, statement: str, parameters: tuple[object, ...] = ()) -> None:
        """What a hostile operator runs directly in the database, committed."""
        if self.name == "sqlite":
            with contextlib.closing(sqlite3.connect(self.location)) as connection:
                connection.execute(statement, parameters)
                connection.commit()
        else:
            with psycopg.connect(self.location, autocommit=True) as connection:
                connection.execute(statement, parameters)

    @property
    def database_name(self) -> str:
        return self.location.rsplit("/", 1)[1]


def _close_all(engine: _Engine) -> None:
    for store in engine.opened:
        with contextlib.suppress(Exception):
            store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Engine]:
    """A fresh store location in each engine."""
    if request.param == "sqlite":
        location = str(tmp_path / "mailbox.sqlite3")
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        location = server.new_database()
    opened = _Engine(request.param, location)
    yield opened
    _close_all(opened)


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> Iterator[_Engine]:
    """A fresh PostgreSQL database."""
    opened = _Engine("postgres", postgres_server.new_database())
    yield opened
    _close_all(opened)


def _clean(action: Callable[[], _T]) -> _T | SanctorumError:
    """What ``action`` returned, or the SanctorumError it raised; any other exception fails
    the test: the web host maps only SanctorumError to an answer (anything else is a 500, and
    at start a traceback)."""
    try:
        return action()
    except SanctorumError as error:
        return error
    except Exception as error:
        pytest.fail(
            f"a raw {type(error).__module__}.{type(error).__name__} escaped the store instead "
            f"of a SanctorumError: {error}"
        )


def _terminate(url: str, pids: list[int] | None = None) -> None:
    """pg_terminate_backend: the given backends, or every other one of the database; waits
    until they are gone."""
    with psycopg.connect(url, autocommit=True) as admin:
        if pids is None:
            found = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ).fetchall()
            pids = [int(row[0]) for row in found]
        admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            left = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
            ).fetchone()
            if left is None or left[0] == 0:
                return
            time.sleep(0.02)


def _mock_service(url: str, state_dir: Path) -> EnclaveService:
    import behaviour_enclave

    service = EnclaveService(behaviour_enclave.Recorder, EnclaveMode.MOCK, state_dir, database=url)
    service.start()
    return service


def _notify(service: EnclaveService, hint: str, body: str) -> None:
    """Have the enclave post a mail to ``hint`` (stored through the service's store)."""
    key = Curve25519PrivateKey.generate().public_key.encoded.hex()
    assert service.call(f"notify {key} topic {hint} {body}".encode()) == b"notified"


def _poll(host: RunningHost, hint: str, timeout: float = 5.0) -> httpx.Response:
    return httpx.post(f"{host.url}/poll-mail", headers={"Correlation-ID": hint}, timeout=timeout)


# -- mail of one routing hint never goes to another --------------------------------------------

_HOSTILE_HINTS = [
    "alice",
    "Alice",
    "alice ",
    "alice'--",
    "'; DROP TABLE mailbox; --",
    "alice%",
    "_lice",
    "%s",
    "%(hint)s",
    "\\",
    "$1",
    "ålice",
]


def test_routing_hints_with_sql_metacharacters_stay_apart(engine: _Engine) -> None:
    store = engine.open()
    store.apply([PostMail(hint.encode(), hint) for hint in _HOSTILE_HINTS])
    for hint in _HOSTILE_HINTS:
        first = store.next_mail(hint, None)
        assert first is not None
        assert first[1] == hint.encode(), (hint, first)
        assert store.next_mail(hint, first[0]) is None, hint
    assert store.next_mail("bob", None) is None


def test_a_routing_hint_with_a_nul_byte_is_refused_cleanly(engine: _Engine) -> None:
    """PostgreSQL TEXT cannot hold NUL. An enclave may post to any hint; a poll's hint comes
    from the client. Both engines refuse such a hint with an EnclaveStateError; never
    truncated onto "alice", never a raw driver error."""
    store = engine.open()
    store.apply([PostMail(b"for alice", "alice")])
    stored = _clean(lambda: store.apply([PostMail(b"for nul", "alice\x00bob")]))
    assert isinstance(stored, EnclaveStateError)  # refused in both engines, the same way
    assert "NUL" in str(stored)
    assert store.next_mail("alice\x00bob", None) is None
    prefix = _clean(lambda: store.next_mail("alice\x00", None))
    assert prefix is None or isinstance(prefix, SanctorumError), prefix
    alices = store.next_mail("alice", None)
    assert alices is not None
    assert alices[1] == b"for alice"
    store.apply([PostMail(b"later", "carol")])  # the store still works
    assert store.next_mail("carol", None) is not None


def test_a_nondeterministic_collation_does_not_merge_routing_hints(postgres: _Engine) -> None:
    """The operator alters mailbox.routing_hint to a case-insensitive collation: the host must
    still never hand alice's mail to "ALICE", nor let "ALICE"'s acknowledgement drop it."""
    store = postgres.open()
    postgres.operator(  # Debian's PostgreSQL is built with ICU
        "CREATE COLLATION case_blind (provider = icu, locale = 'und-u-ks-level2', "
        "deterministic = false)"
    )
    postgres.operator("ALTER TABLE mailbox ALTER COLUMN routing_hint TYPE text COLLATE case_blind")
    store.apply([PostMail(b"for alice only", "alice")])
    alices = store.next_mail("alice", None)
    assert alices is not None
    handed = _clean(lambda: store.next_mail("ALICE", None))
    assert handed is None or isinstance(handed, SanctorumError), (
        f"ALICE was handed alice's mail: {handed}"
    )
    _clean(lambda: store.next_mail("ALICE", alices[0]))
    assert store.next_mail("alice", None) == alices, "ALICE's acknowledgement dropped it"


# -- acknowledgements --------------------------------------------------------------------------


def test_acknowledgement_edge_cases_drop_nothing_unseen(engine: _Engine) -> None:
    store = engine.open()
    store.apply([PostMail(b"a1", "alice"), PostMail(b"a2", "alice"), PostMail(b"b1", "bob")])
    first = store.next_mail("alice", None)
    bobs = store.next_mail("bob", None)
    assert first is not None
    assert bobs is not None
    for acknowledged in (-1, 0, -(2**63), 2**63 - 1, bobs[0], first[0] - 1):
        assert store.next_mail("alice", acknowledged) == first, acknowledged
    assert store.next_mail("bob", first[0]) == bobs  # alice's id acknowledged as bob's
    assert store.next_mail("bob", bobs[0], bobs[0] - 1) == bobs  # over the bound
    # An id beyond what the app accepts: refused or ignored, and the store goes on.
    with contextlib.suppress(Exception):
        store.next_mail("alice", 2**63)
    assert store.next_mail("alice", None) == first
    second = store.next_mail("alice", first[0])
    assert second is not None
    assert second[1] == b"a2"


@pytest.mark.timeout(60)
def test_acknowledging_while_mail_is_inserted_delivers_each_once_in_order(
    engine: _Engine,
) -> None:
    store = engine.open()
    sent = [f"mail {number}".encode() for number in range(150)]
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            for mail in sent:
                store.apply([PostMail(mail, "alice"), PostMail(b"noise", "bob")])
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=writer)
    thread.start()
    received: list[bytes] = []
    last: int | None = None
    deadline = time.monotonic() + 30
    while len(received) < len(sent) and time.monotonic() < deadline and not failures:
        mail = store.next_mail("alice", last)
        if mail is None:
            time.sleep(0.001)
            continue
        if last is not None:
            assert mail[0] > last, "a mail came again, or out of order"
        received.append(mail[1])
        last = mail[0]
    thread.join()
    assert failures == []
    assert received == sent
    assert store.next_mail("alice", last) is None


# -- ids only rise ------------------------------------------------------------------------------


def test_a_sequence_set_backwards_never_drops_unseen_mail(engine: _Engine) -> None:
    """Alice has opened mail A, not yet acknowledged. The operator sets the id sequence back
    (setval / sqlite_sequence); the enclave posts B. Alice's acknowledgement of A must not
    drop B: the host must refuse an id that does not rise, or the engine must not hand one."""
    store = engine.open()
    store.apply([PostMail(b"A", "alice")])
    opened = store.next_mail("alice", None)
    assert opened is not None
    if engine.name == "sqlite":
        engine.operator("UPDATE sqlite_sequence SET seq = 1 WHERE name = 'mailbox'")
    else:
        engine.operator("SELECT setval('mailbox_id_seq', 1)")
    refused = _clean(lambda: store.apply([PostMail(b"B", "alice")]))
    if engine.name == "postgres":  # the sequence hands out a lower id: refused
        assert isinstance(refused, EnclaveStateError)
        assert "id sequence was set back" in str(refused)
        assert store.next_mail("alice", None) == opened  # B was not stored
        return
    # SQLite's AUTOINCREMENT never goes below the largest id still in the table.
    assert refused is None
    assert store.high_water > opened[0], "the id handed out went backwards"
    after = store.next_mail("alice", opened[0])
    assert after is not None, "acknowledging A dropped B, which alice never saw"
    assert after[1] == b"B"


# -- hostile rows and schema -------------------------------------------------------------------

_HOSTILE_ROWS: dict[str, tuple[list[str], Callable[[MailboxStore], object]]] = {
    "NULL mail": (
        [
            "ALTER TABLE mailbox ALTER COLUMN mail DROP NOT NULL",
            "INSERT INTO mailbox (routing_hint, mail) VALUES ('alice', NULL)",
        ],
        lambda store: store.next_mail("alice", None),
    ),
    "mail column turned to text": (
        [
            "INSERT INTO mailbox (routing_hint, mail) VALUES ('alice', 'mail')",
            "ALTER TABLE mailbox ALTER COLUMN mail TYPE text USING encode(mail, 'hex')",
        ],
        lambda store: store.next_mail("alice", None),
    ),
    "NULL sealed blob": (
        [
            "ALTER TABLE sealed_journal ALTER COLUMN blob DROP NOT NULL",
            "INSERT INTO sealed_journal (commit_number, snapshot, blob) VALUES (1, TRUE, NULL)",
        ],
        lambda store: store.sealed_state(),
    ),
    "NULL attestation": (
        [
            "ALTER TABLE instances ALTER COLUMN attestation DROP NOT NULL",
            "INSERT INTO instances VALUES ('key', NULL)",
        ],
        lambda store: store.attestation_of(b"key"),
    ),
}


@pytest.mark.parametrize("attack", list(_HOSTILE_ROWS))
def test_hostile_rows_give_a_clean_error(postgres: _Engine, attack: str) -> None:
    statements, read = _HOSTILE_ROWS[attack]
    store = postgres.open()
    for statement in statements:
        postgres.operator(statement)
    outcome = _clean(lambda: read(store))
    assert isinstance(outcome, EnclaveStateError), outcome
    assert "its tables were altered" in str(outcome)


_TAMPERED_STARTS: dict[str, list[str]] = {
    "sequence capped": ["ALTER SEQUENCE mailbox_id_seq MAXVALUE 10 RESTART 1"],
    "sequence near the bigint limit": ["SELECT setval('mailbox_id_seq', 9223372036854775000)"],
}


@pytest.mark.parametrize("attack", list(_TAMPERED_STARTS))
def test_a_tampered_database_is_refused_cleanly_at_start(postgres: _Engine, attack: str) -> None:
    postgres.open().close()
    for statement in _TAMPERED_STARTS[attack]:
        postgres.operator(statement)
    opened = _clean(postgres.open_postgres)
    if isinstance(opened, PostgresMailboxStore):
        # It started: then it must work, or fail cleanly, not with a driver error.
        _clean(lambda: opened.apply([PostMail(b"m", "alice")]))


def test_a_refused_second_connection_is_a_clean_error(
    postgres: _Engine, postgres_server: PostgresServer
) -> None:
    """The database admits the host's first connection, not its reader's (connection limit)."""
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'limited') "
            "THEN CREATE ROLE limited LOGIN; END IF; END $$"
        )
        admin.execute(f"ALTER DATABASE {postgres.database_name} OWNER TO limited")
        admin.execute(f"ALTER DATABASE {postgres.database_name} CONNECTION LIMIT 1")
    limited = postgres.location.replace("postgres@", "limited@")
    opened = _clean(lambda: PostgresMailboxStore(limited, wait_for_lock=0))
    assert isinstance(opened, SanctorumError)
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {postgres.database_name} CONNECTION LIMIT -1")
    PostgresMailboxStore(limited, wait_for_lock=2).close()  # its lock went with the failure


def test_extra_rows_in_the_schema_table_are_refused(postgres: _Engine) -> None:
    postgres.open().close()
    postgres.operator("ALTER TABLE sanctorum_schema DROP CONSTRAINT sanctorum_schema_pkey")
    postgres.operator("INSERT INTO sanctorum_schema (only_row, version) VALUES (TRUE, 99)")
    with pytest.raises(EnclaveStateError):
        postgres.open()


def test_a_huge_mail_row_comes_back_whole(postgres: _Engine) -> None:
    store = postgres.open()
    postgres.operator(
        "INSERT INTO mailbox (routing_hint, mail) "
        "VALUES ('big', decode(repeat('ab', 16 * 1024 * 1024), 'hex'))"
    )
    began = time.monotonic()
    mail = store.next_mail("big", None)
    assert mail is not None
    assert mail[1] == b"\xab" * (16 << 20)
    assert time.monotonic() - began < 5


_JOURNAL_TAMPERINGS = {
    "a record deleted (hole)": "DELETE FROM sealed_journal WHERE commit_number = 11",
    "a record marked as a snapshot": (
        "UPDATE sealed_journal SET snapshot = TRUE WHERE commit_number = 12"
    ),
    "two records swapped": (
        "UPDATE sealed_journal SET blob = (SELECT blob FROM sealed_journal "
        "WHERE commit_number = 12) WHERE commit_number = 11"
    ),
    "a record duplicated": (
        "INSERT INTO sealed_journal (commit_number, snapshot, blob) "
        "SELECT 13, snapshot, blob FROM sealed_journal WHERE commit_number = 12"
    ),
    "a record replaced by garbage": (
        "UPDATE sealed_journal SET blob = '\\xdeadbeef' WHERE commit_number = 12"
    ),
    "an old snapshot added after the last commit (rollback)": (
        "INSERT INTO sealed_journal (commit_number, snapshot, blob) "
        "SELECT 13, TRUE, blob FROM sealed_journal WHERE commit_number = 10"
    ),
}


def test_a_tampered_journal_is_refused_or_is_a_state_the_enclave_had(
    postgres: _Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holes, duplicates and swaps are the enclave's to refuse; the host passes them on and
    gets a SanctorumError, never a crash. (A rollback to an older snapshot is within what an
    untrusted database may do: it must be a state the enclave really had.)"""
    from sanctorum.enclave import runtime

    monkeypatch.setattr(runtime, "_MIN_JOURNAL_BYTES", 3000)
    store = postgres.open()
    host = EnclaveHost.load(Tally).start(
        sealed_state=store.sealed_state(), on_mail_commands=store.apply
    )
    for index in range(12):
        host.call_enclave(str(index).encode())
    host.close()
    with psycopg.connect(postgres.location, autocommit=True) as operator:
        rows = operator.execute(
            "SELECT commit_number, snapshot FROM sealed_journal ORDER BY 1"
        ).fetchall()
        assert rows == [(10, True), (11, False), (12, False)]  # the layout the attacks assume
        saved = operator.execute(
            "SELECT commit_number, snapshot, blob FROM sealed_journal"
        ).fetchall()
        past_states = [_model(commits) for commits in range(1, 13)]
        for attack, statement in _JOURNAL_TAMPERINGS.items():
            operator.execute(statement)
            try:
                started = _clean(
                    lambda: EnclaveHost.load(Tally).start(sealed_state=store.sealed_state())
                )
                if isinstance(started, EnclaveHost):
                    answer = started.call_enclave(b"dump")
                    started.close()
                    assert answer is not None
                    assert json.loads(answer) in past_states, attack
            finally:
                operator.execute("DELETE FROM sealed_journal")
                for row in saved:
                    operator.execute(
                        "INSERT INTO sealed_journal (commit_number, snapshot, blob) "
                        "VALUES (%s, %s, %s)",
                        row,
                    )


# -- a lost, slow or failing database connection -----------------------------------------------


def test_a_killed_connection_gives_clean_errors_then_the_store_recovers(
    postgres: _Engine,
) -> None:
    """pg_terminate_backend on the host's connections (a failover, a DBA, a restart)."""
    store = postgres.open_postgres()
    store.apply([PostMail(b"before", "alice")])
    _terminate(postgres.location)
    outcomes: list[str] = []
    for _ in range(5):
        stored = _clean(lambda: store.apply([PostMail(b"after", "alice")]))
        mail = _clean(lambda: store.next_mail("alice", None))
        if stored is None and isinstance(mail, tuple):
            assert mail[1] == b"before"
            outcomes.append("recovered")
            break
        outcomes.append("clean error")
        time.sleep(0.2)
    assert outcomes[-1] == "recovered", f"the store never recovered: {outcomes}"


def test_a_poll_on_a_killed_connection_answers_503_then_recovers(
    postgres: _Engine, tmp_path: Path
) -> None:
    """Through the web host: a poll must get 503 Retry-After (not 500) while the database
    connection is gone, and its mail once it is back."""
    service = _mock_service(postgres.location, tmp_path / "state")
    host = serve(service)
    try:
        _notify(service, "alice", "hello")
        before = _poll(host, "alice")
        assert before.status_code == 200
        _terminate(postgres.location)
        statuses: list[int] = []
        for _ in range(5):
            answer = _poll(host, "alice")
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                assert answer.headers["Mail-ID"] == before.headers["Mail-ID"]
                break
            time.sleep(0.2)
        assert set(statuses) <= {200, 503}, f"polls answered {statuses}"
        assert statuses[-1] == 200, f"the host never recovered: {statuses}"
    finally:
        host.stop()


def test_a_server_error_inside_a_call_does_not_wedge_the_store(
    postgres: _Engine, postgres_server: PostgresServer
) -> None:
    """A statement of apply() fails on the server (here: lock_timeout while a DBA holds a
    lock; also statement_timeout, a cancel, disk full...). The next call must work."""
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {postgres.database_name} SET lock_timeout = '200ms'")
    store = postgres.open_postgres()
    with psycopg.connect(postgres.location) as locker:
        locker.execute("LOCK TABLE mailbox IN SHARE MODE")
        with contextlib.suppress(Exception):
            store.apply([PostMail(b"while locked", "alice")])
        locker.rollback()
    stored = _clean(lambda: store.apply([PostMail(b"after", "alice")]))
    assert stored is None, f"the store stays broken after one failed call: {stored}"
    mail = store.next_mail("alice", None)
    assert mail is not None
    assert mail[1] == b"after"


class _KilledBefore(PostgresMailboxStore):
    """Terminates its own writer connection (from another one) just before the statement
    that starts with ``kill_before``, once armed."""

    kill_before = ""
    admin_url = ""
    armed = False

    def execute(
        self,
        cursor: object,
        statement: str,
        parameters: tuple[object, ...] | dict[str, object] = (),
    ) -> None:
        if self.armed and statement.startswith(self.kill_before):
            _terminate(self.admin_url, [self._connection.info.backend_pid])
        super().execute(cursor, statement, parameters)


def test_a_killed_connection_mid_call_stores_all_or_nothing(postgres: _Engine) -> None:
    for kill_before in ("INSERT INTO mailbox", "INSERT INTO sealed_journal", "COMMIT"):
        url = postgres.location
        store = _KilledBefore(url)
        store.kill_before, store.admin_url = kill_before, url
        kept_state = store.sealed_state()
        store.armed = True
        try:
            store.apply(
                [
                    PostMail(b"one", "alice"),
                    PostMail(b"two", "alice"),
                    StoreSealedState(kill_before.encode(), 1),
                ]
            )
        except Exception:
            killed = True
        else:
            killed = False
        assert killed, f"the connection was not killed before {kill_before}"
        with contextlib.suppress(Exception):
            store.close()
        again = PostgresMailboxStore(url)
        with psycopg.connect(url, autocommit=True) as operator:
            row = operator.execute("SELECT count(*) FROM mailbox").fetchone()
        assert row is not None
        assert row[0] in (0, 2), kill_before
        assert again.sealed_state() in (kept_state, (kill_before.encode(),)), kill_before
        assert (row[0] == 2) == (again.sealed_state() == (kill_before.encode(),))
        with psycopg.connect(url, autocommit=True) as operator:
            operator.execute("DELETE FROM mailbox")
        again.close()


def test_a_locked_table_neither_hangs_the_poll_nor_freezes_the_web_host(
    postgres: _Engine, tmp_path: Path
) -> None:
    """The operator (or a migration, a VACUUM FULL) holds an exclusive lock on mailbox. The
    poll waits on the database on the web host's event loop: it must time out, and the rest
    of the host (/health, other clients) must go on answering."""
    service = _mock_service(postgres.location, tmp_path / "state")
    host = serve(service)
    answers: list[int] = []
    try:
        with psycopg.connect(postgres.location) as locker:
            locker.execute("LOCK TABLE mailbox IN ACCESS EXCLUSIVE MODE")
            began = time.monotonic()
            poll = threading.Thread(
                target=lambda: answers.append(_poll(host, "alice", timeout=60).status_code),
                daemon=True,
            )
            poll.start()
            time.sleep(0.3)
            try:  # polls wait on their own threads: the event loop answers at once
                health = httpx.get(f"{host.url}/health", timeout=0.5).status_code
            except httpx.TimeoutException:
                health = None
            poll.join(max(0.0, began + _HANG - time.monotonic()))
            poll_finished = not poll.is_alive()
            locker.rollback()
        poll.join(30)
        assert health == 200, "/health did not answer while a poll waited on the database"
        assert poll_finished, f"the poll waited on the locked table for over {_HANG:.0f} s"
    finally:
        host.stop()


def test_a_database_that_never_answers_does_not_hang_the_start() -> None:
    """A server (or a middlebox) that accepts the TCP connection and then says nothing."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        outcome: list[BaseException | None] = []

        def start() -> None:
            try:
                PostgresMailboxStore(f"postgresql://someone@127.0.0.1:{port}/db").close()
                outcome.append(None)
            except BaseException as error:
                outcome.append(error)

        thread = threading.Thread(target=start, daemon=True)
        thread.start()
        thread.join(_HANG)
        hung = thread.is_alive()
        listener.settimeout(1)
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            connection.close()  # let the stuck connect end
        thread.join(10)
    assert not hung, f"the store waited for a silent database for over {_HANG:.0f} s"
    assert outcome
    assert isinstance(outcome[0], EnclaveStateError)


# -- one host per database ---------------------------------------------------------------------


def test_hosts_racing_for_the_lock_let_exactly_one_in(postgres: _Engine) -> None:
    postgres.open().close()  # the schema exists: only the host lock is raced for
    barrier = threading.Barrier(8)
    results: list[PostgresMailboxStore | BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            results.append(PostgresMailboxStore(postgres.location, wait_for_lock=0))
        except BaseException as error:
            results.append(error)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [result for result in results if isinstance(result, PostgresMailboxStore)]
    refused = [result for result in results if isinstance(result, StateDirInUseError)]
    assert len(winners) == 1
    assert len(refused) == 7
    winners[0].close()
    postgres.open().close()


def test_hosts_on_two_databases_of_one_server_do_not_block_each_other(
    postgres: _Engine, postgres_server: PostgresServer
) -> None:
    postgres.open()
    PostgresMailboxStore(postgres_server.new_database(), wait_for_lock=0).close()


def test_a_host_that_lost_one_connection_keeps_a_second_host_out(postgres: _Engine) -> None:
    """The connection holding host A's advisory lock is killed; the lock goes with it and
    host B starts. A's other (reader) connection is still up: A must not go on handing out
    and dropping the mail of the database B now serves."""
    first = postgres.open_postgres()
    first.apply([PostMail(b"m", "alice")])
    _terminate(postgres.location, [first._connection.info.backend_pid])
    with pytest.raises(StateDirInUseError):  # A's reader still holds its own lock
        postgres.open_postgres(wait_for_lock=1)
    mail = first.next_mail("alice", None)  # A goes on: its reader was never lost
    assert mail is not None
    with pytest.raises(EnclaveStateError, match="tries again at the next request"):
        first.apply([PostMail(b"n", "alice")])  # finds its writer connection gone
    first.apply([PostMail(b"n", "alice")])  # connected and locked again
    with pytest.raises(StateDirInUseError):
        postgres.open_postgres(wait_for_lock=0)


def test_an_idle_session_timeout_does_not_let_a_second_host_in(
    postgres: _Engine, postgres_server: PostgresServer
) -> None:
    """The DBA's idle_session_timeout ends idle sessions, the host's lock with them."""
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {postgres.database_name} SET idle_session_timeout = 300")
    postgres.open_postgres()
    time.sleep(1.0)
    with pytest.raises(StateDirInUseError):
        postgres.open_postgres(wait_for_lock=0)


def test_only_the_reader_connection_gives_up_synchronous_commit(postgres: _Engine) -> None:
    store = postgres.open_postgres()
    reader = store._reader.connection.execute("SHOW synchronous_commit").fetchone()
    writer = store._connection.execute("SHOW synchronous_commit").fetchone()
    assert reader == ("off",)
    assert writer == ("on",)  # replies and sealed state: on disk before the answer


# -- passwords ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://someone:hunter2@127.0.0.1:1/nowhere?connect_timeout=2",
        "postgresql://someone@127.0.0.1:1/nowhere?password=hunter2&connect_timeout=2",
        "host=127.0.0.1 port=1 user=someone password=hunter2 connect_timeout=2",
        "postgresql://someone:hunter2%zz@127.0.0.1:1/nowhere?connect_timeout=2",
    ],
    ids=["in userinfo", "in the query", "key=value string", "badly percent-encoded"],
)
def test_a_connection_error_never_shows_the_password(url: str) -> None:
    with pytest.raises(EnclaveStateError) as caught:
        PostgresMailboxStore(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("where", ["userinfo", "query"])
def test_the_database_in_use_error_never_shows_the_password(postgres: _Engine, where: str) -> None:
    postgres.open()
    if where == "userinfo":
        url = postgres.location.replace("postgres@", "postgres:hunter2@")
    else:
        url = postgres.location + "?password=hunter2"
    with pytest.raises(StateDirInUseError) as caught:
        PostgresMailboxStore(url, wait_for_lock=0)
    assert "hunter2" not in str(caught.value)


@pytest.mark.timeout(90)
def test_the_cli_refuses_a_corrupt_database_with_a_clean_error(
    postgres: _Engine, tmp_path: Path
) -> None:
    """``sanctorum host --database`` on a database whose sealed state holds a NULL: one
    ``error:`` line (as for every state error), no traceback, no password."""
    postgres.open().close()
    postgres.operator("ALTER TABLE sealed_journal ALTER COLUMN blob DROP NOT NULL")
    postgres.operator(
        "INSERT INTO sealed_journal (commit_number, snapshot, blob) VALUES (1, TRUE, NULL)"
    )
    url = postgres.location.replace("postgres@", "postgres:hunter2@")
    enclaves = str(_REPO / "tests" / "enclaves")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sanctorum",
            "host",
            "--mock",
            "behaviour_enclave:Recorder",
            "--state-dir",
            str(tmp_path / "state"),
            "--port",
            "0",
            "--database",
            url,
        ],
        capture_output=True,
        text=True,
        cwd=_REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(_REPO), enclaves])},
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "error:" in result.stderr
