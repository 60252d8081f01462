"""A real PostgreSQL server for the tests, on loopback, in a temporary directory.

``initdb`` and ``pg_ctl`` come from the distribution's server package (.ci/run installs it when
it is missing). PostgreSQL refuses to run as root, so under root the server runs as the
``postgres`` user the package creates.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _tool(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed: the PostgreSQL tests start a real server. "
            "Install the server (as root: apt-get install postgresql), as .ci/run does"
        )
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresServer:
    """Starts with the object; :meth:`stop` ends it. :meth:`new_database` gives a URL of a
    fresh, empty database."""

    def __init__(self) -> None:
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.directory = Path(tempfile.mkdtemp(prefix="sanctorum-postgres-"))
        if self._as_user:
            shutil.chown(self.directory, "postgres")
        self.port = _free_port()
        data = self.directory / "data"
        self._run(
            _tool("initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200"
        )
        self._run(
            _tool("pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(self.directory / "server.log"),
            "-w",
            "start",
        )
        self._data = data
        self._names = itertools.count(1)

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as_user, *command], check=True, capture_output=True, timeout=60)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = f"test_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def stop(self) -> None:
        self._run(_tool("pg_ctl"), "-D", str(self._data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)
