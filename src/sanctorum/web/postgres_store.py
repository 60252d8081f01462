"""The web host's mailbox and sealed state in PostgreSQL (``sanctorum host --database``).

The same contract as the SQLite engine (:mod:`sanctorum.web.store`): one transaction per call,
committed before the call's reply is handed out, so a host killed at any point leaves the last
call either wholly stored or not at all. The database is as untrusted as the host: it holds
only sealed state, mail sealed to clients, and attestations anyone may read. Nothing it holds
or answers crashes or hangs the host: every failure is an :class:`EnclaveStateError` (which the
web host answers with 503 and Retry-After), every value read is checked, every statement has a
time limit, and a lost connection is made again on the next use.

Several hosts may serve one database (:mod:`sanctorum.web.cluster`). The service's state is
split into partitions, each with its own sealed journal; a host serves a partition while it
holds the partition's *lease*, a row with a holder, an expiry and a fencing token. A call's
commit checks, in its own transaction, that the token is still the holder's and the lease
unexpired: a host that lost its lease cannot commit. Each host also holds an advisory lock for
as long as its lease session lives, so when a host dies its leases are taken over at once,
without waiting for them to expire; a host that hangs loses them when they expire.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sanctorum.common.commands import MailCommand, PostMail
from sanctorum.common.errors import (
    EnclaveStateError,
    LeaseLostError,
    MailPendingError,
    StateDirInUseError,
)
from sanctorum.web.partitions import MAX_PARTITIONS
from sanctorum.web.store import apply_commands

SCHEMA_VERSION = 2
DEFAULT_LEASE_TIME = 10.0
"""Seconds a lease lasts unless renewed (``sanctorum host --lease-time``)."""
_MIGRATION_LOCK = 0x53414E43544F5202  # any 64-bit number: this schema's, in the shared space
# The advisory lock that says a host is alive: this class ("SANH", the high 32 bits, as
# pg_locks shows them) and a random low half per host process.
_HOST_LOCK_CLASS = 0x53414E48
_INBOX_CHANNEL = "sanctorum_inbox"  # payload: a partition with new mail in the inbox
_OUTCOME_CHANNEL = "sanctorum_outcome"  # payload: an inbox mail that was handled
# libpq options of every connection: give up on a silent server, notice a dead one.
_CONNECT: dict[str, Any] = {
    "autocommit": True,
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
# Each session's own settings. A DBA's idle_session_timeout would end the host's sessions and
# its host lock with them. The reader answers polls: it must never wait long. Dropping what a
# reader has opened need not wait for the disk: lost in a crash of the server, it is handed out
# again, and the reader's client refuses a mail it has opened (SQLite's synchronous=NORMAL
# gives no more); nor need an inbox mail, whose receiving host answers only once it was
# handled. A call's commit waits for the disk.


def _writer_settings(lease_time: float) -> tuple[str, ...]:
    """A commit holds its lease's row (so no host takes the partition over mid-commit), and
    with it the renewal of the lease: its statements must end well within the lease."""
    return (
        "SET idle_session_timeout = 0",
        "SET idle_in_transaction_session_timeout = 0",
        f"SET statement_timeout = {round(min(30.0, lease_time / 2) * 1000)}",
        f"SET lock_timeout = {round(min(10.0, lease_time / 4) * 1000)}",
    )


_READER_SETTINGS = (
    "SET idle_session_timeout = 0",
    "SET statement_timeout = '3s'",
    "SET lock_timeout = '1s'",
    "SET synchronous_commit TO OFF",
)
_SENDER_SETTINGS = (
    "SET idle_session_timeout = 0",
    "SET statement_timeout = '10s'",
    "SET lock_timeout = '5s'",
    "SET synchronous_commit TO OFF",
)
_LEASE_SETTINGS = (
    "SET idle_session_timeout = 0",
    "SET idle_in_transaction_session_timeout = 0",
    "SET statement_timeout = '5s'",
    "SET lock_timeout = '2s'",
)

_TABLES = [
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
        partition INTEGER NOT NULL DEFAULT 0,
        commit_number BIGINT NOT NULL,
        snapshot BOOLEAN NOT NULL,
        blob BYTEA NOT NULL,
        PRIMARY KEY (partition, commit_number)
    )""",
    """CREATE TABLE IF NOT EXISTS leases (
        partition INTEGER PRIMARY KEY,
        holder TEXT,
        host_lock BIGINT,
        token BIGINT NOT NULL DEFAULT 0,
        expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
        instance_key BYTEA
    )""",
    """CREATE TABLE IF NOT EXISTS inbox (
        id BIGSERIAL PRIMARY KEY,
        partition INTEGER NOT NULL,
        routing_hint TEXT NOT NULL,
        mail BYTEA NOT NULL,
        error TEXT,
        message TEXT,
        handled_at TIMESTAMPTZ
    )""",
    "CREATE INDEX IF NOT EXISTS inbox_by_partition ON inbox (partition, id)",
    # Each host's heartbeat, renewed with its leases (even when it holds none).
    """CREATE TABLE IF NOT EXISTS hosts (
        host_lock BIGINT PRIMARY KEY,
        name TEXT NOT NULL,
        seen_at TIMESTAMPTZ NOT NULL
    )""",
]
# Version 1 (one host per database) kept one journal: it becomes partition 0's.
_FROM_VERSION_1 = [
    "ALTER TABLE sanctorum_schema ADD COLUMN IF NOT EXISTS partitions INTEGER",
    "UPDATE sanctorum_schema SET partitions = 1",
    "ALTER TABLE sealed_journal ADD COLUMN IF NOT EXISTS partition INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE sealed_journal DROP CONSTRAINT IF EXISTS sealed_journal_pkey",
    "ALTER TABLE sealed_journal ADD PRIMARY KEY (partition, commit_number)",
]
# Routing hints are compared byte for byte (COLLATE "C"), whatever collation the column has.
_FETCH = 'SELECT id, mail FROM mailbox WHERE routing_hint COLLATE "C" = %s ORDER BY id LIMIT 1'
_ACKNOWLEDGE = """
DELETE FROM mailbox WHERE routing_hint COLLATE "C" = %(hint)s AND id <= %(acknowledged)s
AND EXISTS (
    SELECT 1 FROM mailbox kept WHERE kept.routing_hint COLLATE "C" = %(hint)s
    AND kept.id = %(acknowledged)s
)
"""
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
# A lease another host may take: never taken, run out, or its holder's host lock gone (the
# server ends a session's locks when its process dies).
_TAKEABLE = """(
    leases.holder IS NULL OR leases.expires_at <= clock_timestamp() OR NOT EXISTS (
        SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND classid::bigint = leases.host_lock >> 32
        AND objid::bigint = leases.host_lock & 4294967295
    )
)"""
# The hosts that share the partitions: alive (their host lock is held) and not hung (their
# heartbeat is younger than a lease). A hung host's leases run out, and it is not counted, so
# the others' shares grow to take its partitions.
_SURVEY = f"""
SELECT (
    SELECT count(*) FROM hosts
    WHERE seen_at > clock_timestamp() - %(seconds)s * interval '1 second' AND EXISTS (
        SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND classid::bigint = {_HOST_LOCK_CLASS}
        AND classid::bigint = hosts.host_lock >> 32
        AND objid::bigint = hosts.host_lock & 4294967295
    )
), array(
    SELECT partition FROM leases
    WHERE partition >= 0 AND partition < %(partitions)s AND {_TAKEABLE}
    ORDER BY partition
)
"""  # noqa: S608 (built from this module's constants only)
_TAKE = f"""
UPDATE leases SET holder = %(holder)s, host_lock = %(host_lock)s, token = token + 1,
    expires_at = clock_timestamp() + %(seconds)s * interval '1 second', instance_key = NULL
WHERE partition = %(partition)s AND {_TAKEABLE}
RETURNING token
"""  # noqa: S608 (built from this module's constants only)
_HOLDER = "SELECT holder FROM leases WHERE partition = %s"
_HEARTBEAT = """
INSERT INTO hosts (host_lock, name, seen_at) VALUES (%s, %s, clock_timestamp())
ON CONFLICT (host_lock) DO UPDATE SET seen_at = EXCLUDED.seen_at
"""
_RENEW = """
UPDATE leases SET expires_at = clock_timestamp() + %s * interval '1 second'
FROM unnest(%s::integer[], %s::bigint[]) AS mine(partition, token)
WHERE leases.partition = mine.partition AND leases.token = mine.token
RETURNING leases.partition
"""
_RELEASE = """
UPDATE leases SET holder = NULL, host_lock = NULL, expires_at = '-infinity', instance_key = NULL
WHERE partition = %s AND token = %s
"""
# In the transaction of a call's commit, before anything else: the lease row stays locked
# (FOR SHARE) until the commit, so a host taking the partition over waits for it, then reads
# the journal with this commit in it.
_FENCE = """
SELECT 1 FROM leases
WHERE partition = %(partition)s AND token = %(token)s AND expires_at > clock_timestamp()
FOR SHARE
"""
# The same, and the acknowledgement the delivery came with (one round trip): before the call's
# new mail is inserted, so it cannot name the delivery's answer.
_FENCE_AND_ACKNOWLEDGE = f"""
WITH dropped AS ({_ACKNOWLEDGE})
{_FENCE}
"""
# A call whose only command is one reply (the common call), in one statement, so one round
# trip and one transaction: the lease checked and locked, the delivery's acknowledgement, the
# reply inserted (only under the lease, and only if the id sequence was not set back below the
# ids handed out), and the reader's oldest mail read, which the statement's own changes hide:
# hence the union with what it inserts and the exclusion of what it dropped.
_REPLY = f"""
WITH fence AS ({_FENCE}),
dropped AS (
    DELETE FROM mailbox
    WHERE EXISTS (SELECT 1 FROM fence)
    AND routing_hint COLLATE "C" = %(hint)s AND id <= %(acknowledged)s
    AND EXISTS (
        SELECT 1 FROM mailbox kept WHERE kept.routing_hint COLLATE "C" = %(hint)s
        AND kept.id = %(acknowledged)s
    )
    RETURNING id
),
posted AS (
    INSERT INTO mailbox (routing_hint, mail)
    SELECT %(to)s, %(mail)s FROM fence
    WHERE (SELECT last_value FROM mailbox_id_seq) >= %(high_water)s
    RETURNING id, routing_hint, mail
)
SELECT (SELECT count(*) FROM fence), (SELECT id FROM posted), oldest.id, oldest.mail
FROM (SELECT 1) AS one LEFT JOIN LATERAL (
    SELECT id, mail FROM mailbox
    WHERE routing_hint COLLATE "C" = %(hint)s AND id NOT IN (SELECT id FROM dropped)
    UNION ALL
    SELECT id, mail FROM posted WHERE routing_hint COLLATE "C" = %(hint)s
    ORDER BY id LIMIT 1
) AS oldest ON TRUE
"""  # noqa: S608 (built from this module's constants only)
_HOLDING = """EXISTS (
    SELECT 1 FROM leases WHERE partition = %(partition)s AND token = %(token)s
    AND expires_at > clock_timestamp()
)"""
_ANNOUNCE = """
WITH held AS (
    UPDATE leases SET instance_key = %(key)s
    WHERE partition = %(partition)s AND token = %(token)s AND expires_at > clock_timestamp()
    RETURNING 1
)
INSERT INTO instances (encryption_key, attestation)
SELECT %(key)s, %(attestation)s WHERE EXISTS (SELECT 1 FROM held)
ON CONFLICT (encryption_key) DO UPDATE SET attestation = EXCLUDED.attestation
RETURNING 1
"""
_PARTITION_ATTESTATION = """
SELECT attestation FROM leases JOIN instances ON encryption_key = instance_key
WHERE (partition = %(partition)s OR %(partition)s IS NULL) AND expires_at > clock_timestamp()
ORDER BY partition LIMIT 1
"""
_ENQUEUE = f"""
WITH dropped AS ({_ACKNOWLEDGE}),
queued AS (
    INSERT INTO inbox (partition, routing_hint, mail)
    VALUES (%(partition)s, %(hint)s, %(mail)s) RETURNING id
)
SELECT id, pg_notify('{_INBOX_CHANNEL}', %(partition)s::text) FROM queued
"""  # noqa: S608 (built from this module's constants only)
_OUTCOME = "SELECT error, message FROM inbox WHERE id = %s"  # error '' once handled
_FORGET = "DELETE FROM inbox WHERE id = %s"
_QUEUED = """
SELECT id, routing_hint, mail FROM inbox WHERE partition = %s AND error IS NULL
ORDER BY id LIMIT 64
"""
_CONSUME = f"""
WITH handled AS (
    UPDATE inbox SET error = '', handled_at = clock_timestamp()
    WHERE id = %(id)s AND {_HOLDING} RETURNING id
)
SELECT pg_notify('{_OUTCOME_CHANNEL}', id::text) FROM handled
"""  # noqa: S608 (built from this module's constants only)
# In a call's commit that answers an inbox mail (the lease is checked by then).
_CONSUME_IN_COMMIT = f"""
WITH handled AS (
    UPDATE inbox SET error = '', handled_at = clock_timestamp() WHERE id = %s RETURNING id
)
SELECT pg_notify('{_OUTCOME_CHANNEL}', id::text) FROM handled
"""  # noqa: S608 (built from this module's constants only)
# A handled inbox mail waits ten minutes for its receiving host to pass the outcome on.
_REFUSE = f"""
WITH refused AS (
    UPDATE inbox SET error = %(error)s, message = %(message)s, handled_at = clock_timestamp()
    WHERE id = %(id)s AND {_HOLDING} RETURNING id
)
SELECT pg_notify('{_OUTCOME_CHANNEL}', id::text) FROM refused
"""  # noqa: S608 (built from this module's constants only)
_SWEEP = """
WITH hosts_gone AS (DELETE FROM hosts WHERE seen_at < clock_timestamp() - interval '1 day')
DELETE FROM inbox WHERE handled_at < clock_timestamp() - interval '10 minutes'
"""


class _Session:
    """One connection, made again at the next use when it was lost; with ``lock_key``, it
    holds that advisory lock for as long as it lives (taken again when it is made again)."""

    def __init__(
        self, url: str, settings: tuple[str, ...], what: str, lock_key: int | None = None
    ) -> None:
        self._url = url
        self._settings = settings
        self._lock_key = lock_key
        self.what = what
        self.lock = threading.Lock()
        self.connection: Any = None

    def open(self) -> Any:
        """The connection, made now if it is not (or no longer) up."""
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
            if self._lock_key is not None:
                # Not taken only while the server still keeps the lost session that held it:
                # the host is alive as far as other hosts can tell, which is the truth.
                connection.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key,))
        except psycopg.Error as error:
            connection.close()
            raise EnclaveStateError(
                f"the database {_redacted(self._url)} refused the host's session: "
                f"{_without_password(str(error), self._url)}"
            ) from None
        self.connection = connection
        return connection

    def fail(self) -> None:
        """After an error: end whatever transaction is open, or drop a connection that cannot
        (it is made again at the next use)."""
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


@dataclass
class _Lease:
    token: int
    deadline: float  # time.monotonic() by which it runs out, as far as this host knows
    on_lost: Callable[[int], None] | None


Statement = Callable[..., None]  # (cursor, statement, parameters=())


class PostgresDatabase:
    """One host's connection to a PostgreSQL database that holds a service's mailbox, sealed
    state and leases; thread-safe. Creates or upgrades the schema on start (idempotently, one
    host at a time). ``partitions`` is the service's partition count: fixed when the database
    is made (None: what the database holds, or 1 for a new one). A lease runs out
    ``lease_time`` seconds after it was last renewed; a thread renews the leases held."""

    def __init__(
        self,
        url: str,
        *,
        partitions: int | None = None,
        lease_time: float = DEFAULT_LEASE_TIME,
        name: str | None = None,
    ) -> None:
        try:
            import psycopg  # only hosts with --database need the driver
        except ImportError:
            raise EnclaveStateError(
                "a PostgreSQL database needs Sanctorum's [postgres] extra (the psycopg driver): "
                "pip install 'sanctorum[postgres]', or leave out --database to keep the "
                "mailbox in the state dir"
            ) from None
        if partitions is not None and not 1 <= partitions <= MAX_PARTITIONS:
            raise EnclaveStateError(
                f"a service has 1 to {MAX_PARTITIONS} partitions, not {partitions}"
            )
        if not 1.0 <= lease_time <= 3600:
            raise EnclaveStateError(
                f"a lease lasts 1 to 3600 seconds, not {lease_time:g}: shorter, and a slow "
                "database round trip would lose it; longer, and a hung host's partitions wait "
                "that long for another host"
            )
        self.url = url
        self.lease_time = lease_time
        self.name = name or f"{socket.gethostname()} pid {os.getpid()}"
        self.host_lock = (_HOST_LOCK_CLASS << 32) | secrets.randbits(31)
        self._driver_error: type[Exception] = psycopg.Error
        self._lease_session = _Session(url, _LEASE_SETTINGS, "lease", self.host_lock)
        self._sender = _Session(url, _SENDER_SETTINGS, "sender")
        self._reader = _Session(url, _READER_SETTINGS, "reader")
        self._listener = _Session(url, (), "listener")
        self._held: dict[int, _Lease] = {}
        self._held_lock = threading.Lock()
        self._closed = threading.Event()
        self._started = False
        self.description = f"PostgreSQL database {_redacted(url)}"
        try:
            with self.use(self._lease_session) as connection:
                self.partitions: int = self._migrate(connection, partitions)
                self.high_water: int = self._jump_ids(connection)
            self._query(self._lease_session, _HEARTBEAT, (self.host_lock, self.name))
            for session in (self._sender, self._reader):
                with self.use(session):
                    pass  # connect now: a host that cannot, does not start
        except BaseException:
            self.close()
            raise
        self._started = True
        self._renewer = threading.Thread(target=self._renew_leases, name="lease-renewal")
        self._renewer.daemon = True
        self._renewer.start()

    def execute(
        self, cursor: Any, statement: str, parameters: tuple[object, ...] | dict[str, object] = ()
    ) -> None:
        """Every statement of the database's own sessions goes through here."""
        cursor.execute(statement, parameters)

    @contextlib.contextmanager
    def use(self, session: _Session) -> Iterator[Any]:
        """The session's connection, under its lock; a database failure in the block becomes
        an :class:`EnclaveStateError` and leaves the session ready for the next use."""
        with session.lock:
            connection = session.open()
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

    def _query(
        self,
        session: _Session,
        statement: str,
        parameters: tuple[object, ...] | dict[str, object] = (),
    ) -> list[tuple[Any, ...]]:
        """One statement (one transaction: the sessions autocommit); the rows it returned."""
        with self.use(session) as connection, connection.cursor() as cursor:
            self.execute(cursor, statement, parameters)
            return cursor.fetchall() if cursor.description is not None else []

    def _migrate(self, connection: Any, partitions: int | None) -> int:
        """Create the schema, upgrade an older one, or check the one found; idempotent, and
        safe when several hosts start at once (they take turns under an advisory lock). The
        partition count, which cannot change once there is state."""
        with _transaction(connection, self.execute) as cursor:
            self.execute(cursor, "SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            self.execute(
                cursor,
                """CREATE TABLE IF NOT EXISTS sanctorum_schema (
                    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
                    version INTEGER NOT NULL,
                    partitions INTEGER
                )""",
            )
            self.execute(cursor, "SELECT count(*), min(version) FROM sanctorum_schema")
            rows, version = _one_row(cursor)
            if rows == 0:
                self.execute(
                    cursor,
                    "INSERT INTO sanctorum_schema (version, partitions) VALUES (%s, %s)",
                    (SCHEMA_VERSION, partitions or 1),
                )
            elif rows == 1 and version == 1:
                for statement in _FROM_VERSION_1:
                    self.execute(cursor, statement)
                self.execute(cursor, "UPDATE sanctorum_schema SET version = %s", (SCHEMA_VERSION,))
            elif rows != 1 or version != SCHEMA_VERSION:
                raise EnclaveStateError(
                    f"the database holds Sanctorum's schema version {version} ({rows} rows), "
                    f"and this version of Sanctorum reads version {SCHEMA_VERSION}: run the "
                    "Sanctorum that wrote it, or start with a new database"
                )
            for statement in _TABLES:
                self.execute(cursor, statement)
            self.execute(cursor, "SELECT partitions FROM sanctorum_schema")
            (found,) = _one_row(cursor)
            if isinstance(found, bool) or not isinstance(found, int):
                found = 0
            if not 1 <= found <= MAX_PARTITIONS:
                raise EnclaveStateError(
                    f"the database says the service has {found} partitions, not 1 to "
                    f"{MAX_PARTITIONS}: its tables were altered; restore it from a backup"
                )
            if partitions is not None and partitions != found:
                raise EnclaveStateError(
                    f"the database holds a service of {found} partition"
                    f"{'' if found == 1 else 's'}, not {partitions}: a client's partition "
                    "follows from the count, so it cannot change while the database holds "
                    "state. Leave out --partitions, or start with a new database"
                )
            self.execute(
                cursor,
                "INSERT INTO leases (partition) SELECT generate_series(0, %s - 1) "
                "ON CONFLICT DO NOTHING",
                (found,),
            )
        return found

    def _jump_ids(self, connection: Any) -> int:
        """Move the next mail id forward by a random amount, once per start (why: see
        :meth:`SqliteMailboxStore._jump_ids <sanctorum.web.store.SqliteMailboxStore>`)."""
        with _transaction(connection, self.execute) as cursor:
            self.execute(
                cursor,
                "SELECT setval('mailbox_id_seq', greatest("
                "(SELECT last_value FROM mailbox_id_seq), "
                "(SELECT coalesce(max(id), 0) FROM mailbox)) + %s)",
                (secrets.randbelow(1 << 32) + 1,),
            )
            (jumped,) = _one_row(cursor)
        return _integer(jumped, "the mail id sequence")

    # -- leases --------------------------------------------------------------------------------

    def survey(self) -> tuple[int, list[int]]:
        """How many hosts serve the database now (this one included), and the partitions a
        host may take."""
        ((live, takeable),) = self._query(
            self._lease_session,
            _SURVEY,
            {"seconds": self.lease_time, "partitions": self.partitions},
        )
        if not isinstance(takeable, list):
            raise EnclaveStateError("the database answered the lease survey with no list")
        return max(_integer(live, "a count of hosts"), 1), [
            _integer(partition, "a partition") for partition in takeable
        ]

    def take(self, partition: int, on_lost: Callable[[int], None] | None = None) -> int | None:
        """Take the lease of ``partition`` if it is free; its fencing token, or None. Should
        the lease be lost (renewal finds it taken, or a commit is refused), ``on_lost`` is
        called with the partition, on whichever thread found out."""
        if not 0 <= partition < self.partitions:
            return None  # a row the database should not have
        began = time.monotonic()
        rows = self._query(
            self._lease_session,
            _TAKE,
            {
                "holder": self.name,
                "host_lock": self.host_lock,
                "seconds": self.lease_time,
                "partition": partition,
            },
        )
        if not rows:
            return None
        token = _integer(rows[0][0], "a lease's token")
        with self._held_lock:
            self._held[partition] = _Lease(token, began + self.lease_time, on_lost)
        return token

    def take_waiting(self, partition: int, wait: float) -> int:
        """:meth:`take`, trying for up to ``wait`` seconds; :class:`StateDirInUseError` if
        another host kept the lease."""
        deadline = time.monotonic() + wait
        while True:
            token = self.take(partition)
            if token is not None:
                return token
            if time.monotonic() >= deadline:
                rows = self._query(self._lease_session, _HOLDER, (partition,))
                holder = str(rows[0][0]) if rows else "another host"
                raise StateDirInUseError(
                    f"the database {_redacted(self.url)} is in use by another Sanctorum host "
                    f"({holder}), which holds partition {partition}: two hosts serving one "
                    "partition would hand out each other's mail and fork the enclave's state. "
                    "Stop the other host, serve the database with `sanctorum host --database` "
                    "on every host (they share the partitions), or give this one its own "
                    "database"
                )
            time.sleep(0.05)

    def holds(self, partition: int, token: int) -> bool:
        """Whether this host's lease of ``partition`` with ``token`` has not run out, as far as
        this host knows (a commit checks it again, in the database)."""
        with self._held_lock:
            lease = self._held.get(partition)
            return lease is not None and lease.token == token and time.monotonic() < lease.deadline

    def held(self) -> dict[int, int]:
        """The partitions this host holds, with their tokens."""
        with self._held_lock:
            return {partition: lease.token for partition, lease in self._held.items()}

    def lost(self, partition: int, token: int) -> None:
        """The lease of ``partition`` with ``token`` is gone: forget it and say so."""
        with self._held_lock:
            lease = self._held.get(partition)
            if lease is None or lease.token != token:
                return
            del self._held[partition]
        if lease.on_lost is not None:
            lease.on_lost(partition)

    def release(self, partition: int, token: int) -> None:
        """Give the lease up (another host may take it at once)."""
        with self._held_lock:
            lease = self._held.get(partition)
            if lease is not None and lease.token == token:
                del self._held[partition]
        self._query(self._lease_session, _RELEASE, (partition, token))

    def renew(self) -> None:
        """Renew every lease held, and this host's heartbeat; leases found taken over are
        :meth:`lost`."""
        self._query(self._lease_session, _HEARTBEAT, (self.host_lock, self.name))
        held = self.held()
        if not held:
            return
        began = time.monotonic()
        rows = self._query(
            self._lease_session,
            _RENEW,
            (self.lease_time, list(held), list(held.values())),
        )
        renewed = {_integer(row[0], "a partition") for row in rows}
        with self._held_lock:
            for partition in renewed:
                lease = self._held.get(partition)
                if lease is not None and lease.token == held[partition]:
                    lease.deadline = began + self.lease_time
        for partition, token in held.items():
            if partition not in renewed:
                self.lost(partition, token)

    def _renew_leases(self) -> None:
        sweeps = itertools.count()
        pause = self.lease_time / 4
        while not self._closed.wait(pause):
            try:
                self.renew()
                if next(sweeps) % 240 == 0:
                    self._query(self._sender, _SWEEP)
            except EnclaveStateError:
                pause = min(0.5, self.lease_time / 4)  # a blocked or lost session: soon again
            else:
                pause = self.lease_time / 4

    def announce(
        self, partition: int, token: int, encryption_key: bytes, attestation: bytes
    ) -> None:
        """Record the instance that now serves ``partition``: hosts that do not hold it hand
        its attestation to the partition's clients. :class:`LeaseLostError` if the lease is
        gone."""
        rows = self._query(
            self._sender,
            _ANNOUNCE,
            {
                "key": encryption_key,
                "attestation": attestation,
                "partition": partition,
                "token": token,
            },
        )
        if not rows:
            self.lost(partition, token)
            raise LeaseLostError(
                f"this host's lease of partition {partition} ran out or was taken over before "
                "its enclave instance started: another host serves the partition"
            )

    # -- mail ----------------------------------------------------------------------------------

    def partition_attestation(self, partition: int | None) -> bytes | None:
        """The attestation of the instance that serves ``partition`` (None: any partition), as
        its holder recorded it; None if no host serves it now."""
        rows = self._query(self._reader, _PARTITION_ATTESTATION, {"partition": partition})
        return _bytes(rows[0][0], "an attestation") if rows else None

    def attestation_of(self, encryption_key: bytes) -> bytes | None:
        """See :meth:`MailboxStore.attestation_of <sanctorum.web.store.MailboxStore>`."""
        rows = self._query(
            self._reader,
            "SELECT attestation FROM instances WHERE encryption_key = %s",
            (encryption_key,),
        )
        return _bytes(rows[0][0], "an attestation") if rows else None

    def next_mail(
        self, routing_hint: str, acknowledged: int | None, bound: int | None = None
    ) -> tuple[int, bytes] | None:
        """See :meth:`MailboxStore.next_mail <sanctorum.web.store.MailboxStore.next_mail>`.

        One statement, so one round trip, on the reader's connection."""
        if "\0" in routing_hint:
            return None  # no mail can be stored for it (apply_commands refuses such hints)
        honoured = acknowledged is not None and (bound is None or acknowledged <= bound)
        if honoured and not -(1 << 63) <= acknowledged < 1 << 63:  # type: ignore[operator]
            honoured = False  # beyond any id: names no mail
        if honoured:
            rows = self._query(self._reader, _ACKNOWLEDGE_AND_FETCH, (routing_hint, acknowledged))
        else:
            rows = self._query(self._reader, _FETCH, (routing_hint,))
        if not rows:
            return None
        return _mail(rows[0])

    def acknowledge(self, routing_hint: str, acknowledged: int) -> None:
        """Drop the mail of ``routing_hint`` up to ``acknowledged`` (while that very mail is
        still here), before a delivery: so the acknowledgement cannot name its answer."""
        if "\0" in routing_hint or not 0 <= acknowledged < 1 << 63:
            return
        self._query(
            self._reader, _ACKNOWLEDGE, {"hint": routing_hint, "acknowledged": acknowledged}
        )

    def enqueue(
        self, partition: int, routing_hint: str, mail: bytes, acknowledged: int | None
    ) -> int:
        """Put a mail for ``partition`` in the inbox, for the host that holds it, and wake that
        host; the mail's inbox id. The acknowledgement is handled as in :meth:`acknowledge`."""
        if "\0" in routing_hint:
            raise EnclaveStateError("a routing hint holding a NUL byte names no reader")
        if acknowledged is not None and not 0 <= acknowledged < 1 << 63:
            acknowledged = None
        rows = self._query(
            self._sender,
            _ENQUEUE,
            {
                "partition": partition,
                "hint": routing_hint,
                "mail": mail,
                "acknowledged": acknowledged,
            },
        )
        if not rows:
            raise EnclaveStateError("the database did not keep a mail put in the inbox")
        return _integer(rows[0][0], "an inbox id")

    def outcome(self, inbox_id: int) -> tuple[str, str | None] | None:
        """What became of an inbox mail: None while it waits; ``("", None)`` once it was
        handled; ``(error code, message)`` if the enclave refused it. The row stays until
        :meth:`forget`; :class:`MailPendingError` if it is gone (someone else deleted it: the
        outcome is unknown)."""
        rows = self._query(self._sender, _OUTCOME, (inbox_id,))
        if not rows:
            raise MailPendingError(
                "the mail put in the database for the host serving its partition is no longer "
                "there, and its outcome is unknown (the database lost or dropped it): send it "
                "again"
            )
        error, message = rows[0]
        if error is None:
            return None
        return str(error), None if message is None else str(message)

    def forget(self, inbox_id: int) -> None:
        """Drop an inbox mail whose refusal was passed on."""
        self._query(self._sender, _FORGET, (inbox_id,))

    def queued(self, partition: int) -> list[tuple[int, str | None, bytes | None]]:
        """The oldest mail waiting in ``partition``'s inbox (up to 64), oldest first; a row
        whose routing hint or mail is not what the host stored has None in its place."""
        queued: list[tuple[int, str | None, bytes | None]] = []
        for row in self._query(self._sender, _QUEUED, (partition,)):
            inbox_id = _integer(row[0], "an inbox id")
            hint = row[1] if isinstance(row[1], str) else None
            mail = row[2] if isinstance(row[2], bytes) else None
            queued.append((inbox_id, hint, mail))
        return queued

    def consume(self, inbox_id: int, partition: int, token: int) -> None:
        """An inbox mail the enclave took without making anything to store: drop it and wake
        its receiving host (only while the lease is held)."""
        self._query(
            self._sender, _CONSUME, {"id": inbox_id, "partition": partition, "token": token}
        )

    def refuse(self, inbox_id: int, partition: int, token: int, error: str, message: str) -> None:
        """An inbox mail the enclave refused: keep why, for its receiving host, and wake it."""
        self._query(
            self._sender,
            _REFUSE,
            {
                "id": inbox_id,
                "partition": partition,
                "token": token,
                "error": error,
                "message": message,
            },
        )

    def notices(self, timeout: float) -> list[tuple[str, str]] | None:
        """The notifications that arrive within ``timeout`` seconds, as (channel, payload);
        None when the listening connection was just made (again): what was sent while it was
        away is lost, so look at everything once."""
        with self._listener.lock:
            fresh = self._listener.connection is None or self._listener.connection.closed
            try:
                connection = self._listener.open()
                if fresh:
                    connection.execute(f"LISTEN {_INBOX_CHANNEL}")
                    connection.execute(f"LISTEN {_OUTCOME_CHANNEL}")
                    return None
                return [
                    (notice.channel, notice.payload)
                    for notice in connection.notifies(timeout=timeout, stop_after=1)
                ]
            except self._driver_error:
                self._listener.fail()
                with contextlib.suppress(Exception):
                    self._listener.connection.close()
                time.sleep(min(timeout, 1.0))
                return None

    def close(self) -> None:
        """Stop renewing, give up the leases still held, and close the sessions."""
        self._closed.set()
        for partition, token in self.held().items():
            with contextlib.suppress(Exception):
                self.release(partition, token)
        for session in (self._listener, self._reader, self._sender, self._lease_session):
            session.close()


class _PostgresTransaction:
    def __init__(self, store: PostgresMailboxStore, cursor: Any) -> None:
        self._store = store
        self._cursor = cursor
        self._last: int | None = None  # the last commit left by drop_journal

    def record_instance(self, encryption_key: bytes, attestation: bytes) -> None:
        self._store.execute(
            self._cursor,
            "INSERT INTO instances (encryption_key, attestation) VALUES (%s, %s) "
            "ON CONFLICT (encryption_key) DO UPDATE SET attestation = EXCLUDED.attestation",
            (encryption_key, attestation),
        )
        self._store.execute(
            self._cursor,
            "UPDATE leases SET instance_key = %s WHERE partition = %s AND token = %s",
            (encryption_key, self._store.partition, self._store.token),
        )

    def insert_mail(self, routing_hint: str | None, mail: bytes) -> int:
        self._store.execute(
            self._cursor,
            "INSERT INTO mailbox (routing_hint, mail) VALUES (%s, %s) RETURNING id",
            (routing_hint, mail),
        )
        return _integer(_one_row(self._cursor)[0], "a new mail's id")

    def drop_journal(self, from_commit: int, everything: bool) -> None:
        # And, in the same round trip, the last commit the DELETE leaves (the statement's
        # SELECT sees the table as it was before the DELETE: hence the bound).
        self._store.execute(
            self._cursor,
            "WITH dropped AS (DELETE FROM sealed_journal WHERE partition = %(partition)s "
            "AND (commit_number >= %(from)s OR %(everything)s)) "
            "SELECT max(commit_number) FROM sealed_journal WHERE partition = %(partition)s "
            "AND commit_number < %(from)s AND NOT %(everything)s",
            {"partition": self._store.partition, "from": from_commit, "everything": everything},
        )
        (last,) = _one_row(self._cursor)
        self._last = None if last is None else _integer(last, "the last commit number")

    def last_commit(self) -> int | None:
        return self._last

    def insert_commit(self, commit_number: int, snapshot: bool, blob: bytes) -> None:
        self._store.execute(
            self._cursor,
            "INSERT INTO sealed_journal (partition, commit_number, snapshot, blob) "
            "VALUES (%s, %s, %s, %s)",
            (self._store.partition, commit_number, snapshot, blob),
        )


class PostgresMailboxStore:
    """The PostgreSQL engine of :class:`~sanctorum.web.store.MailboxStore`: the mailbox, and
    the sealed state of one partition, stored while this host holds the partition's lease.
    Thread-safe; every method is one transaction.

    ``PostgresMailboxStore(url)`` is a store of its own: it connects to the database at
    ``url`` (a libpq connection string, ``postgresql://user@host/db``), takes partition 0's
    lease, waiting up to ``wait_for_lock`` seconds for another host to let it go
    (:class:`StateDirInUseError` if it does not), and keeps it until :meth:`close`. A web host
    serving several partitions passes its :class:`PostgresDatabase`, the ``partition`` and the
    lease's ``token`` instead."""

    def __init__(
        self,
        database: str | PostgresDatabase,
        *,
        partition: int = 0,
        token: int | None = None,
        wait_for_lock: float = 5.0,
    ) -> None:
        self._owned: PostgresDatabase | None = None
        if isinstance(database, str):
            database = self._owned = PostgresDatabase(database)
        self._database = database
        self.partition = partition
        try:
            if token is None:
                token = database.take_waiting(partition, wait_for_lock)
            self.token = token
            self._writer = _Session(
                database.url, _writer_settings(database.lease_time), f"partition {partition} writer"
            )
            with database.use(self._writer):
                pass  # connect now: a store that cannot, does not open
        except BaseException:
            if self._owned is not None:
                self._owned.close()
            raise
        self._recorded_instance: bytes | None = None
        self._consuming = threading.local()
        self.high_water: int = database.high_water
        self.remote = True
        self.description = database.description + (
            f", partition {partition} of {database.partitions}" if database.partitions > 1 else ""
        )

    @property
    def database(self) -> PostgresDatabase:
        return self._database

    @property
    def _connection(self) -> Any:
        """The writer's connection (for tests that reach into it)."""
        return self._writer.connection

    @property
    def _reader(self) -> _Session:
        return self._database._reader

    def execute(
        self, cursor: Any, statement: str, parameters: tuple[object, ...] | dict[str, object] = ()
    ) -> None:
        """Every statement of a commit goes through here (one place to trace them, as the crash
        tests do)."""
        cursor.execute(statement, parameters)

    @contextlib.contextmanager
    def consuming(self, inbox_id: int) -> Iterator[None]:
        """While the block runs on this thread, a commit also drops inbox mail ``inbox_id``
        (the mail being delivered) and wakes its receiving host, in the same transaction."""
        self._consuming.inbox_id, self._consuming.done = inbox_id, False
        try:
            yield
        finally:
            self._consuming.inbox_id = None

    @contextlib.contextmanager
    def delivering(self, routing_hint: str, acknowledged: int | None) -> Iterator[None]:
        """While the block (a delivery from ``routing_hint``) runs on this thread, a commit
        also drops that reader's mail up to ``acknowledged`` first thing in its transaction
        (as :meth:`PostgresDatabase.acknowledge`, so it cannot name the delivery's answer), and
        reads the reader's oldest mail last (the answer, unless older mail waits): see
        :meth:`delivered`."""
        if acknowledged is not None and not 0 <= acknowledged < 1 << 63:
            acknowledged = None  # names no mail
        self._consuming.delivery = (routing_hint, acknowledged)
        self._consuming.delivered = (False, None)
        try:
            yield
        finally:
            self._consuming.delivery = None

    def delivered(self) -> tuple[bool, tuple[int, bytes] | None]:
        """Whether a commit of the block of :meth:`delivering` was stored, and the reader's
        oldest mail it read."""
        delivered: tuple[bool, tuple[int, bytes] | None] = getattr(
            self._consuming, "delivered", (False, None)
        )
        return delivered

    def consumed(self) -> bool:
        """Whether a commit of the block of :meth:`consuming` dropped its inbox mail."""
        return bool(getattr(self._consuming, "done", False))

    def apply(
        self, commands: Iterable[MailCommand], instance: tuple[bytes, bytes] | None = None
    ) -> None:
        """See :meth:`MailboxStore.apply <sanctorum.web.store.MailboxStore.apply>`; refused
        with :class:`LeaseLostError` (nothing stored) once the lease is gone."""
        commands = list(commands)
        inbox_id = getattr(self._consuming, "inbox_id", None)
        delivery: tuple[str, int | None] | None = getattr(self._consuming, "delivery", None)
        if (
            inbox_id is None
            and len(commands) == 1
            and isinstance(commands[0], PostMail)
            and "\0" not in (commands[0].routing_hint or "")
            and (instance is None or instance[0] == self._recorded_instance)
        ):
            self._apply_reply(commands[0], delivery)
            return
        lease: dict[str, object] = {"partition": self.partition, "token": self.token}
        if delivery is None or delivery[1] is None:
            fence: tuple[str, dict[str, object]] = (_FENCE, lease)
        else:
            hint, acknowledged = delivery
            fence = (_FENCE_AND_ACKNOWLEDGE, {**lease, "hint": hint, "acknowledged": acknowledged})
        # A pipeline: statements go out together, and wait for the server only when a result
        # is read (a new mail's id, the last commit, the lease), so a commit takes two or
        # three round trips, not one per statement. An error aborts what follows it.
        with (
            self._database.use(self._writer) as connection,
            connection.pipeline(),
            connection.cursor() as held,
            connection.cursor() as cursor,
            connection.cursor() as oldest,
        ):
            self.execute(cursor, "BEGIN")
            self.execute(held, *fence)
            if inbox_id is not None:
                self.execute(cursor, _CONSUME_IN_COMMIT, (inbox_id,))
            high_water = apply_commands(
                _PostgresTransaction(self, cursor),
                commands,
                instance,
                self._recorded_instance,
                self.high_water,
            )
            if delivery is not None:
                self.execute(oldest, _FETCH, (delivery[0],))
            if held.fetchone() is None:  # checked before COMMIT is sent
                raise self._lease_lost()
            answer = oldest.fetchone() if delivery is not None else None
            self.execute(cursor, "COMMIT")
        if inbox_id is not None:
            self._consuming.done = True
        if delivery is not None:
            self._consuming.delivered = (True, None if answer is None else _mail(answer))
        self.high_water = high_water
        if instance is not None:
            self._recorded_instance = instance[0]

    def _lease_lost(self) -> LeaseLostError:
        """A commit found the lease gone: forget it (the host stops the partition)."""
        self._database.lost(self.partition, self.token)
        return LeaseLostError(
            f"this host's lease of partition {self.partition} ran out or was taken over by "
            "another host: the call's commands were not stored, and this instance stops "
            "serving the partition"
        )

    def _apply_reply(self, reply: PostMail, delivery: tuple[str, int | None] | None) -> None:
        """:meth:`apply` of a call that made one reply and nothing else (see ``_REPLY``)."""
        hint, acknowledged = delivery if delivery is not None else (None, None)
        with self._database.use(self._writer) as connection, connection.cursor() as cursor:
            self.execute(
                cursor,
                _REPLY,
                {
                    "partition": self.partition,
                    "token": self.token,
                    "hint": hint,
                    "acknowledged": acknowledged,
                    "to": reply.routing_hint,
                    "mail": reply.mail,
                    "high_water": self.high_water,
                },
            )
            held, posted, oldest_id, oldest_mail = _one_row(cursor)
        if not held:
            raise self._lease_lost()
        if posted is None:
            raise EnclaveStateError(
                f"the database's mail id sequence was set back below the {self.high_water} "
                "ids already handed out, and an acknowledgement could drop mail its reader "
                "never saw: the call's commands were not stored. Restore the database from a "
                "backup"
            )
        self.high_water = _integer(posted, "a new mail's id")
        if delivery is not None:
            self._consuming.delivered = (
                True,
                None if oldest_id is None else _mail((oldest_id, oldest_mail)),
            )

    def attestation_of(self, encryption_key: bytes) -> bytes | None:
        """See :meth:`MailboxStore.attestation_of <sanctorum.web.store.MailboxStore>`."""
        return self._database.attestation_of(encryption_key)

    def next_mail(
        self, routing_hint: str, acknowledged: int | None, bound: int | None = None
    ) -> tuple[int, bytes] | None:
        """See :meth:`MailboxStore.next_mail <sanctorum.web.store.MailboxStore.next_mail>`."""
        return self._database.next_mail(routing_hint, acknowledged, bound)

    def sealed_state(self) -> tuple[bytes, ...] | None:
        """See :meth:`MailboxStore.sealed_state <sanctorum.web.store.MailboxStore>`: this
        partition's."""
        with self._database.use(self._writer) as connection, connection.cursor() as cursor:
            self.execute(
                cursor,
                "SELECT blob FROM sealed_journal WHERE partition = %(partition)s AND "
                "commit_number >= (SELECT max(commit_number) FROM sealed_journal "
                "WHERE partition = %(partition)s AND snapshot) ORDER BY commit_number",
                {"partition": self.partition},
            )
            rows = cursor.fetchall()
        return tuple(_bytes(row[0], "a sealed state record") for row in rows) or None

    def close(self) -> None:
        self._writer.close()
        if self._owned is not None:
            self._owned.close()  # gives the lease up


@contextlib.contextmanager
def _transaction(connection: Any, execute: Statement) -> Iterator[Any]:
    """One transaction, its BEGIN and COMMIT through ``execute`` like the rest."""
    with connection.cursor() as cursor:
        execute(cursor, "BEGIN")
        yield cursor
        execute(cursor, "COMMIT")


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


def _mail(row: tuple[Any, ...]) -> tuple[int, bytes]:
    """A mailbox row's (id, mail), checked."""
    return _integer(row[0], "a mail id"), _bytes(row[1], "a mail")


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
