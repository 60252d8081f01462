"""The web host's mailbox and sealed state in PostgreSQL (``sanctorum host --database``).

The same contract as the SQLite engine (:mod:`sanctorum.web.store`): one transaction per call,
committed before the call's reply is handed out, so a host killed at any point leaves the last
call either wholly stored or not at all. The database is as untrusted as the host: it holds
only sealed state, mail sealed to clients, and attestations anyone may read.

One host serves a database at a time: it holds a PostgreSQL advisory lock on its connection
for as long as it runs (released by the server when the connection ends, however the host
died), and a second host is refused, as a second host on one state dir is.
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
_HOST_LOCK = 0x53414E43544F5201  # "SANCTOR" 1: the host that serves the database
_MIGRATION_LOCK = 0x53414E43544F5202

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


_FETCH = "SELECT id, mail FROM mailbox WHERE routing_hint = %s ORDER BY id LIMIT 1"
# Drop what the reader acknowledged (only while that very mail is still here), and fetch the
# oldest mail left. The SELECT sees the table as it was before the DELETE, so it skips what
# the DELETE dropped: every id up to the acknowledged one.
_ACKNOWLEDGE_AND_FETCH = """
WITH reader AS (SELECT %s::text AS hint, %s::bigint AS acknowledged),
dropped AS (
    DELETE FROM mailbox USING reader
    WHERE routing_hint = reader.hint AND id <= reader.acknowledged
    AND EXISTS (
        SELECT 1 FROM mailbox kept WHERE kept.routing_hint = reader.hint
        AND kept.id = reader.acknowledged
    )
    RETURNING id
)
SELECT id, mail FROM mailbox, reader
WHERE routing_hint = reader.hint
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
        return int(_one_row(self._cursor)[0])

    def drop_journal(self, from_commit: int, everything: bool) -> None:
        self._store.execute(
            self._cursor,
            "DELETE FROM sealed_journal WHERE commit_number >= %s OR %s",
            (from_commit, everything),
        )

    def last_commit(self) -> int | None:
        self._store.execute(self._cursor, "SELECT max(commit_number) FROM sealed_journal")
        (last,) = _one_row(self._cursor)
        return None if last is None else int(last)

    def insert_commit(self, commit_number: int, snapshot: bool, blob: bytes) -> None:
        self._store.execute(
            self._cursor,
            "INSERT INTO sealed_journal (commit_number, snapshot, blob) VALUES (%s, %s, %s)",
            (commit_number, snapshot, blob),
        )


class PostgresMailboxStore:
    """The PostgreSQL engine. Thread-safe (one connection, used under a lock); every method is
    one transaction. ``url`` is a libpq connection string (``postgresql://user@host/db``).
    A host that finds the database held waits up to ``wait_for_lock`` seconds for it: the lock
    of a host that just died goes when the server notices its connection closed."""

    def __init__(self, url: str, *, wait_for_lock: float = 5.0) -> None:
        try:
            import psycopg  # only hosts with --database need the driver
        except ImportError:
            raise EnclaveStateError(
                "a PostgreSQL database needs Sanctorum's [postgres] extra (the psycopg driver): "
                "pip install 'sanctorum[postgres]', or leave out --database to keep the "
                "mailbox in the state dir"
            ) from None

        self._lock = threading.Lock()
        self._reader_lock = threading.Lock()
        try:
            self._connection = psycopg.connect(url, autocommit=True)
        except psycopg.Error as error:
            raise EnclaveStateError(
                f"cannot connect to the database {_redacted(url)}: {error}".strip()
            ) from None
        try:
            self._take_host_lock(url, wait_for_lock)
            self._migrate()
            self.high_water: int = self._jump_ids()
            # Polls and attestation lookups go on a connection of their own, so they never
            # wait behind a commit. Dropping what a reader has opened need not wait for the
            # disk: lost in a crash of the server, it is handed out again, and the reader's
            # client already refuses a mail it has opened (SQLite's synchronous=NORMAL gives
            # no more).
            self._reader = psycopg.connect(url, autocommit=True)
            self._reader.execute("SET synchronous_commit TO OFF")
        except BaseException:
            self._connection.close()
            raise
        self._recorded_instance: bytes | None = None

    def execute(
        self,
        cursor: Any,
        statement: str,
        parameters: tuple[object, ...] | dict[str, object] = (),
    ) -> None:
        """Every statement goes through here (one place to trace them, as the crash tests do)."""
        cursor.execute(statement, parameters)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """One transaction, its BEGIN and COMMIT through :meth:`execute` like the rest."""
        with self._connection.cursor() as cursor:
            self.execute(cursor, "BEGIN")
            try:
                yield cursor
            except BaseException:
                with contextlib.suppress(Exception):  # a lost connection: the server rolls back
                    self.execute(cursor, "ROLLBACK")
                raise
            self.execute(cursor, "COMMIT")

    def _take_host_lock(self, url: str, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            with self._connection.cursor() as cursor:
                self.execute(cursor, "SELECT pg_try_advisory_lock(%s)", (_HOST_LOCK,))
                (taken,) = _one_row(cursor)
            if taken:
                return
            if time.monotonic() >= deadline:
                raise StateDirInUseError(
                    f"the database {_redacted(url)} is in use by another Sanctorum host: two "
                    "hosts on one database would hand out each other's mail and fork the "
                    "enclave's state. Stop the other host, or give this one its own database"
                )
            time.sleep(0.05)

    def _migrate(self) -> None:
        """Create the schema, or check the one found; idempotent, and safe when several
        processes start at once (they take turns under an advisory lock)."""
        with self._transaction() as cursor:
            self.execute(cursor, "SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            for statement in _SCHEMA:
                self.execute(cursor, statement)
            self.execute(
                cursor,
                "INSERT INTO sanctorum_schema (version) VALUES (%s) ON CONFLICT DO NOTHING",
                (SCHEMA_VERSION,),
            )
            self.execute(cursor, "SELECT version FROM sanctorum_schema")
            (version,) = _one_row(cursor)
        if version != SCHEMA_VERSION:
            raise EnclaveStateError(
                f"the database holds Sanctorum's schema version {version}, and this version of "
                f"Sanctorum reads version {SCHEMA_VERSION}: run the Sanctorum that wrote it, or "
                "start with a new database"
            )

    def _jump_ids(self) -> int:
        """Move the next mail id forward by a random amount, once per start (why: see
        :meth:`SqliteMailboxStore._jump_ids <sanctorum.web.store.SqliteMailboxStore>`)."""
        with self._transaction() as cursor:
            self.execute(
                cursor,
                "SELECT setval('mailbox_id_seq', greatest("
                "(SELECT last_value FROM mailbox_id_seq), "
                "(SELECT coalesce(max(id), 0) FROM mailbox)) + %s)",
                (secrets.randbelow(1 << 32) + 1,),
            )
            (jumped,) = _one_row(cursor)
        return int(jumped)

    def apply(
        self, commands: Iterable[MailCommand], instance: tuple[bytes, bytes] | None = None
    ) -> None:
        """See :meth:`MailboxStore.apply <sanctorum.web.store.MailboxStore.apply>`."""
        with self._lock:
            # Pipelined: statements go out without waiting for each answer, so a call's
            # transaction costs a round trip per result it reads, not one per statement.
            with self._connection.pipeline(), self._transaction() as cursor:
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
        with self._reader_lock, self._reader.cursor() as cursor:
            self.execute(
                cursor,
                "SELECT attestation FROM instances WHERE encryption_key = %s",
                (encryption_key,),
            )
            row = cursor.fetchone()
        return None if row is None else bytes(row[0])

    def next_mail(
        self, routing_hint: str, acknowledged: int | None, bound: int | None = None
    ) -> tuple[int, bytes] | None:
        """See :meth:`MailboxStore.next_mail <sanctorum.web.store.MailboxStore.next_mail>`.

        One statement, so one round trip, on the reader's connection (the web host polls on
        its event loop)."""
        with self._reader_lock, self._reader.cursor() as cursor:
            if acknowledged is not None and (bound is None or acknowledged <= bound):
                self.execute(cursor, _ACKNOWLEDGE_AND_FETCH, (routing_hint, acknowledged))
            else:
                self.execute(cursor, _FETCH, (routing_hint,))
            row = cursor.fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def sealed_state(self) -> tuple[bytes, ...] | None:
        """See :meth:`MailboxStore.sealed_state <sanctorum.web.store.MailboxStore>`."""
        with self._lock, self._connection.cursor() as cursor:
            self.execute(
                cursor,
                "SELECT blob FROM sealed_journal WHERE commit_number >= "
                "(SELECT max(commit_number) FROM sealed_journal WHERE snapshot) "
                "ORDER BY commit_number",
            )
            rows = cursor.fetchall()
        return tuple(bytes(row[0]) for row in rows) or None

    def close(self) -> None:
        with self._lock, self._reader_lock:
            self._reader.close()
            self._connection.close()  # the server releases the host lock with the session


def _one_row(cursor: Any) -> tuple[Any, ...]:
    """The row a statement that always returns one returned."""
    row: tuple[Any, ...] | None = cursor.fetchone()
    if row is None:  # pragma: no cover - PostgreSQL returns a row for each of them
        raise EnclaveStateError("the database answered a query with no row")
    return row


def _redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unreadable URL)"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
