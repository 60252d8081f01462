"""The web host's mail throughput against an honest floor, same run, load from another process.

The floor is a bare ASGI app on uvicorn doing the durable work any correct host must do per
delivered mail: one SQLite transaction (WAL, ``synchronous=NORMAL``, as the host's store) that
stores the reply, and a second that fetches it and drops what the client acknowledged. It does no
cryptography and runs no enclave: what separates the two is the enclave call, the framing and
the host's own code. Both servers run in their own processes; the load comes from
``load_generator.py`` in a third, over raw keep-alive HTTP/1.1 at 1, 16 and 64 connections.
Each level runs a warm-up round, then rounds alternating host and floor (the order rotating),
and prints min and median mails/s, p50/p99 latency, and the median (and min) of the per-round
ratios.
Goal (issue 12): at least 60% of the floor at every level.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from results import Figure, Report

from sanctorum import EnclaveInstanceInfo
from sanctorum.build import build
from sanctorum.common.keys import Curve25519PrivateKey

HELLO = Path(__file__).resolve().parents[1] / "samples" / "hello"
GENERATOR = Path(__file__).resolve().parent / "load_generator.py"
LEVELS = {1: 150, 16: 20, 64: 6}  # connections: mails each per round
ROUNDS = 7
GOAL = 0.6

_FLOOR_SERVER = r"""
import sqlite3, sys, threading, uvicorn

connection = sqlite3.connect(sys.argv[2], check_same_thread=False, isolation_level=None)
connection.execute("PRAGMA journal_mode=WAL")
connection.execute("PRAGMA synchronous=NORMAL")
connection.execute(
    "CREATE TABLE IF NOT EXISTS mailbox (id INTEGER PRIMARY KEY AUTOINCREMENT, hint TEXT, "
    "mail BLOB)"
)
lock = threading.Lock()


def deliver(body, hint, acknowledged):
    with lock:  # one writer, as the host's store
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO mailbox (hint, mail) VALUES (?, ?)", (hint, body))
        connection.execute("COMMIT")
        connection.execute("BEGIN IMMEDIATE")
        if acknowledged is not None:
            connection.execute(
                "DELETE FROM mailbox WHERE hint = ? AND id <= ?", (hint, acknowledged)
            )
        row = connection.execute(
            "SELECT id, mail FROM mailbox WHERE hint = ? ORDER BY id LIMIT 1", (hint,)
        ).fetchone()
        connection.execute("COMMIT")
    return row


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    if scope["path"] == "/health":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    hint = headers.get(b"correlation-id", b"").decode()
    acknowledged = headers.get(b"acknowledge-mail-id")
    row = deliver(body, hint, int(acknowledged) if acknowledged else None)
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(len(row[1])).encode()),
            (b"mail-id", str(row[0]).encode()),
        ],
    })
    await send({"type": "http.response.body", "body": row[1]})


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def _load(
    port: int, path: str, plan: list[tuple[list[bytes], str]], work: Path
) -> dict[str, object]:
    """One round of load from the generator process; its JSON result."""
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps([([b.hex() for b in bodies], cid) for bodies, cid in plan]))
    done = subprocess.run(
        [sys.executable, str(GENERATOR), str(port), path, str(plan_file)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result: dict[str, object] = json.loads(done.stdout)
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} requests to port {port} failed")
    return result


def rate_line(name: str, rates: list[float], latencies: list[float]) -> str:
    """A server's rounds as one line: min and median mails/s, p50 and p99 latency."""
    return (
        f"  {name:8}  mails/s min {min(rates):7.0f} median {statistics.median(rates):7.0f}   "
        f"p50 {_percentile(latencies, 0.5) * 1e3:6.2f} ms   "
        f"p99 {_percentile(latencies, 0.99) * 1e3:6.2f} ms"
    )


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report() -> Report:
    print(
        f"Web host vs a bare ASGI app doing the same SQLite work (WAL, two transactions per "
        f"mail); load from another process; {ROUNDS} rounds per level after a warm-up"
    )
    result = Report()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        bundle = build(HELLO, work / "build").path
        host_port, floor_port = _free_port(), _free_port()
        with (work / "host.log").open("wb") as host_log:
            host = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sanctorum",
                    "host",
                    str(bundle),
                    "--port",
                    str(host_port),
                    "--state-dir",
                    str(work / "state"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=host_log,  # a line per request, to a file as in a deployment
            )
            floor = subprocess.Popen(
                [sys.executable, "-c", _FLOOR_SERVER, str(floor_port), str(work / "floor.db")],
                stdout=subprocess.DEVNULL,
            )
            try:
                _wait(f"http://127.0.0.1:{host_port}")
                _wait(f"http://127.0.0.1:{floor_port}")
                attestation = httpx.get(f"http://127.0.0.1:{host_port}/attestation").content
                info = EnclaveInstanceInfo.deserialize(attestation)
                for connections, per_round in LEVELS.items():
                    result.add(_level(info, connections, per_round, host_port, floor_port, work))
            finally:
                for process in (host, floor):
                    process.terminate()
                    process.wait()
    return result


def _level(
    info: EnclaveInstanceInfo,
    connections: int,
    per_round: int,
    host_port: int,
    floor_port: int,
    work: Path,
) -> Figure:
    # Every connection is one client; its mails are sealed ahead, in sequence, for all rounds.
    sealed = []
    for number in range(connections):
        office = info.create_post_office(Curve25519PrivateKey.generate(), "bench")
        bodies = [
            office.encrypt_mail(b"reverse me, please") for _ in range(per_round * (ROUNDS + 1))
        ]
        sealed.append((bodies, f"c{connections}-{number}"))

    def plan(round_number: int) -> list[tuple[list[bytes], str]]:
        start = round_number * per_round
        return [(bodies[start : start + per_round], cid) for bodies, cid in sealed]

    targets = {"web host": (host_port, "/deliver-mail"), "floor": (floor_port, "/deliver-mail")}
    rates: dict[str, list[float]] = {name: [] for name in targets}
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    for round_number in range(ROUNDS + 1):
        names = list(targets)
        if round_number % 2:
            names.reverse()
        for name in names:
            port, path = targets[name]
            result = _load(port, path, plan(round_number), work)
            if round_number == 0:
                continue  # warm-up
            seconds = float(result["seconds"])  # type: ignore[arg-type]
            rates[name].append(connections * per_round / seconds)
            latencies[name].extend(result["latencies"])  # type: ignore[arg-type]
    ratios = [host / floor for host, floor in zip(rates["web host"], rates["floor"], strict=True)]
    ratio = statistics.median(ratios)
    met = ratio >= GOAL
    print(f"  {connections:>2} connection(s)")
    for name in targets:
        print("  " + rate_line(name, rates[name], latencies[name]))
    print(
        f"    web host / floor: median {ratio:.0%} (min {min(ratios):.0%})  "
        f"{'met' if met else 'MISSED'} (≥{GOAL:.0%})"
    )
    return Figure(
        "web",
        f"web/mails-per-second/{connections}-connections",
        statistics.median(rates["web host"]),
        floor=statistics.median(rates["floor"]),
        ratio=ratio,
        ratio_of="value/floor",
        goal=f"at least {GOAL:.0%} of a bare ASGI app doing the same SQLite work",
        met=met,
        min=min(rates["web host"]),
        rounds=ROUNDS,
        unit="mails/s",
    )
