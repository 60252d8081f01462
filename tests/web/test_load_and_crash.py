"""Load and crash tests of the web host: every reply arrives once, in order, even across a
SIGKILL of the host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from sanctorum import (
    EnclaveClient,
    SanctorumError,
)
from tests.web.conftest import RunningHost, free_port, web_client

Start = Callable[[str], RunningHost]


_client = web_client


def _drain(client: EnclaveClient) -> list[bytes]:
    replies = []
    while (reply := client.poll_mail()) is not None:
        replies.append(reply.body)
    return replies


def test_twenty_concurrent_clients_get_every_reply_once_in_order(web_host: Start) -> None:
    host = web_host("Recorder")
    results: dict[int, list[bytes]] = {}
    failures: list[BaseException] = []

    def run(number: int) -> None:
        try:
            client, transport = _client(host.url)
            replies = []
            for index in range(100):
                reply = client.send_mail(f"client {number} mail {index}".encode())
                if reply is not None:
                    replies.append(reply.body)
            replies += _drain(client)
            results[number] = replies
            transport.close()
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)

    threads = [threading.Thread(target=run, args=(number,)) for number in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures[:3]
    for number in range(20):
        assert results[number] == [f"CLIENT {number} MAIL {i}".encode() for i in range(100)]


def _start_host(
    bundle: Path, state: Path, port: int, database: str | None = None
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sanctorum",
            "host",
            str(bundle),
            "--state-dir",
            str(state),
            "--port",
            str(port),
            *(["--database", database] if database else []),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes the enclave too
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the web host did not come up")


def test_sigkilled_host_loses_no_acknowledged_reply_and_duplicates_none(
    bundle_for: Callable[[str], Path],
    tmp_path: Path,
    store_engine: str,
    request: pytest.FixtureRequest,
) -> None:
    """In both engines: the state dir's SQLite file, or a real PostgreSQL database."""
    bundle, state, port = bundle_for("Recorder"), tmp_path / "state", free_port()
    database = None
    if store_engine == "postgres":
        database = request.getfixturevalue("postgres_server").new_database()
    url = f"http://127.0.0.1:{port}"
    host = _start_host(bundle, state, port, database)
    delivered: dict[int, set[str]] = {}  # mails whose delivery got a 200
    received: dict[int, list[str]] = {}
    failures: list[BaseException] = []
    sent = threading.Semaphore(0)

    def run(number: int) -> None:
        try:
            client, transport = _client(url)
            delivered[number], received[number] = set(), []
            for index in range(60):
                text = f"c{number}m{index}"
                try:
                    reply = client.send_mail(text.encode())
                except SanctorumError:
                    continue  # the host died under this request: no 200, no promise
                delivered[number].add(text)
                if reply is not None:
                    received[number].append(reply.body.decode())
                sent.release()
            received[number] += [body.decode() for body in _drain(client)]
            transport.close()
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(60):  # let the clients get going, then kill the host mid-stream
        sent.acquire(timeout=30)
    os.killpg(host.pid, signal.SIGKILL)
    host.wait()
    host = _start_host(bundle, state, port, database)
    try:
        for thread in threads:
            thread.join(timeout=300)
    finally:
        os.killpg(host.pid, signal.SIGTERM)
        host.wait(timeout=30)
    assert not failures, failures[:3]
    total = 0
    for number in range(4):
        replies = received[number]
        assert len(replies) == len(set(replies)), "a reply arrived twice"
        assert {text.upper() for text in delivered[number]} <= set(replies), "a reply was lost"
        total += len(delivered[number])
    assert total > 150  # most mails went through, before and after the kill
