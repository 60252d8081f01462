"""One enclave behind the web host: its EnclaveHost, its durable mailbox, its restarts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sanctorum.common.bundle import read_bundle
from sanctorum.common.errors import EnclaveCrashedError, EnclaveStateError
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
        self.store = MailboxStore(state_dir / "mailbox.sqlite3")
        config = read_bundle(bundle.read_bytes(), str(bundle)).config
        self._filesystem_file = state_dir / "filesystem.bin" if config.filesystem_size else None
        self._host = EnclaveHost.load(bundle, mode=mode, pccs_url=pccs_url)
        self._restart_lock = threading.Lock()
        self.restarting = False

    @property
    def host(self) -> EnclaveHost:
        return self._host

    def start(self) -> None:
        """Start the enclave from the last sealed state the store holds."""
        self._host.start(
            sealed_state=self.store.sealed_state(),
            filesystem_file=self._filesystem_file,
            on_mail_commands=self.store.apply,
        )

    def attestation(self) -> bytes:
        return self._call(lambda: self._host.enclave_instance_info.serialize())

    def deliver(
        self, mail: bytes, routing_hint: str, acknowledged: int | None
    ) -> tuple[int, bytes] | None:
        """Deliver a mail; the client's oldest unacknowledged reply (the synchronous one, unless
        older ones wait)."""
        self._call(lambda: self._host.deliver_mail(mail, routing_hint))
        return self.store.next_mail(routing_hint, acknowledged)

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
        try:
            self._host.restart()  # from the latest sealed state the host was handed
        finally:
            self.restarting = False

    def close(self) -> None:
        self._host.close()
        self.store.close()
