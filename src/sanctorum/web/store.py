"""The web host's durable mailbox: replies and sealed state, one transaction per call.

Replies stay until the client acknowledges them (by the id of the last mail it opened), so a
reply is neither lost when the host or the client dies, nor delivered twice. The sealed state
is a table of the latest snapshot and the journal records after it, one row per commit: a
commit appends a row (a snapshot deletes the rows before it), never rewrites the whole state.

Two engines keep that contract: :class:`SqliteMailboxStore`, embedded in the state dir (the
default), and :class:`~sanctorum.web.postgres_store.PostgresMailboxStore`, a PostgreSQL
database. What a call's commands do to the tables is decided once, in :func:`apply_commands`;
each engine only says how its SQL does it.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from sanctorum.common.commands import MailCommand, PostMail, StoreSealedState
from sanctorum.common.errors import EnclaveStateError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mailbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    routing_hint TEXT,
    mail BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS mailbox_by_hint ON mailbox (routing_hint, id);
CREATE TABLE IF NOT EXISTS instances (
    encryption_key BLOB PRIMARY KEY,
    attestation BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sealed_journal (
    commit_number INTEGER PRIMARY KEY,
    snapshot INTEGER NOT NULL,
    blob BLOB NOT NULL
);
"""


class MailboxStore(Protocol):
    """What the web host keeps durably. Thread-safe; every method is one transaction."""

    high_water: int
    """The largest mail id handed out so far."""
    remote: bool
    """Whether a read waits on another machine (a database server): the web host then reads on
    its worker threads rather than its event loop."""
    description: str
    """Which store this is, for the host's log (never a password)."""

    def apply(
        self, commands: Iterable[MailCommand], instance: tuple[bytes, bytes] | None = None
    ) -> None:
        """Store one call's mail commands atomically (the ``on_mail_commands`` callback), with
        ``instance`` = (encryption key, serialized attestation) of the instance that made them,
        so clients can still verify its mail after it was replaced."""
        ...

    def attestation_of(self, encryption_key: bytes) -> bytes | None:
        """The attestation of an instance whose mail was stored here, by its encryption key."""
        ...

    def next_mail(
        self, routing_hint: str, acknowledged: int | None, bound: int | None = None
    ) -> tuple[int, bytes] | None:
        """Drop the mail of ``routing_hint`` up to ``acknowledged``, the last one its reader
        opened; the oldest mail left. The acknowledgement is honoured only while that mail is
        still here (a store restored from an older copy hands out lower ids again, and they
        must not drop mail the reader has not seen), and only if it is at most ``bound``: the
        high-water mark before the delivery it came with, so it never names that delivery's
        mail."""
        ...

    def sealed_state(self) -> tuple[bytes, ...] | None:
        """The latest snapshot and the journal records after it, for ``EnclaveHost.start``."""
        ...

    def close(self) -> None: ...


class Transaction(Protocol):
    """One engine's SQL for the steps of :func:`apply_commands`, inside one transaction."""

    def record_instance(self, encryption_key: bytes, attestation: bytes) -> None: ...

    def insert_mail(self, routing_hint: str | None, mail: bytes) -> int:
        """The new mail's id."""
        ...

    def drop_journal(self, from_commit: int, everything: bool) -> None:
        """Delete the journal rows from ``from_commit`` on, or all of them."""
        ...

    def last_commit(self) -> int | None: ...

    def insert_commit(self, commit_number: int, snapshot: bool, blob: bytes) -> None: ...


def apply_commands(
    transaction: Transaction,
    commands: Iterable[MailCommand],
    instance: tuple[bytes, bytes] | None,
    recorded_instance: bytes | None,
    high_water: int,
) -> int:
    """Apply one call's commands in ``transaction``; the new high-water mark. Raises
    :class:`EnclaveStateError` (and the caller rolls back) for a journal record that does not
    follow the last commit stored, a routing hint holding NUL, or a new mail id not above the
    ones handed out."""
    if instance is not None and instance[0] != recorded_instance:
        transaction.record_instance(*instance)
    for command in commands:
        if isinstance(command, PostMail):
            if command.routing_hint is not None and "\0" in command.routing_hint:
                raise EnclaveStateError(
                    "the enclave posted mail with a routing hint that holds a NUL byte, which "
                    "no reader can name (nor PostgreSQL store): the call's commands were not "
                    "stored; fix the enclave's routing hints"
                )
            mail_id = transaction.insert_mail(command.routing_hint, command.mail)
            if mail_id <= high_water:
                raise EnclaveStateError(
                    f"the store gave a new mail the id {mail_id}, not above the {high_water} "
                    "already handed out: its id sequence was set back, and an acknowledgement "
                    "could drop mail its reader never saw. Restore the store from a backup"
                )
            high_water = mail_id
        elif isinstance(command, StoreSealedState):
            # EnclaveHost passes commits on in order. A snapshot replaces every row; rows from
            # this commit on belong to a chain the enclave left (it resumed from an older
            # commit) and go too.
            transaction.drop_journal(command.commit_number, command.snapshot)
            if not command.snapshot:
                last = transaction.last_commit()
                if last != command.commit_number - 1:
                    raise EnclaveStateError(
                        f"journal record {command.commit_number} does not follow the last "
                        f"commit stored ({last}): a commit was not stored, and the enclave "
                        "would refuse this journal; restart the enclave from what is stored"
                    )
            transaction.insert_commit(command.commit_number, command.snapshot, command.blob)
    return high_water


class _SqliteTransaction:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def record_instance(self, encryption_key: bytes, attestation: bytes) -> None:
        self._cursor.execute(
            "INSERT OR REPLACE INTO instances (encryption_key, attestation) VALUES (?, ?)",
            (encryption_key, attestation),
        )

    def insert_mail(self, routing_hint: str | None, mail: bytes) -> int:
        self._cursor.execute(
            "INSERT INTO mailbox (routing_hint, mail) VALUES (?, ?)", (routing_hint, mail)
        )
        return int(self._cursor.lastrowid or 0)

    def drop_journal(self, from_commit: int, everything: bool) -> None:
        self._cursor.execute(
            "DELETE FROM sealed_journal WHERE commit_number >= ? OR ?", (from_commit, everything)
        )

    def last_commit(self) -> int | None:
        (last,) = self._cursor.execute("SELECT max(commit_number) FROM sealed_journal").fetchone()
        return None if last is None else int(last)

    def insert_commit(self, commit_number: int, snapshot: bool, blob: bytes) -> None:
        self._cursor.execute(
            "INSERT INTO sealed_journal (commit_number, snapshot, blob) VALUES (?, ?, ?)",
            (commit_number, snapshot, blob),
        )


class SqliteMailboxStore:
    """The embedded engine: a SQLite file in the state dir. Thread-safe; every method is one
    SQLite transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # WAL with NORMAL sync: a commit survives the process being killed (SIGKILL); only a
        # power cut can lose the last transactions.
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.executescript(_SCHEMA)
        self._upgrade(path)
        self._lock = threading.Lock()
        self._recorded_instance: bytes | None = None
        self.high_water: int = self._jump_ids()
        """The largest mail id handed out so far."""
        self.remote = False
        self.description = f"SQLite file {path}"

    def _upgrade(self, path: Path) -> None:
        """Move the one sealed blob of a store written before the journal (Sanctorum 0.x's
        ``sealed_state`` table) into the journal, as the snapshot it is."""
        columns = {row[1] for row in self._connection.execute("PRAGMA table_info(sealed_state)")}
        if not columns:
            return
        if "commit_number" not in columns:
            self._connection.close()
            raise EnclaveStateError(
                f"{path} was written by an older version of Sanctorum, whose sealed state this "
                "version cannot read: start with a new state dir"
            )
        with self._connection:
            self._connection.execute("BEGIN IMMEDIATE")
            self._connection.execute(
                "INSERT INTO sealed_journal (commit_number, snapshot, blob) "
                "SELECT commit_number, 1, blob FROM sealed_state"
            )
            self._connection.execute("DROP TABLE sealed_state")

    def _jump_ids(self) -> int:
        """Move the next mail id forward by a random amount, once per start: ids stay rising,
        but a store restored from an older copy does not hand out the ids a reader already saw
        from the newer one (an acknowledgement naming such an id would drop unseen mail)."""
        with self._connection:
            row = self._connection.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'mailbox'"
            ).fetchone()
            jumped = (int(row[0]) if row else 0) + secrets.randbelow(1 << 32) + 1
            self._connection.execute("DELETE FROM sqlite_sequence WHERE name = 'mailbox'")
            self._connection.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('mailbox', ?)", (jumped,)
            )
        return jumped

    def apply(
        self, commands: Iterable[MailCommand], instance: tuple[bytes, bytes] | None = None
    ) -> None:
        """See :meth:`MailboxStore.apply`."""
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                high_water = apply_commands(
                    _SqliteTransaction(cursor),
                    commands,
                    instance,
                    self._recorded_instance,
                    self.high_water,
                )
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            self.high_water = high_water
            if instance is not None:
                self._recorded_instance = instance[0]

    def attestation_of(self, encryption_key: bytes) -> bytes | None:
        """See :meth:`MailboxStore.attestation_of`."""
        with self._lock:
            row = self._connection.execute(
                "SELECT attestation FROM instances WHERE encryption_key = ?", (encryption_key,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def next_mail(
        self, routing_hint: str, acknowledged: int | None, bound: int | None = None
    ) -> tuple[int, bytes] | None:
        """See :meth:`MailboxStore.next_mail`."""
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                if acknowledged is not None and (bound is None or acknowledged <= bound):
                    cursor.execute(
                        "DELETE FROM mailbox WHERE routing_hint = ?1 AND id <= ?2 AND EXISTS "
                        "(SELECT 1 FROM mailbox WHERE routing_hint = ?1 AND id = ?2)",
                        (routing_hint, acknowledged),
                    )
                row = cursor.execute(
                    "SELECT id, mail FROM mailbox WHERE routing_hint = ? ORDER BY id LIMIT 1",
                    (routing_hint,),
                ).fetchone()
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        return None if row is None else (int(row[0]), bytes(row[1]))

    def sealed_state(self) -> tuple[bytes, ...] | None:
        """See :meth:`MailboxStore.sealed_state`."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT blob FROM sealed_journal WHERE commit_number >= "
                "(SELECT max(commit_number) FROM sealed_journal WHERE snapshot) "
                "ORDER BY commit_number"
            ).fetchall()
        return tuple(bytes(row[0]) for row in rows) or None

    def close(self) -> None:
        with self._lock:
            self._connection.close()
