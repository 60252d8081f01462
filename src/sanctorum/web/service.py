"""One enclave behind the web host: its EnclaveHost, its durable mailbox, its restarts."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol, TypeVar

from sanctorum.common.bundle import read_bundle
from sanctorum.common.commands import HostCallback, MailCommand
from sanctorum.common.errors import (
    EnclaveCrashedError,
    EnclaveLoadError,
    EnclaveStateError,
    SanctorumError,
    StateDirInUseError,
)
from sanctorum.common.keys import Curve25519PublicKey
from sanctorum.common.mode import EnclaveMode
from sanctorum.host.host import EnclaveHost
from sanctorum.host.importing import EnclaveClass, import_enclave_class
from sanctorum.host.kds import KdsConfiguration
from sanctorum.host.mock_settings import mock_settings
from sanctorum.web.logs import log_event
from sanctorum.web.store import MailboxStore, SqliteMailboxStore

_T = TypeVar("_T")
_REMIND_EVERY = 300.0  # seconds: how often a restart that keeps failing the same way is logged


class WebService(Protocol):
    """What the web app serves: one enclave (:class:`EnclaveService`), or the partitions of a
    service shared by several hosts (:class:`~sanctorum.web.cluster.ClusterService`)."""

    name: str
    mode: EnclaveMode
    restarting: bool

    @property
    def remote(self) -> bool:
        """Whether reads wait on a database server (the app makes them on worker threads)."""
        ...

    def deliver(
        self, mail: bytes, routing_hint: str, acknowledged: int | None
    ) -> tuple[int, bytes] | None: ...

    def poll(self, routing_hint: str, acknowledged: int | None) -> tuple[int, bytes] | None: ...

    def attestation(
        self, instance: bytes | None = None, routing_hint: str | None = None
    ) -> bytes | None: ...

    def health(self) -> dict[str, object]: ...

    def close(self) -> None: ...


class EnclaveService:
    """Thread-safe. The web app delivers mail from threads of its own (a delivery waits for the
    enclave); it polls and reads attestations on its event loop, as those only touch the store
    and what the host keeps, never the enclave.

    ``enclave`` is a ``.enclave`` bundle, or an :class:`Enclave` subclass (mock mode). The
    enclave's lifecycle is logged to the ``sanctorum.web`` logger (:mod:`sanctorum.web.logs`).
    ``host_callback`` answers the enclave's ``call_untrusted_host`` while it handles mail (it
    runs on a delivery thread, for each delivery that calls it). ``database`` (a
    ``postgresql://`` URL) keeps the mailbox and the sealed state in PostgreSQL instead of the
    state dir's SQLite file (:mod:`sanctorum.web.postgres_store`); the state dir still holds the
    host's lock and the enclave's filesystem file.
    """

    def __init__(
        self,
        enclave: Path | EnclaveClass,
        mode: EnclaveMode,
        state_dir: Path | None,
        *,
        pccs_url: str | None = None,
        kds: KdsConfiguration | None = None,
        host_callback: HostCallback | None = None,
        database: str | None = None,
        store: MailboxStore | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        self.mode = mode
        self._host_callback = host_callback
        self.name, filesystem_size = enclave_settings(enclave)
        self._on_started = on_started
        self._lock_file: IO[str] | None = None
        self.store: MailboxStore
        if store is not None:  # a partition of a service in a database (web.cluster)
            self.store = store
        else:
            if state_dir is None:
                raise EnclaveStateError("a web host without a given store needs a state dir")
            state_dir.mkdir(parents=True, exist_ok=True)
            self._lock_file = lock_state_dir(state_dir)
            if database is None:
                self.store = SqliteMailboxStore(state_dir / "mailbox.sqlite3")
            else:
                from sanctorum.web.postgres_store import PostgresMailboxStore

                self.store = PostgresMailboxStore(database)
            log_event(
                logging.INFO,
                "store_opened",
                f"mailbox and sealed state in the {self.store.description}",
                store=self.store.description,
            )
        self._filesystem_file = (
            state_dir / "filesystem.bin" if filesystem_size and state_dir is not None else None
        )
        self._host = EnclaveHost.load(
            enclave, mode=mode, pccs_url=pccs_url, progress=self._progress
        )
        self._kds = kds
        self._restart_lock = threading.Lock()
        self.restarting = False
        self._closed = False
        self._started = False
        self._serialized: tuple[object, tuple[bytes, bytes]] = (None, (b"", b""))

    @property
    def host(self) -> EnclaveHost:
        return self._host

    @property
    def remote(self) -> bool:
        """Whether the store is a database server (reads go to worker threads)."""
        return self.store.remote

    def _progress(self, step: str) -> None:
        """The host's long steps (fetching DCAP collateral, at start and when it expires)."""
        log_event(logging.INFO, "progress", step, enclave=self.name, step=step)

    def start(self) -> None:
        """Start the enclave from the last sealed state the store holds."""
        self._host.start(
            sealed_state=self.store.sealed_state(),
            filesystem_file=self._filesystem_file,
            on_mail_commands=self._store_commands,
            kds=self._kds,
        )
        self._started = True
        if self._on_started is not None:
            self._on_started()
        fields = self._instance_fields()
        log_event(
            logging.INFO,
            "enclave_started",
            f"enclave {self.name} started ({fields['mode']}): code hash {fields['code_hash']}, "
            f"instance key {fields['instance_key']}{_pid_text(fields)}",
            **fields,
        )

    def _instance_fields(self) -> dict[str, object]:
        """What identifies the running instance in logs: never its attestation bytes."""
        info = self._host.enclave_instance_info
        return {
            "enclave": self.name,
            "mode": info.enclave_mode.value,
            "code_hash": str(info.code_hash),
            # The start of the key clients name in /attestation?instance=...
            "instance_key": info.encryption_key.encoded.hex()[:16],
            "pid": self._host.process_id,
        }

    def _store_commands(self, commands: list[MailCommand]) -> None:
        info = self._host.enclave_instance_info
        if info is not self._serialized[0]:
            self._serialized = (info, (info.encryption_key.encoded, info.serialize()))
        try:
            self.store.apply(commands, self._serialized[1])
        except SanctorumError as error:
            # The host fails the instance whose commands these are; restart it (503 until
            # then), so clients reach a fresh instance rather than one that lost their answers.
            raise EnclaveCrashedError(
                f"what the enclave made could not be stored ({error}); restarting it"
            ) from error

    def attestation(
        self, instance: bytes | None = None, routing_hint: str | None = None
    ) -> bytes | None:
        """The current instance's attestation, or that of the instance with encryption key
        ``instance`` (one that ran here and stored mail); None if unknown. (``routing_hint``
        matters to a service of several partitions only.)"""
        if instance is None:
            return self._call(lambda: self._host.enclave_instance_info.serialize())
        info = self._host.instance_info_of(Curve25519PublicKey(instance))
        if info is not None:
            return info.serialize()
        return self.store.attestation_of(instance)

    def deliver(
        self, mail: bytes, routing_hint: str, acknowledged: int | None
    ) -> tuple[int, bytes] | None:
        """Deliver a mail; the client's oldest unacknowledged mail (the answer, unless older
        mail waits). The acknowledgement is bounded by the ids handed out before the delivery,
        so it can never name mail this delivery made."""
        bound = self.store.high_water
        self.process(mail, routing_hint)
        return self.store.next_mail(routing_hint, acknowledged, bound)

    def health(self) -> dict[str, object]:
        """What /health says beyond the status (nothing, for one enclave)."""
        return {}

    def process(self, mail: bytes, routing_hint: str) -> None:
        """Deliver a mail; what the enclave makes is stored before this returns."""
        self._call(lambda: self._host.deliver_mail(mail, routing_hint, self._host_callback))

    def call(self, data: bytes) -> bytes | None:
        """``call_enclave``, restarting the enclave in the background if it crashed."""
        return self._call(lambda: self._host.call_enclave(data))

    def poll(self, routing_hint: str, acknowledged: int | None) -> tuple[int, bytes] | None:
        return self.store.next_mail(routing_hint, acknowledged)

    def _call(self, action: Callable[[], _T]) -> _T:
        if self.restarting:
            raise EnclaveStateError("the enclave is restarting; try again in a moment")
        try:
            return action()
        except EnclaveCrashedError as crash:
            self._restart_in_background(crash)
            raise

    def _restart_in_background(self, crash: EnclaveCrashedError) -> None:
        with self._restart_lock:
            if self.restarting or self._closed:
                return
            self.restarting = True
        reason, detail, status = self._why(crash)
        log_event(
            logging.WARNING,
            "enclave_crashed",
            f"enclave {self.name} {'was killed' if reason == 'killed' else 'crashed'}: "
            f"{detail}; restarting it from the last sealed state",
            enclave=self.name,
            reason=reason,
            detail=detail,
            exit_status=status,
            pid=self._host.process_id,
        )
        threading.Thread(
            target=self._restart, args=(reason, detail), name="enclave-restart", daemon=True
        ).start()

    def _why(self, crash: EnclaveCrashedError) -> tuple[str, str, int | None]:
        """Why the enclave went away: ``killed`` (by a signal) or ``crashed``; in words; and
        its process's exit status, if it has one."""
        status = self._host.exit_status
        if status is not None and status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = f"signal {-status}"
            return "killed", f"its process was killed by {name}", status
        if status is not None:
            return "crashed", f"its process exited with status {status}", status
        return "crashed", str(crash).removeprefix("the enclave has crashed: "), None

    def _restart(self, reason: str, detail: str) -> None:
        """Start a fresh instance from the latest sealed state, trying again (and answering
        503, /health "restarting") until it starts or the service is closed. A failure is
        logged once, not at every try: a failure is logged again only after five minutes
        (numbers in its message aside, so a changing pid or size is the same failure)."""
        began = time.monotonic()
        pause = 0.1
        attempts = 0
        reported: dict[str, float] = {}  # failure -> when it was last logged
        while not self._closed:
            attempts += 1
            try:
                self._host.restart()
            except Exception as error:  # a failing restart must not end the loop
                problem = f"{type(error).__name__}: {error}"
                key, now = re.sub(r"\d+", "#", problem), time.monotonic()
                if now - reported.get(key, now - _REMIND_EVERY) >= _REMIND_EVERY:
                    again = "still " if key in reported else ""
                    log_event(
                        logging.ERROR,
                        "enclave_restart_failed",
                        f"enclave {self.name} {again}fails to restart ({attempts} "
                        f"{'try' if attempts == 1 else 'tries'}; retrying until it starts, "
                        f"this error logged again in {_REMIND_EVERY / 60:.0f} min): {problem}",
                        enclave=self.name,
                        error=problem,
                        attempts=attempts,
                    )
                    reported[key] = now
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            if self._on_started is not None:
                try:
                    self._on_started()
                except Exception as error:  # the partition was lost meanwhile: no more tries
                    log_event(
                        logging.WARNING,
                        "enclave_restart_failed",
                        f"enclave {self.name} restarted, but {error}",
                        enclave=self.name,
                        error=str(error),
                        attempts=attempts,
                    )
                    break
            fields = self._instance_fields()
            downtime_ms = round((time.monotonic() - began) * 1000)
            log_event(
                logging.INFO,
                "enclave_restarted",
                f"enclave {self.name} restarted after it "
                f"{'was killed' if reason == 'killed' else 'crashed'} ({detail}): instance key "
                f"{fields['instance_key']}{_pid_text(fields)}, down {downtime_ms} ms, "
                f"{attempts} {'try' if attempts == 1 else 'tries'}",
                **fields,
                reason=reason,
                detail=detail,
                attempts=attempts,
                downtime_ms=downtime_ms,
            )
            break
        self.restarting = False

    def close(self) -> None:
        """Stop the enclave (its ``on_shutdown`` runs) and release the state dir; closing
        twice is harmless."""
        with self._restart_lock:
            if self._closed:
                return
            self._closed = True
        self._host.close()
        self.store.close()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
        if self._started:
            log_event(
                logging.INFO, "enclave_stopped", f"enclave {self.name} stopped", enclave=self.name
            )


def enclave_settings(enclave: Path | EnclaveClass) -> tuple[str, int]:
    """The enclave's name, for logs (the bundle's, or the class's), and the size of its
    persistent filesystem (0: none)."""
    if isinstance(enclave, type):
        return enclave.__qualname__, mock_settings(enclave).filesystem_size  # enclave.toml's
    config = read_bundle(enclave.read_bytes(), str(enclave)).config
    return config.name, config.filesystem_size


def _pid_text(fields: dict[str, object]) -> str:
    return "" if fields["pid"] is None else f", pid {fields['pid']}"


def choose_enclave(
    bundle: Path | None, mock: str | None, mode: str | None
) -> tuple[Path | EnclaveClass, EnclaveMode]:
    """What ``sanctorum host`` serves: a bundle (simulation mode unless ``mode`` says
    otherwise), or with ``mock`` (``module:Class``) an Enclave subclass in mock mode."""
    if (bundle is None) == (mock is None):
        raise EnclaveLoadError(
            "give either a bundle to serve or --mock module:Class, not "
            + ("both" if bundle is not None else "neither")
        )
    if mock is not None:
        if mode is not None and mode.strip().lower() != EnclaveMode.MOCK.value:
            raise EnclaveLoadError(
                f"--mock serves a class in mock mode; --mode {mode} runs a bundle: build one "
                "with `sanctorum build` and pass its path instead of --mock"
            )
        return import_enclave_class(mock), EnclaveMode.MOCK
    assert bundle is not None
    try:
        parsed = EnclaveMode.parse(mode or EnclaveMode.SIMULATION.value)
    except ValueError as error:
        raise EnclaveLoadError(str(error)) from None
    if parsed is EnclaveMode.MOCK:
        raise EnclaveLoadError(
            "mock mode serves an Enclave class, not a bundle: use --mock module:Class"
        )
    return bundle, parsed


def lock_state_dir(state_dir: Path) -> IO[str]:
    """Take the state dir for this process, or raise :class:`StateDirInUseError` naming the
    process that holds it. Two hosts on one state dir would each start the enclave from the
    same sealed state and lose each other's commits. The lock is released when the returned
    file is closed or the process dies (an ``flock``, so a killed host leaves none behind)."""
    path = state_dir / "host.lock"
    lock_file = path.open("a+")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "another process"
        lock_file.close()
        raise StateDirInUseError(
            f"the state dir {state_dir} is in use by {holder}: two hosts on one state dir "
            "would lose each other's mail and state; stop that host or use another --state-dir"
        ) from None
    lock_file.truncate(0)
    lock_file.write(
        f"sanctorum host pid {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})"
    )
    lock_file.flush()
    return lock_file
