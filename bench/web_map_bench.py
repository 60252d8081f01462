"""The web host's mail throughput with a 100k-entry persistent map, against the same host with
an empty one, same run, load from another process (issue 12).

Both hosts serve one bench enclave (built here) in simulation mode, each from its own state
dir; every mail changes a key of the map and is answered, so every mail commits. One host's map
is first filled with 100,000 entries of 100 bytes by one mail. Each mail's commit is then a
journal record of what it changed, whatever the map's size, where before the journal it
resealed and stored the whole map (~3 mails/s at 100k entries). Rounds alternate the two hosts
(the order rotating) after a warm-up; the load comes from ``load_generator.py`` at 16
connections. Goal: the full map's host at least 50% of the empty one's mails/s.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from results import Figure, Report
from web_bench import _free_port, _load, _percentile, _wait

from sanctorum import EnclaveInstanceInfo
from sanctorum.build import build
from sanctorum.common.keys import Curve25519PrivateKey

BENCH = "web-map"
ENTRIES = 100_000
CONNECTIONS = 16
PER_ROUND = 20  # mails per connection per round
ROUNDS = 7
GOAL = 0.5

_TOML = """
[enclave]
name = "map-keeper"
entry = "map_keeper:MapKeeper"
product_id = 1
revocation_level = 0
sources = ["map_keeper.py"]
persistent_map = true
max_persistent_map_size = 67108864
"""

_SOURCE = '''
from sanctorum import Enclave, EnclaveMail


class MapKeeper(Enclave):
    """``fill N`` writes N entries; any other mail sets the key its sender's topic names."""

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        if mail.body.startswith(b"fill "):
            for index in range(int(mail.body[5:])):
                self.persistent_map[f"entry-{index:07d}"] = index.to_bytes(4, "big") * 25
        else:
            self.persistent_map[f"last-{routing_hint}"] = mail.body
        self.post_mail(self.post_office(mail).encrypt_mail(mail.body[::-1]), routing_hint)
'''


def report() -> Report:
    print(
        f"Web host with a {ENTRIES:,}-entry persistent map vs the same host with an empty map; "
        f"every mail commits; {CONNECTIONS} connections, {ROUNDS} rounds after a warm-up"
    )
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        project = work / "project"
        project.mkdir()
        (project / "enclave.toml").write_text(_TOML)
        (project / "map_keeper.py").write_text(_SOURCE)
        bundle = build(project, work / "build").path
        ports = {"100k map": _free_port(), "empty map": _free_port()}
        servers = []
        try:
            for port in ports.values():
                log = (work / f"{port}.log").open("wb")
                servers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "sanctorum",
                            "host",
                            str(bundle),
                            "--port",
                            str(port),
                            "--state-dir",
                            str(work / f"state-{port}"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=log,  # a line per request, to a file as in a deployment
                    )
                )
            for port in ports.values():
                _wait(f"http://127.0.0.1:{port}")
            infos = {
                name: EnclaveInstanceInfo.deserialize(
                    httpx.get(f"http://127.0.0.1:{port}/attestation").content
                )
                for name, port in ports.items()
            }
            _fill(infos["100k map"], ports["100k map"])
            rates, latencies = _rounds(infos, ports, work)
        finally:
            for server in servers:
                server.terminate()
                server.wait()
    full, empty = rates["100k map"], rates["empty map"]
    ratio = statistics.median(f / e for f, e in zip(full, empty, strict=True))
    met = ratio >= GOAL
    for name in ports:
        print(
            f"  {name:9}  mails/s min {min(rates[name]):6.0f} median "
            f"{statistics.median(rates[name]):6.0f}   p50 "
            f"{_percentile(latencies[name], 0.5) * 1e3:6.2f} ms   p99 "
            f"{_percentile(latencies[name], 0.99) * 1e3:6.2f} ms"
        )
    print(f"  100k map / empty map: {ratio:.0%}  {'met' if met else 'MISSED'} (≥{GOAL:.0%})")
    result = Report()
    result.add(
        Figure(
            BENCH,
            f"web/mails-per-second/{ENTRIES // 1000}k-map-vs-empty",
            statistics.median(full),
            floor=statistics.median(empty),
            ratio=ratio,
            ratio_of="value/floor",
            goal=f"at least {GOAL:.0%} of the same host with an empty map",
            met=met,
            min=min(full),
            rounds=ROUNDS,
            unit="mails/s",
        )
    )
    return result


def _fill(info: EnclaveInstanceInfo, port: int) -> None:
    office = info.create_post_office(Curve25519PrivateKey.generate(), "fill")
    answer = httpx.post(
        f"http://127.0.0.1:{port}/deliver-mail",
        content=office.encrypt_mail(f"fill {ENTRIES}".encode()),
        headers={"Correlation-ID": "fill"},
        timeout=300,
    )
    answer.raise_for_status()


def _rounds(
    infos: dict[str, EnclaveInstanceInfo], ports: dict[str, int], work: Path
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    # Every connection is one client per host; its mails are sealed ahead, for all rounds.
    sealed = {
        name: [
            (
                [office.encrypt_mail(b"a change") for _ in range(PER_ROUND * (ROUNDS + 1))],
                f"{name.replace(' ', '-')}-{number}",
            )
            for number in range(CONNECTIONS)
            for office in [info.create_post_office(Curve25519PrivateKey.generate(), "bench")]
        ]
        for name, info in infos.items()
    }
    rates: dict[str, list[float]] = {name: [] for name in ports}
    latencies: dict[str, list[float]] = {name: [] for name in ports}
    for round_number in range(ROUNDS + 1):
        names = list(ports)
        if round_number % 2:
            names.reverse()
        for name in names:
            start = round_number * PER_ROUND
            plan = [(bodies[start : start + PER_ROUND], cid) for bodies, cid in sealed[name]]
            result = _load(ports[name], "/deliver-mail", plan, work)
            if round_number == 0:
                continue  # warm-up
            rates[name].append(CONNECTIONS * PER_ROUND / float(result["seconds"]))  # type: ignore[arg-type]
            latencies[name].extend(result["latencies"])  # type: ignore[arg-type]
    return rates, latencies


if __name__ == "__main__":
    sys.exit(0 if report().ok else 1)
