"""Scale-out end to end, as users run it: three ``sanctorum host`` processes serving one service
from one PostgreSQL database (six partitions, persistence keys from a KDS in its own process),
behind a real nginx. Twenty clients send a hundred mails each through nginx while one host is
SIGKILLed; the others take its partitions over from their journals, and every client still gets
each of its mails applied exactly once, in order."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from sanctorum import (
    EnclaveClient,
    EnclaveInstanceInfo,
    MailRefusedError,
    TransportError,
    WebTransport,
)
from sanctorum.build import build
from sanctorum.kds import KeySpec, MasterKeyType
from sanctorum.testing.servers import KdsProcess, WebHostProcess
from tests.conftest import ENCLAVES
from tests.nginx import NginxProxy
from tests.postgres import PostgresServer

HOSTS = 3
PARTITIONS = 6
CLIENTS = 20
MAILS = 100
KILL_AFTER = CLIENTS * MAILS // 3  # answers received before one host is killed
TOPIC = "default"


def _kds(directory: Path) -> tuple[KdsProcess, str, str]:
    """`sanctorum kds serve`: the process, its code hash and its cluster key."""
    kds = KdsProcess(directory / "kds")
    try:
        # Any spec will do: the answer carries the KDS's attestation and cluster key.
        probe = KeySpec("probe", MasterKeyType.CLUSTER, f"C:{'0' * 64} SEC:INSECURE")
        answer = httpx.post(f"{kds.url}/public", json=probe.to_json(), timeout=30)
        assert answer.status_code == 200, answer.text
        report = base64.b64decode(answer.json()["kdsAttestationReport"])
        code_hash = str(EnclaveInstanceInfo.deserialize(report).code_hash)
        cluster_key: str = answer.json()["clusterKey"]
    except BaseException:
        kds.stop()
        raise
    return kds, code_hash, cluster_key


def _counter_bundle(directory: Path, kds_code: str, cluster_key: str) -> tuple[Path, str]:
    """The Counter enclave (tests/enclaves/counting_enclave.py), its persistent map sealed with
    a persistence key from the KDS: its bundle and the constraint its clients check."""
    directory.mkdir()
    shutil.copy(ENCLAVES / "counting_enclave.py", directory / "counting_enclave.py")
    (directory / "enclave.toml").write_text(
        '[enclave]\nname = "counter"\nentry = "counting_enclave:Counter"\nproduct_id = 1\n'
        'revocation_level = 0\nsources = ["counting_enclave.py"]\npersistent_map = true\n'
        "max_persistent_map_size = 1048576\n"
        f'[kds]\nconstraint = "C:{kds_code} SEC:INSECURE"\ncluster_key = "{cluster_key}"\n'
        'policy_constraint = "SEC:INSECURE"\nuse_own_code_hash = true\n'
    )
    built = build(directory, directory / "build")
    return built.path, f"C:{built.code_hash} SEC:INSECURE"


def _start_hosts(
    bundle: Path, directory: Path, database: str, kds_url: str
) -> list[WebHostProcess]:
    """Three hosts on one database, started together (so they share the partitions out at
    once), each with a state dir of its own."""

    def start(number: int) -> WebHostProcess:
        return WebHostProcess(
            bundle,
            "simulation",
            directory / f"host-{number}",
            None,
            "--database",
            database,
            "--partitions",
            str(PARTITIONS),
            "--lease-time",
            "5",
            "--kds-url",
            kds_url,
        )

    with ThreadPoolExecutor(HOSTS) as pool:
        futures = [pool.submit(start, number) for number in range(HOSTS)]
    hosts = [future.result() for future in futures if future.exception() is None]
    if len(hosts) < HOSTS:
        for host in hosts:
            host.stop()
        for future in futures:
            future.result()  # raises the first failure
    return hosts


def _leases(host: WebHostProcess) -> dict[int, str]:
    """The partitions ``host`` holds, by its /health: partition -> state."""
    health = httpx.get(f"{host.url}/health", timeout=5).json()
    return {lease["partition"]: lease["state"] for lease in health["leases"]}


def _wait_for(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting until {what}"
        time.sleep(0.1)


def _kill(host: WebHostProcess) -> None:
    """SIGKILL the host and its enclave children (its process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(host.process.pid, signal.SIGKILL)
    host.process.wait(timeout=30)


def _stop(host: WebHostProcess) -> None:
    try:
        host.stop()
    except (OSError, subprocess.TimeoutExpired):
        _kill(host)


def _number(body: bytes) -> int:
    """N of an answer ``mN #COUNT`` (for ordering what arrived); garbage sorts last."""
    head = body.split(b" ", 1)[0]
    return int(head[1:]) if head[:1] == b"m" and head[1:].isdigit() else 1 << 30


class _Progress:
    """Answers received so far, by every client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.answered = 0

    def add(self) -> None:
        with self._lock:
            self.answered += 1


def _run_client(
    number: int,
    url: str,
    constraint: str,
    progress: _Progress,
    answers: list[bytes],
    notes: list[str],
    deadline: float,
) -> None:
    """Send ``m1``..``m100`` one after another, recording every answer; a mail whose outcome
    is unknown is left in doubt (the next send delivers it again), a refused one is sent again."""
    client = EnclaveClient(constraint)
    client.correlation_id = f"client-{number}"

    def record(body: bytes) -> None:
        answers.append(body)
        progress.add()

    def drain() -> None:
        while True:
            try:
                mail = client.poll_mail()
            except TransportError as error:  # polling again is safe: the mail stays till opened
                notes.append(f"poll: {error}")
                time.sleep(0.1)
            else:
                if mail is None:
                    return
                record(mail.body)
            assert time.monotonic() < deadline, f"client-{number} still polling: {notes[-3:]}"

    with WebTransport(url, retry_for=60) as transport:
        client.start(transport)
        index = 1
        while index <= MAILS:
            assert time.monotonic() < deadline, f"client-{number} still at m{index}"
            body = b"m%d" % index
            try:
                answer = client.send_mail(body)
            except MailRefusedError as error:  # not delivered: send the same body again
                notes.append(f"{body!r}: {error}")
                continue
            except TransportError as error:
                notes.append(f"{body!r}: {error}")
                # Raised while delivering again the mail in doubt before this one (this one
                # was not sealed: send it), while delivering this one (now in doubt: the next
                # send delivers it again), or while fetching its answer (delivered: the answer
                # waits in the mailbox, as the host answers 200 only once it was stored).
                drain()
                doubtful = client.in_doubt(TOPIC)
                if (doubtful is not None and doubtful.body == body) or any(
                    _number(answer) == index for answer in answers
                ):
                    index += 1
                continue
            if answer is not None:
                record(answer.body)
            drain()
            index += 1
        while len(answers) < MAILS:
            doubtful = client.in_doubt(TOPIC)
            assert time.monotonic() < deadline, (
                f"client-{number} got only {len(answers)} answers; in doubt: "
                f"{None if doubtful is None else doubtful.body!r}"
            )
            drain()
            time.sleep(0.2)


@pytest.mark.timeout(300)
def test_three_hosts_lose_one_and_every_mail_is_applied_once_in_order(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    database = postgres_server.new_database()
    kds, kds_code, cluster_key = _kds(tmp_path)
    hosts: list[WebHostProcess] = []
    nginx: NginxProxy | None = None
    try:
        bundle, constraint = _counter_bundle(tmp_path / "counter", kds_code, cluster_key)
        hosts = _start_hosts(bundle, tmp_path, database, kds.url)

        def balanced() -> bool:
            leases = [_leases(host) for host in hosts]
            return all(
                len(held) == PARTITIONS // HOSTS and set(held.values()) == {"serving"}
                for held in leases
            )

        _wait_for("each host serves two partitions", balanced, 45)
        nginx = proxy = NginxProxy([host.url for host in hosts], tmp_path / "nginx")

        progress = _Progress()
        answers: list[list[bytes]] = [[] for _ in range(CLIENTS)]
        notes: list[list[str]] = [[] for _ in range(CLIENTS)]
        failures: list[str] = []
        deadline = time.monotonic() + 180

        def run(number: int) -> None:
            try:
                _run_client(
                    number,
                    proxy.url,
                    constraint,
                    progress,
                    answers[number],
                    notes[number],
                    deadline,
                )
            except BaseException as error:  # reported by the test's thread
                failures.append(f"client-{number}: {type(error).__name__}: {error}")

        threads = [threading.Thread(target=run, args=(number,)) for number in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            _wait_for(f"{KILL_AFTER} answers", lambda: progress.answered >= KILL_AFTER, 120)
            victim = hosts[0]
            killed = set(_leases(victim))
            assert killed, "the host to kill holds no partition"
            _kill(victim)
        finally:
            for thread in threads:
                thread.join(timeout=200)
        assert not any(thread.is_alive() for thread in threads), "a client hung"

        survivors = hosts[1:]
        problems = list(failures)
        for number in range(CLIENTS):
            expected = [b"m%d #%d" % (index, index) for index in range(1, MAILS + 1)]
            got = sorted(answers[number], key=_number)
            if got != expected:
                missing = [body for body in expected if body not in got]
                unexpected = [body for body in got if body not in expected]
                twice = sorted({body for body in got if got.count(body) > 1}, key=_number)
                problems.append(
                    f"client-{number}: {len(got)} answers, not each of m1..m{MAILS} answered "
                    f"once with its own number (a count out of step: a mail lost or applied "
                    f"twice); missing {missing[:5]}, unexpected {unexpected[:5]}, received "
                    f"twice {twice[:5]}; as received: {answers[number]}; transport errors: "
                    f"{notes[number]}"
                )
        assert not problems, "\n".join(problems)

        def covered() -> bool:
            held = [_leases(host) for host in survivors]
            partitions = [number for leases in held for number in leases]
            return sorted(partitions) == list(range(PARTITIONS)) and all(
                state == "serving" for leases in held for state in leases.values()
            )

        _wait_for("the survivors serve every partition once", covered, 10)
        taken = {number for host in survivors for number in _leases(host)}
        assert killed <= taken, f"the killed host's partitions {killed} were not taken over"
    finally:
        if nginx is not None:
            nginx.stop()
        for host in hosts:
            _stop(host)
        kds.stop()
