"""Sanctorum's servers in processes of their own, for tests that drive them as users do:
``sanctorum host`` (:class:`WebHostProcess`) and ``sanctorum kds serve`` (:class:`KdsProcess`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx


class ServerProcess:
    """``python -m sanctorum ARGS --port PORT`` on a free port of the loopback interface, up
    (its ``/health`` answers) when the constructor returns; its output goes to ``log``.
    ``stop()`` or the ``with`` block's end ends it with SIGTERM. ``env`` is its environment
    (and is there for the clients a test starts beside it)."""

    def __init__(
        self,
        args: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        *,
        timeout: float = 60,
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.env = dict(os.environ if env is None else env)
        command = [sys.executable, "-m", "sanctorum", *args, "--port", str(port)]
        with log.open("ab") as output:
            self.process = subprocess.Popen(  # noqa: S603  (our own command)
                command, stdout=output, stderr=output, env=self.env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"sanctorum {' '.join(args[:2])} did not come up within {timeout:g} s; its "
                    f"log ({log}) ends:\n{log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class WebHostProcess(ServerProcess):
    """``sanctorum host BUNDLE --mode MODE --state-dir STATE_DIR EXTRA...``, logging beside its
    state dir (``STATE_DIR.log``)."""

    def __init__(
        self,
        bundle: Path,
        mode: str,
        state_dir: Path,
        env: dict[str, str] | None = None,
        *extra: str,
        timeout: float = 60,
    ) -> None:
        args = ["host", str(bundle), "--mode", mode, "--state-dir", str(state_dir), *extra]
        super().__init__(args, state_dir.with_suffix(".log"), env, timeout=timeout)


class KdsProcess(ServerProcess):
    """``sanctorum kds serve --state-dir STATE_DIR`` (simulation mode: it builds the KDS first),
    logging beside its state dir (``STATE_DIR.log``)."""

    def __init__(
        self, state_dir: Path, env: dict[str, str] | None = None, *, timeout: float = 120
    ) -> None:
        args = ["kds", "serve", "--state-dir", str(state_dir)]
        super().__init__(args, state_dir.with_suffix(".log"), env, timeout=timeout)
