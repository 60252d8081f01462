"""Several web hosts serving one service from one PostgreSQL database (``web.cluster``), in
this process: partitions shared out, mail through any host, leases, fencing and takeover."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from counting_enclave import Counter

from sanctorum import EnclaveClient, EnclaveInstanceInfo, EnclaveMode, WebTransport
from sanctorum.web.app import create_app
from sanctorum.web.cluster import ClusterService
from sanctorum.web.partitions import partition_of
from tests.postgres import PostgresServer
from tests.web.conftest import serve_app


@dataclass
class ClusterHost:
    service: ClusterService
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.service.close()


def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def hosts(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Callable[..., ClusterHost]]:
    url = postgres_server.new_database()
    running: list[ClusterHost] = []

    def start(partitions: int | None = 4, lease_time: float = 10.0) -> ClusterHost:
        service = ClusterService(
            Counter,
            EnclaveMode.MOCK,
            tmp_path / f"host-{len(running)}",
            database=url,
            partitions=partitions,
            lease_time=lease_time,
        )
        service.start()
        running.append(ClusterHost(service, *serve_app(create_app(service))))
        return running[-1]

    start.url = url  # type: ignore[attr-defined]
    yield start
    for host in running:
        with contextlib.suppress(Exception):
            host.stop()


def _held(host: ClusterHost) -> set[int]:
    leases = host.service.health()["leases"]
    assert isinstance(leases, list)
    return {lease["partition"] for lease in leases}


def _client(url: str, hint: str) -> EnclaveClient:
    transport = WebTransport(url, retry_for=30)
    info = EnclaveInstanceInfo.deserialize(transport.get_attestation())
    client = EnclaveClient(f"C:{info.code_hash} SEC:INSECURE")
    client.correlation_id = hint
    client.start(transport)
    return client


def test_two_hosts_share_the_partitions_and_answer_any_clients_mail(
    hosts: Callable[..., ClusterHost],
) -> None:
    first, second = hosts(), hosts()
    _until(lambda: len(_held(first)) == 2 and len(_held(second)) == 2)
    assert _held(first) | _held(second) == {0, 1, 2, 3}
    for number in range(8):
        hint = f"client-{number}"
        partition = partition_of(hint, 4)
        via = second if partition in _held(first) else first  # the host that does NOT hold it
        client = _client(via.url, hint)
        for round_ in range(1, 4):
            answer = client.send_mail(b"m")
            assert answer is not None
            assert answer.body == b"m #%d" % round_
