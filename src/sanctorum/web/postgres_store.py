"""The web host's mailbox and sealed state in PostgreSQL (``sanctorum host --database``).

The same contract as the SQLite engine (:mod:`sanctorum.web.store`): one transaction per call,
committed before the call's reply is handed out, so a host killed at any point leaves the last
call either wholly stored or not at all. The database is as untrusted as the host: it holds
only sealed state, mail sealed to clients, and attestations anyone may read. Nothing it holds
or answers crashes or hangs the host: every failure is an :class:`EnclaveStateError` (which the
web host answers with 503 and Retry-After), every value read is checked, every statement has a
time limit, and a lost connection is made again on the next use.

One host serves a database at a time. Each of its two connections (the writer, for calls; the
reader, for polls) holds an advisory lock of its own for as long as it lives, and a host needs
both to start: a second host cannot get in while either connection of the first is alive, and
a host that cannot take its lock again after a lost connection stops serving the database.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from sanctorum.common.commands import MailCommand
from sanctorum.common.errors import EnclaveStateError, StateDirInUseError
from sanctorum.web.store import apply_commands

SCHEMA_VERSION = 1
# Any 64-bit numbers: the advisory locks of this schema in the database's shared lock space.
_WRITER_LOCK = 0x53414E43544F5201  # "SANCTOR" 1: the connection that stores calls
_READER_LOCK = 0x53414E43544F5203  # ... and the one that hands mail out
_MIGRATION_LOCK = 0x53414E43544F5202
# libpq options of both connections: give up on a silent server, notice a dead one.
_CONNECT: dict[str, Any] = {
    "autocommit": True,
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
# Each session's own settings. A DBA's idle_session_timeout would end the host's sessions and
# its locks with them. The reader answers polls on the web host's event loop: it must never
# wait long. Dropping what a reader has opened need not wait for the disk: lost in a crash of
# the server, it is handed out again, and the reader's client refuses a mail it has opened
# (SQLite's synchronous=NORMAL gives no more). A call's commit waits for the disk.
_WRITER_SETTINGS = (
    "SET idle_session_timeout = 0",
    "SET idle_in_transaction_session_timeout = 0",
    "SET statement_timeout = '30s'",
    "SET lock_timeout = '10s'",
)
_READER_SETTINGS = (
    "SET idle_session_timeout = 0",
    "SET statement_timeout = '3s'",
    "SET lock_timeout = '1s'",
    "SET synchronous_commit TO OFF",
)

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS sanctorum_schema (
        only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS mailbox (
        id BIGSERIAL PRIMARY KEY,
        routing_hint TEXT,
        mail BYTEA NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS mailbox_by_hint ON mailbox (routing_hint, id)",
    """CREATE TABLE IF NOT EXISTS instances (
        encryption_key BYTEA PRIMARY KEY,
        attestation BYTEA NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS sealed_journal (
        commit_number BIGINT PRIMARY KEY,
        snapshot BOOLEAN NOT NULL,
        blob BYTEA NOT NULL
    )""",
]
# Routing hints are compared byte for byte (COLLATE "C"), whatever collation the column has.
_FETCH = 'SELECT id, mail FROM mailbox WHERE routing_hint COLLATE "C" = %s ORDER BY id LIMIT 1'
# Drop what the reader acknowledged (only while that very mail is still here), and fetch the
# oldest mail left. The SELECT sees the table as it was before the DELETE, so it skips what
# the DELETE dropped: every id up to the acknowledged one.
_ACKNOWLEDGE_AND_FETCH = """
WITH reader AS (SELECT %s::text AS hint, %s::bigint AS acknowledged),
dropped AS (
    DELETE FROM mailbox USING reader
    WHERE routing_hint COLLATE "C" = reader.hint AND id <= reader.acknowledged
    AND EXISTS (
        SELECT 1 FROM mailbox kept WHERE kept.routing_hint COLLATE "C" = reader.hint
        AND kept.id = reader.acknowledged
    )
    RETURNING id
)
SELECT id, mail FROM mailbox, reader
WHERE routing_hint COLLATE "C" = reader.hint
AND (NOT EXISTS (SELECT 1 FROM dropped) OR id > reader.acknowledged)
ORDER BY id LIMIT 1
"""


class _PostgresTransaction:
    def __init__(self, store: PostgresMailboxStore, cursor: Any) -> None:
        self._store = store
        self._cursor = cursor

    def record_instance(self, encryption_key: bytes, attestation: bytes) -> None:
        self._store.execute(
            self._cursor,
            "INSERT INTO instances (encryption_key, attestation) VALUES (%s, %s) "
            "ON CONFLICT (encryption_key) DO UPDATE SET attestation = EXCLUDED.attestation",
            (encryption_key, attestation),
        )

    def insert_mail(self, routing_hint: str | None, mail: bytes) -> int:
        self._store.execute(
            self._cursor,
            "INSERT INTO mailbox (routing_hint, mail) VALUES (%s, %s) RETURNING id",
            (routing_hint, mail),
        )
        return _integer(_one_row(self._cursor)[0], "a new mail's id")

    def drop_journal(self, from_commit: int, everything: bool) -> None:
        self._store.execute(
            self._cursor,
            "DELETE FROM sealed_journal WHERE commit_number >= %s OR %s",
            (from_commit, everything),
        )

    def last_commit(self) -> int | None:
        self._store.execute(self._cursor, "SELECT max(commit_number) FROM sealed_journal")
        (last,) = _one_row(self._cursor)
        return None if last is None else _integer(last, "the last commit number")

    def insert_commit(self, commit_number: int, snapshot: bool, blob: bytes) -> None:
        self._store.execute(
            self._cursor,
            "INSERT INTO sealed_journal (commit_number, snapshot, blob) VALUES (%s, %s, %s)",
            (commit_number, snapshot, blob),
        )


class _Session:
    """One connection and the advisory lock it holds; made again when it was lost."""

    def __init__(self, url: str, lock_key: int, settings: tuple[str, ...], what: str) -> None:
        self._url = url
        self._lock_key = lock_key
        self._settings = settings
        self.what = what
        self.lock = threading.Lock()
        self.connection: Any = None

    def open(self, wait_for_lock: float) -> Any:
        """The connection, made and locked now if it is not (or no longer) up."""
        if self.connection is not None and not self.connection.closed:
            return self.connection
        import psycopg

        try:
            connection = psycopg.connect(self._url, **_CONNECT)
        except psycopg.Error as error:
            raise EnclaveStateError(
                f"cannot connect to the database {_redacted(self._url)}: "
                f"{_without_password(str(error), self._url)}".strip()
            ) from None
        try:
            for setting in self._settings:
                connection.execute(setting)
            deadline = time.monotonic() + wait_for_lock
            while not _one_row(
                connection.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key,))
            )[0]:
                if time.monotonic() >= deadline:
                    raise StateDirInUseError(
                        f"the database {_redacted(self._url)} is in use by another Sanctorum "
                        "host: two hosts on one database would hand out each other's mail and "
                        "fork the enclave's state. Stop the other host, or give this one its "
                        "own database"
                    )
                time.sleep(0.05)
        except psycopg.Error as error:
            connection.close()
            raise EnclaveStateError(
                f"the database {_redacted(self._url)} refused the host's session: "
                f"{_without_password(str(error), self._url)}"
            ) from None
        except BaseException:
            connection.close()
            raise
        self.connection = connection
        return connection

    def fail(self) -> None:
        """After an error: end whatever transaction is open, or drop a connection that cannot
        (it is made again, locked, at the next use)."""
        connection = self.connection
        if connection is None or connection.closed:
            return
        try:
            if connection.info.transaction_status != 0:  # not idle
                connection.execute("ROLLBACK")
        except Exception:
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        with self.lock:
            if self.connection is not None:
                self.connection.close()  # the server releases the lock with the session


class PostgresMailboxStore:
    """The PostgreSQL engine. Thread-safe; every method is one transaction. ``url`` is a libpq
    connection string (``postgresql://user@host/db``). A host that finds the database held
    waits up to ``wait_for_lock`` seconds for it: the locks of a host that just died go when the
    server notices its connections closed."""

    def __init__(self, url: str, *, wait_for_lock: float = 5.0) -> None:
        try:
            import psycopg  # only hosts with --database need the driver
        except ImportError:
            raise EnclaveStateError(
                "a PostgreSQL database needs Sanctorum's [postgres] extra (the psycopg driver): "
                "pip install 'sanctorum[postgres]', or leave out --database to keep the "
                "mailbox in the state dir"
            ) from None
        self._writer = _Session(url, _WRITER_LOCK, _WRITER_SETTINGS, "writer")
        self._reader = _Session(url, _READER_LOCK, _READER_SETTINGS, "reader")
        self._driver_error: type[Exception] = psycopg.Error
        self._recorded_instance: bytes | None = None
        self.remote = True
        self._started = False
        self.description = f"PostgreSQL database {_redacted(url)}"
        try:
            with self._use(self._writer, wait_for_lock) as connection:
                self._migrate(connection)
                self.high_water: int = self._jump_ids(connection)
            with self._reader.lock:
                self._reader.open(wait_for_lock)
        except BaseException:
            self.close()
            raise
        self._started = True

    @property
    def _connection(self) -> Any:
        """The writer's connection (for tests that reach into it)."""
        return self._writer.connection

    def execute(
        self,
        cursor: Any,
        statement: str,
        parameters: tuple[object, ...] | dict[str, object] = (),
    ) -> None:
        """Every statement goes through here (one place to trace them, as the crash tests do)."""
        cursor.execute(statement, parameters)

    @contextlib.contextmanager
    def _use(self, session: _Session, wait_for_lock: float = 0.0) -> Iterator[Any]:
        """The session's connection, under its lock; a database failure in the block becomes
        an :class:`EnclaveStateError` and leaves the session ready for the next use."""
        with session.lock:
            connection = session.open(wait_for_lock)
            try:
                yield connection
            except self._driver_error as error:
                session.fail()
                then = (
                    "the host tries again at the next request"
                    if self._started
                    else "the host did not start"
                )
                raise EnclaveStateError(
                    f"the database failed ({session.what} connection): "
                    f"{type(error).__name__}: {_without_password(str(error), '')}; {then}"
                ) from None
            except BaseException:
                session.fail()
                raise

    @contextlib.contextmanager
    def _transaction(self, connection: Any) -> Iterator[Any]:
        """One transaction, its BEGIN and COMMIT through :meth:`execute` like the rest."""
        with connection.cursor() as cursor:
            self.execute(cursor, "BEGIN")
            yield cursor
            self.execute(cursor, "COMMIT")

    def _migrate(self, connection: Any) -> None:
        """Create the schema, or check the one found; idempotent, and safe when several
        processes start at once (they take turns under an advisory lock)."""
        with self._transaction(connection) as cursor:
            self.execute(cursor, "SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            for statement in _SCHEMA:
                self.execute(cursor, statement)
            self.execute(
                cursor,
                "INSERT INTO sanctorum_schema (version) VALUES (%s) ON CONFLICT DO NOTHING",
                (SCHEMA_VERSION,),
            )
            self.execute(cursor, "SELECT count(*), min(version) FROM sanctorum_schema")
            rows, version = _one_row(cursor)
        if rows != 1 or version != SCHEMA_VERSION:
            raise EnclaveStateError(
                f"the database holds Sanctorum's schema version {version} ({rows} rows), and "
                f"this version of Sanctorum reads version {SCHEMA_VERSION}: run the Sanctorum "
                "that wrote it, or start with a new database"
            )

    def _jump_ids(self, connection: Any) -> int:
        """Move the next mail id forward by a random amount, once per start (why: see
        :meth:`SqliteMailboxStore._jump_ids <sanctorum.web.store.SqliteMailboxStore>`)."""
        with self._transaction(connection) as cursor:
            self.execute(
                cursor,
                "SELECT setval('mailbox_id_seq', greatest("
                "(SELECT last_value FROM mailbox_id_seq), "
                "(SELECT coalesce(max(id), 0) FROM mailbox)) + %s)",
                (secrets.randbelow(1 << 32) + 1,),
            )
            (jumped,) = _one_row(cursor)
        return _integer(jumped, "the mail id sequence")

    def apply(
        self, commands: Iterable[MailCommand], instance: tuple[bytes, bytes] | None = None
    ) -> None:
        """See :meth:`MailboxStore.apply <sanctorum.web.store.MailboxStore.apply>`."""
        with self._use(self._writer) as connection, self._transaction(connection) as cursor:
            high_water = apply_commands(
                _PostgresTransaction(self, cursor),
                commands,
                instance,
                self._recorded_instance,
                self.high_water,
            )
        self.high_water = high_water
        if instance is not None:
            self._recorded_instance = instance[0]

    def attestation_of(self, encryption_key: bytes) -> bytes | None:
        """See :meth:`MailboxStore.attestation_of <sanctorum.web.store.MailboxStore>`."""
        with self._use(self._reader) as connection, connection.cursor() as cursor:
            self.execute(
                cursor,
                "SELECT attestation FROM instances WHERE encryption_key = %s",
                (encryption_key,),
            )
            row = cursor.fetchone()
        return None if row is None else _bytes(row[0], "an attestation")

    def next_mail(
        self, routing_hint: str, acknowledged: int | None, bound: int | None = None
    ) -> tuple[int, bytes] | None:
        """See :meth:`MailboxStore.next_mail <sanctorum.web.store.MailboxStore.next_mail>`.

        One statement, so one round trip, on the reader's connection (the web host polls on
        its event loop)."""
        if "\0" in routing_hint:
            return None  # no mail can be stored for it (apply_commands refuses such hints)
        honoured = acknowledged is not None and (bound is None or acknowledged <= bound)
        if honoured and not -(1 << 63) <= acknowledged < 1 << 63:  # type: ignore[operator]
            honoured = False  # beyond any id: names no mail
        with self._use(self._reader) as connection, connection.cursor() as cursor:
            if honoured:
                self.execute(cursor, _ACKNOWLEDGE_AND_FETCH, (routing_hint, acknowledged))
            else:
                self.execute(cursor, _FETCH, (routing_hint,))
            row = cursor.fetchone()
        if row is None:
            return None
        return _integer(row[0], "a mail id"), _bytes(row[1], "a mail")

    def sealed_state(self) -> tuple[bytes, ...] | None:
        """See :meth:`MailboxStore.sealed_state <sanctorum.web.store.MailboxStore>`."""
        with self._use(self._writer) as connection, connection.cursor() as cursor:
            self.execute(
                cursor,
                "SELECT blob FROM sealed_journal WHERE commit_number >= "
                "(SELECT max(commit_number) FROM sealed_journal WHERE snapshot) "
                "ORDER BY commit_number",
            )
            rows = cursor.fetchall()
        return tuple(_bytes(row[0], "a sealed state record") for row in rows) or None

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


def _one_row(cursor: Any) -> tuple[Any, ...]:
    """The row a statement that always returns one returned."""
    row: tuple[Any, ...] | None = cursor.fetchone()
    if row is None:
        raise EnclaveStateError("the database answered a query with no row")
    return row


def _bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise EnclaveStateError(
            f"the database holds {what} that is not bytes ({type(value).__name__}): its tables "
            "were altered; restore the database from a backup"
        )
    return value


def _integer(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EnclaveStateError(
            f"the database holds {what} that is not a whole number ({type(value).__name__}): "
            "its tables were altered; restore the database from a backup"
        )
    return value


def _redacted(url: str) -> str:
    """``url`` (a URL or a ``key=value`` string) without its password, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        parts = conninfo_to_dict(url)
    except Exception:
        return (
            "(a value that is neither a postgresql://USER@HOST:PORT/DB URL nor a libpq "
            "key=value string; percent-encode @ : / % in a URL's user name or password)"
        )
    parts.pop("password", None)
    return make_conninfo("", **{key: value for key, value in parts.items() if value is not None})


def _without_password(message: str, url: str) -> str:
    """libpq's ``message`` with any password of ``url`` taken out (libpq may repeat it)."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        password = conninfo_to_dict(url).get("password")
    except Exception:  # unparsable: the message names the value's form, never the value
        return "it does not parse"
    if password:
        message = message.replace(str(password), "***")
    return message
