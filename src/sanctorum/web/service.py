"""One enclave behind the web host: its EnclaveHost, its durable mailbox, its restarts."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from sanctorum.common.bundle import read_bundle
from sanctorum.common.commands import MailCommand
from sanctorum.common.errors import (
    EnclaveCrashedError,
    EnclaveStateError,
    SanctorumError,
    StateDirInUseError,
)
from sanctorum.common.keys import Curve25519PublicKey
from sanctorum.common.mode import EnclaveMode
from sanctorum.host.host import EnclaveHost
from sanctorum.web.store import MailboxStore

_T = TypeVar("_T")


class EnclaveService:
    """Thread-safe: the web app calls it from worker threads, never from the event loop."""

    def __init__(
        self, bundle: Path, mode: EnclaveMode, state_dir: Path, *, pccs_url: str | None = None
    ) -> None:
        self.mode = mode
        self._bundle = bundle
        self._state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = lock_state_dir(state_dir)
        self.store = MailboxStore(state_dir / "mailbox.sqlite3")
        config = read_bundle(bundle.read_bytes(), str(bundle)).config
        self._filesystem_file = state_dir / "filesystem.bin" if config.filesystem_size else None
        self._host = EnclaveHost.load(bundle, mode=mode, pccs_url=pccs_url)
        self._restart_lock = threading.Lock()
        self.restarting = False
        self._closed = False
        self._serialized: tuple[object, tuple[bytes, bytes]] = (None, (b"", b""))

    @property
    def host(self) -> EnclaveHost:
        return self._host

    def start(self) -> None:
        """Start the enclave from the last sealed state the store holds."""
        self._host.start(
            sealed_state=self.store.sealed_state(),
            filesystem_file=self._filesystem_file,
            on_mail_commands=self._store_commands,
        )

    def _store_commands(self, commands: list[MailCommand]) -> None:
        info = self._host.enclave_instance_info
        if info is not self._serialized[0]:
            self._serialized = (info, (info.encryption_key.encoded, info.serialize()))
        self.store.apply(commands, self._serialized[1])

    def attestation(self, instance: bytes | None = None) -> bytes | None:
        """The current instance's attestation, or that of the instance with encryption key
        ``instance`` (one that ran here and stored mail); None if unknown."""
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
        self._call(lambda: self._host.deliver_mail(mail, routing_hint))
        return self.store.next_mail(routing_hint, acknowledged, bound)

    def poll(self, routing_hint: str, acknowledged: int | None) -> tuple[int, bytes] | None:
        return self.store.next_mail(routing_hint, acknowledged)

    def _call(self, action: Callable[[], _T]) -> _T:
        if self.restarting:
            raise EnclaveStateError("the enclave is restarting; try again in a moment")
        try:
            return action()
        except EnclaveCrashedError:
            self._restart_in_background()
            raise

    def _restart_in_background(self) -> None:
        with self._restart_lock:
            if self.restarting:
                return
            self.restarting = True
        threading.Thread(target=self._restart, name="enclave-restart", daemon=True).start()

    def _restart(self) -> None:
        """Start a fresh instance from the latest sealed state, trying again (and answering
        503, /health "restarting") until it starts or the service is closed."""
        pause = 0.1
        while not self._closed:
            try:
                self._host.restart()
                break
            except SanctorumError:
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
        self.restarting = False

    def close(self) -> None:
        self._closed = True
        self._host.close()
        self.store.close()
        self._lock_file.close()  # releases the lock


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
