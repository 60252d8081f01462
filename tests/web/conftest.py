"""A web host serving a behaviour enclave, in a background thread on a free port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from sanctorum import EnclaveClient, EnclaveInstanceInfo, EnclaveMode, WebTransport
from sanctorum.web.app import create_app
from sanctorum.web.cluster import DEFAULT_FORWARD_TIMEOUT, ClusterService
from sanctorum.web.logs import ASGIApp
from sanctorum.web.service import EnclaveService
from tests.postgres import PostgresServer


@dataclass
class RunningHost:
    service: EnclaveService
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.service.close()


def web_client(url: str, retry_for: float = 30) -> tuple[EnclaveClient, WebTransport]:
    """A client of the web host at ``url``, started, trusting its (simulation) code hash."""
    transport = WebTransport(url, retry_for=retry_for)
    info = EnclaveInstanceInfo.deserialize(transport.get_attestation())
    client = EnclaveClient(f"C:{info.code_hash} SEC:INSECURE")
    client.start(transport)
    return client, transport


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve_app(app: ASGIApp) -> tuple[str, uvicorn.Server, threading.Thread]:
    """Serve ``app`` on a free port, in a thread; its URL, server and thread."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the web host did not start")
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server, thread


def serve(
    service: EnclaveService, max_body_size: int = 1 << 20, app: ASGIApp | None = None
) -> RunningHost:
    """Serve ``service`` with the web host's app (or ``app``) on a free port, in a thread."""
    return RunningHost(service, *serve_app(app or create_app(service, max_body_size)))


@pytest.fixture
def web_host(
    bundle_for: Callable[[str], Path], tmp_path: Path
) -> Iterator[Callable[[str], RunningHost]]:
    """Starts a web host for the named behaviour enclave (simulation mode)."""
    running: list[RunningHost] = []

    def start(entry: str) -> RunningHost:
        service = EnclaveService(bundle_for(entry), EnclaveMode.SIMULATION, tmp_path / entry)
        service.start()
        host = serve(service)
        running.append(host)
        return host

    yield start
    for host in running:
        host.stop()


@dataclass
class ClusterHost:
    """A web host of a service kept in PostgreSQL (``web.cluster``), served in a thread."""

    service: ClusterService
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.service.close()


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> str:
    """A fresh database of the test session's PostgreSQL server."""
    return postgres_server.new_database()


@pytest.fixture
def cluster(database_url: str, tmp_path: Path) -> Iterator[Callable[..., ClusterHost]]:
    """Starts hosts of one service (the mock ``Counter`` enclave) on ``database_url``."""
    from counting_enclave import Counter

    running: list[ClusterHost] = []

    def start(
        partitions: int | None = 4,
        lease_time: float = 10.0,
        forward_timeout: float = DEFAULT_FORWARD_TIMEOUT,
    ) -> ClusterHost:
        service = ClusterService(
            Counter,
            EnclaveMode.MOCK,
            tmp_path / f"host-{len(running)}",
            database=database_url,
            partitions=partitions,
            lease_time=lease_time,
            forward_timeout=forward_timeout,
        )
        service.start()
        running.append(ClusterHost(service, *serve_app(create_app(service))))
        return running[-1]

    yield start
    for host in running:
        with contextlib.suppress(Exception):
            host.stop()
