"""``sanctorum host`` in a process of its own, for tests that drive it as users do."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx


class WebHostProcess:
    """``sanctorum host BUNDLE --mode MODE --state-dir STATE_DIR`` on a free port of the loopback
    interface, up (its ``/health`` answers) when the constructor returns; ``stop()`` or the
    ``with`` block's end ends it with SIGTERM. ``env`` is its environment (and is there for the
    clients the test starts beside it); ``extra`` adds command-line options."""

    def __init__(
        self,
        bundle: Path,
        mode: str,
        state_dir: Path,
        env: dict[str, str] | None = None,
        *extra: str,
        timeout: float = 60,
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.env = dict(os.environ if env is None else env)
        command = [sys.executable, "-m", "sanctorum", "host", str(bundle), "--mode", mode]
        self.process = subprocess.Popen(  # noqa: S603  (our own command)
            [*command, "--state-dir", str(state_dir), "--port", str(port), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"sanctorum host exited during start-up: {command!r}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sanctorum host did not come up within {timeout:g} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)

    def __enter__(self) -> WebHostProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
