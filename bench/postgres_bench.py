"""One web host on PostgreSQL beside one on SQLite: mails/s at 16 connections, same run.

The hosts serve the same bundle, each in its own process: one keeps its mailbox and sealed
state in the state dir's SQLite file, the others in databases of a real PostgreSQL server on
loopback (started here, as the tests start it): one as configured by default (every commit on
disk before the reply is answered), one with ``synchronous_commit=off`` set in its URL (the
last commits may be lost if the database server crashes: SQLite's ``synchronous=NORMAL``
promises as much), for information. The load comes from ``load_generator.py`` in
another process; a warm-up round, then rounds alternating the two (the order rotating); min and
median mails/s, p50/p99 latency, and the median of the per-round ratios.
Goal (issue 15): PostgreSQL at least 50% of SQLite.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from results import Figure, Report
from web_bench import _free_port, _load, _wait, rate_line

from sanctorum import EnclaveInstanceInfo
from sanctorum.build import build
from sanctorum.common.keys import Curve25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.postgres import PostgresServer

HELLO = Path(__file__).resolve().parents[1] / "samples" / "hello"
CONNECTIONS, PER_ROUND, ROUNDS = 16, 20, 7
GOAL = 0.5


def report() -> Report:
    print(
        f"Web host on PostgreSQL vs on SQLite: {CONNECTIONS} connections, {ROUNDS} rounds after "
        "a warm-up, load from another process"
    )
    server = PostgresServer()
    result = Report()
    try:
        with tempfile.TemporaryDirectory() as directory:
            work = Path(directory)
            bundle = build(HELLO, work / "build").path
            ports = {"sqlite": _free_port(), "postgres": _free_port(), "pg-async": _free_port()}
            asynchronous = server.new_database() + "?options=-c%20synchronous_commit%3Doff"
            extra = {
                "sqlite": [],
                "postgres": ["--database", server.new_database()],
                "pg-async": ["--database", asynchronous],
            }
            hosts = []
            for name, port in ports.items():
                command = [sys.executable, "-m", "sanctorum", "host", str(bundle)]
                command += ["--port", str(port), "--state-dir", str(work / name), *extra[name]]
                log = (work / f"{name}.log").open("wb")
                hosts.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log))
            try:
                for port in ports.values():
                    _wait(f"http://127.0.0.1:{port}")
                result.add(_compare(ports, work))
            finally:
                for host in hosts:
                    host.terminate()
                    host.wait()
    finally:
        server.stop()
    return result


def _compare(ports: dict[str, int], work: Path) -> Figure:
    sealed: dict[str, list[tuple[list[bytes], str]]] = {}
    for name, port in ports.items():
        info = EnclaveInstanceInfo.deserialize(
            httpx.get(f"http://127.0.0.1:{port}/attestation").content
        )
        sealed[name] = []
        for number in range(CONNECTIONS):
            office = info.create_post_office(Curve25519PrivateKey.generate(), "bench")
            bodies = [office.encrypt_mail(b"reverse me") for _ in range(PER_ROUND * (ROUNDS + 1))]
            sealed[name].append((bodies, f"c{number}"))
    rates: dict[str, list[float]] = {name: [] for name in ports}
    latencies: dict[str, list[float]] = {name: [] for name in ports}
    for round_number in range(ROUNDS + 1):
        names = list(ports)
        names = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in names:
            start = round_number * PER_ROUND
            plan = [(bodies[start : start + PER_ROUND], cid) for bodies, cid in sealed[name]]
            outcome = _load(ports[name], "/deliver-mail", plan, work)
            if round_number == 0:
                continue  # warm-up
            rates[name].append(CONNECTIONS * PER_ROUND / float(outcome["seconds"]))  # type: ignore[arg-type]
            latencies[name].extend(outcome["latencies"])  # type: ignore[arg-type]
    ratios = [p / s for p, s in zip(rates["postgres"], rates["sqlite"], strict=True)]
    ratio = statistics.median(ratios)
    met = ratio >= GOAL
    asynchronous = statistics.median(
        p / s for p, s in zip(rates["pg-async"], rates["sqlite"], strict=True)
    )
    for name in ports:
        print(rate_line(name, rates[name], latencies[name]))
    print(
        f"  postgres / sqlite: median {ratio:.0%} (min {min(ratios):.0%})  "
        f"{'met' if met else 'MISSED'} (≥{GOAL:.0%});  pg-async / sqlite: median "
        f"{asynchronous:.0%} (for information)"
    )
    return Figure(
        "postgres",
        f"postgres/mails-per-second/{CONNECTIONS}-connections",
        statistics.median(rates["postgres"]),
        floor=statistics.median(rates["sqlite"]),
        ratio=ratio,
        ratio_of="value/floor",
        goal=f"at least {GOAL:.0%} of the same host on SQLite (issue 15)",
        met=met,
        min=min(rates["postgres"]),
        rounds=ROUNDS,
        unit="mails/s",
    )


if __name__ == "__main__":
    report()
