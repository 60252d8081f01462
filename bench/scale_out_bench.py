"""Three web hosts on one PostgreSQL database beside one host, and how fast a dead host's
partitions answer again elsewhere; same run, load from another process.

Throughput: one ``sanctorum host --database`` serving all 6 partitions (an enclave instance
each), beside three hosts on another database of the same PostgreSQL server (6 partitions, 2
each) behind a real nginx that spreads every request over them in turn; the same bundle, the
same 16 clients (distinct Correlation-IDs spread over the partitions), the load from
``load_generator.py`` in another process, a warm-up round, then rounds alternating the two (the
order rotating). Printed: min and median mails/s, p50/p99 latency, and the CPU per mail of every
process that serves (hosts and their enclave processes, the PostgreSQL server's processes but
the other database's sessions, nginx for the three hosts; from /proc before and after each
round), and the cores kept busy (CPU per mail times mails/s); each beside the one host's as a
ratio. On a 2-core machine three hosts cannot scale out: the figure is the CPU per mail, the
cost of distribution (the nginx hop, and the inbox + NOTIFY round trip of the two thirds of the
mail that reaches a host that does not hold its partition); "cores busy" says how near each
set-up came to using both cores.

Failover: three hosts on one database; in each round a partition's holder (found by /health)
has its process group SIGKILLed while a client of that partition waits, and the client sends
mail through a surviving host (directly) until the first reply: SIGKILL to that reply. The
killed host is started again and the cluster left to balance before the next round. Its peer,
in the same rounds: the SIGKILL of the enclave process of a plain ``sanctorum host`` on SQLite,
until the first reply from the instance it restarts in place. Min, median (p50) and p99 of
each, and their ratio. For information (no goal yet).
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from results import Figure, Report
from web_bench import _free_port, _load, _percentile, _wait, rate_line

from sanctorum import EnclaveInstanceInfo
from sanctorum.build import build
from sanctorum.common.headers import ACKNOWLEDGE_HEADER, CORRELATION_HEADER, MAIL_ID_HEADER
from sanctorum.common.keys import Curve25519PrivateKey
from sanctorum.web.partitions import partition_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.nginx import NginxProxy
from tests.postgres import PostgresServer

HELLO = Path(__file__).resolve().parents[1] / "samples" / "hello"
CONNECTIONS, PER_ROUND, ROUNDS = 16, 20, 7
PARTITIONS, HOSTS = 6, 3
KILLS = 12  # failover rounds measured, after a warm-up one
LEASE_TIME = 10.0  # the default: a killed host's leases move at once all the same
_PAUSE = 0.02  # seconds between tries of a client waiting for a partition to answer again
_GIVE_UP = 60.0  # seconds: a failover or a balance that takes longer is a failure
_TICKS = os.sysconf("SC_CLK_TCK")
ONE, THREE = "one host", "3 hosts"
FAILOVER, RESTART = "failover", "restart in place"


def report() -> Report:
    print(
        f"Scale-out: {HOSTS} web hosts on one PostgreSQL database ({PARTITIONS} partitions, "
        f"{PARTITIONS // HOSTS} each) behind nginx vs one host ({PARTITIONS} partitions) on "
        f"another database of the same server; {CONNECTIONS} connections, {ROUNDS} rounds after "
        "a warm-up, load from another process"
    )
    result = Report()
    server = PostgresServer()
    try:
        with tempfile.TemporaryDirectory() as directory:
            work = Path(directory)
            bundle = build(HELLO, work / "build").path
            one_db, cluster_db = server.new_database(), server.new_database()
            one = _Host(bundle, work, "one", ["--database", one_db, *_partitioned()])
            cluster = [
                _Host(bundle, work, f"host{number}", ["--database", cluster_db, *_partitioned()])
                for number in range(HOSTS)
            ]
            sqlite = _Host(bundle, work, "sqlite", [])
            everyone = [one, *cluster, sqlite]
            proxy: NginxProxy | None = None
            try:
                for host in everyone:
                    host.start()
                for host in everyone:
                    host.wait_up()
                _balanced(cluster)
                proxy = NginxProxy([host.url for host in cluster], work / "nginx")
                postmaster = int(
                    (server.directory / "data" / "postmaster.pid").read_text().split()[0]
                )
                serving = {
                    ONE: _Serving([one.pid], postmaster, _name(cluster_db)),
                    THREE: _Serving(
                        [host.pid for host in cluster] + [_nginx_pid(proxy)],
                        postmaster,
                        _name(one_db),
                    ),
                }
                ports = {ONE: one.port, THREE: proxy.port}
                result.figures += _throughput(ports, serving, work)
                one.stop()  # idle from here on: it would only add noise
                print()
                result.figures += _failover(cluster, sqlite)
            finally:
                if proxy is not None:
                    proxy.stop()
                for host in everyone:
                    host.stop()
    finally:
        server.stop()
    return result


def _partitioned() -> list[str]:
    return ["--partitions", str(PARTITIONS), "--lease-time", f"{LEASE_TIME:g}"]


def _name(url: str) -> str:
    """A database URL's database name."""
    return url.rsplit("/", 1)[1].split("?")[0]


def _nginx_pid(proxy: NginxProxy) -> int:
    """nginx's master process (its worker is a child): the pid file it writes."""
    return int((proxy.directory / "nginx.pid").read_text().split()[0])


class _Host:
    """A ``sanctorum host`` in its own process group (a SIGKILL of the group takes its enclave
    processes with it), on a fixed port and state dir, so that it can be started again."""

    def __init__(self, bundle: Path, work: Path, name: str, options: list[str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "sanctorum", "host", str(bundle)]
        self.command += ["--port", str(self.port), "--state-dir", str(work / name), *options]
        self.log = work / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:  # a line per request, to a file as in a deployment
            self.process = subprocess.Popen(
                self.command, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_up(self) -> None:
        _wait(self.url)

    def kill(self) -> float:
        """SIGKILL the host and its enclave processes; when (``perf_counter``)."""
        assert self.process is not None
        killed = time.perf_counter()
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return killed

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):  # anything left in its group
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def leases(self) -> list[dict[str, object]]:
        """The leases /health lists (none if the host does not answer)."""
        try:
            leases = httpx.get(f"{self.url}/health", timeout=2).json().get("leases", [])
        except (httpx.HTTPError, ValueError):
            return []
        return leases if isinstance(leases, list) else []

    def serving(self) -> set[int]:
        return {
            int(lease["partition"])  # type: ignore[call-overload]
            for lease in self.leases()
            if lease.get("state") == "serving"
        }


def _balanced(cluster: list[_Host]) -> None:
    """Wait until every host serves its share and together they serve every partition."""
    deadline = time.monotonic() + _GIVE_UP
    share = PARTITIONS // len(cluster)
    while True:
        held = [host.serving() for host in cluster]
        if all(len(mine) == share for mine in held) and set().union(*held) == set(
            range(PARTITIONS)
        ):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the hosts did not balance the partitions: {held}")
        time.sleep(0.05)


# -- CPU time of the processes that serve ---------------------------------------------------


def _processes() -> Iterator[tuple[int, int, float, str]]:
    """Every process: pid, parent pid, CPU seconds (user + system), command line."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            title = Path(entry.path, "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue  # it ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICKS
        yield int(entry.name), int(fields[1]), cpu, title.replace("\0", " ")


class _Serving:
    """The processes that serve one of the two set-ups: the process trees of ``roots``, and
    the PostgreSQL server's (the postmaster and its children but the sessions of ``other``,
    the other set-up's database)."""

    def __init__(self, roots: list[int], postmaster: int, other: str) -> None:
        self.roots, self.postmaster, self.other = roots, postmaster, f" {other} "

    def cpu(self) -> dict[int, float]:
        """CPU seconds so far of each process that serves."""
        table = {pid: (parent, cpu, title) for pid, parent, cpu, title in _processes()}
        children: dict[int, list[int]] = {}
        for pid, (parent, _, _) in table.items():
            children.setdefault(parent, []).append(pid)
        chosen: dict[int, float] = {}
        waiting = [pid for pid in self.roots if pid in table]
        for pid in children.get(self.postmaster, []):
            if self.other not in table[pid][2]:
                chosen[pid] = table[pid][1]
        if self.postmaster in table:
            chosen[self.postmaster] = table[self.postmaster][1]
        while waiting:
            pid = waiting.pop()
            chosen[pid] = table[pid][1]
            waiting += children.get(pid, [])
        return chosen


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two looks (a process started meanwhile counts from zero)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


# -- throughput -------------------------------------------------------------------------------


def _clients() -> list[str]:
    """Correlation-IDs of the clients: connection i's in partition i mod PARTITIONS."""
    found: list[str] = []
    number = 0
    while len(found) < CONNECTIONS:
        hint = f"scale-{number}"
        number += 1
        if partition_of(hint, PARTITIONS) == len(found) % PARTITIONS:
            found.append(hint)
    return found


def _sealed(port: int, hints: list[str]) -> list[tuple[list[bytes], str]]:
    """Each client's mails for every round, sealed ahead to its partition's instance."""
    sealed = []
    for hint in hints:
        answer = httpx.get(
            f"http://127.0.0.1:{port}/attestation", headers={CORRELATION_HEADER: hint}, timeout=10
        )
        answer.raise_for_status()
        office = EnclaveInstanceInfo.deserialize(answer.content).create_post_office(
            Curve25519PrivateKey.generate(), "bench"
        )
        bodies = [office.encrypt_mail(b"reverse me") for _ in range(PER_ROUND * (ROUNDS + 1))]
        sealed.append((bodies, hint))
    return sealed


def _throughput(ports: dict[str, int], serving: dict[str, _Serving], work: Path) -> list[Figure]:
    hints = _clients()
    sealed = {name: _sealed(port, hints) for name, port in ports.items()}
    rates: dict[str, list[float]] = {name: [] for name in ports}
    latencies: dict[str, list[float]] = {name: [] for name in ports}
    cpu: dict[str, list[float]] = {name: [] for name in ports}  # seconds per mail
    mails = CONNECTIONS * PER_ROUND
    for round_number in range(ROUNDS + 1):
        names = list(ports)
        names = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in names:
            start = round_number * PER_ROUND
            plan = [(bodies[start : start + PER_ROUND], cid) for bodies, cid in sealed[name]]
            before = serving[name].cpu()
            outcome = _load(ports[name], "/deliver-mail", plan, work)
            spent = _spent(before, serving[name].cpu())
            if round_number == 0:
                continue  # warm-up
            rates[name].append(mails / float(outcome["seconds"]))  # type: ignore[arg-type]
            latencies[name].extend(outcome["latencies"])  # type: ignore[arg-type]
            cpu[name].append(spent / mails)
    rate_ratios = [t / o for t, o in zip(rates[THREE], rates[ONE], strict=True)]
    cpu_ratios = [t / o for t, o in zip(cpu[THREE], cpu[ONE], strict=True)]
    p50 = {name: _percentile(latencies[name], 0.5) for name in ports}
    p99 = {name: _percentile(latencies[name], 0.99) for name in ports}
    for name in ports:
        print(
            rate_line(name, rates[name], latencies[name])
            + f"   CPU/mail min {min(cpu[name]) * 1e3:5.2f} ms median "
            f"{statistics.median(cpu[name]) * 1e3:5.2f} ms   cores busy median "
            f"{statistics.median(r * c for r, c in zip(rates[name], cpu[name], strict=True)):.2f}"
        )
    print(
        f"    {THREE} / {ONE}: mails/s median {statistics.median(rate_ratios):.0%} (min "
        f"{min(rate_ratios):.0%}), p50 {p50[THREE] / p50[ONE]:.2f}x, p99 "
        f"{p99[THREE] / p99[ONE]:.2f}x, CPU/mail median {statistics.median(cpu_ratios):.2f}x "
        f"(min {min(cpu_ratios):.2f}x)  for information"
    )
    print(
        f"    (on {os.cpu_count()} cores three hosts cannot scale out: CPU/mail is the figure, the "
        "cost of distribution per mail: nginx, and the inbox + NOTIFY of the mail that reaches "
        "a host not holding its partition)"
    )
    name = f"{HOSTS}-hosts-vs-1/{CONNECTIONS}-connections"
    figures = [
        _figure(f"mails-per-second/{name}", rates[THREE], rates[ONE], rate_ratios, "mails/s"),
        _figure(f"cpu-per-mail/{name}", cpu[THREE], cpu[ONE], cpu_ratios, "s"),
    ]
    for label, figure in (("p50", p50), ("p99", p99)):
        figures.append(
            Figure(
                "scale-out",
                f"scale-out/latency-{label}/{name}",
                figure[THREE],
                floor=figure[ONE],
                ratio=figure[THREE] / figure[ONE],
                ratio_of="value/floor",
                rounds=ROUNDS,
            )
        )
    return figures


def _figure(
    name: str, values: list[float], floors: list[float], ratios: list[float], unit: str
) -> Figure:
    """A figure of the three hosts (median of the rounds) beside the one host's, for
    information."""
    return Figure(
        "scale-out",
        f"scale-out/{name}",
        statistics.median(values),
        floor=statistics.median(floors),
        ratio=statistics.median(ratios),
        ratio_of="value/floor",
        min=min(values),
        rounds=ROUNDS,
        unit=unit,
    )


# -- failover ---------------------------------------------------------------------------------


class _Client:
    """A client of one partition that seals each mail afresh (a new sender key each time) to
    the instance the host names for its Correlation-ID, and acknowledges what it received."""

    def __init__(self, hint: str) -> None:
        self.hint = hint
        self.info: EnclaveInstanceInfo | None = None
        self.acknowledged: str | None = None

    def exchange(self, url: str) -> bool:
        """One try: attest if needed, send a mail, open its reply; whether it came."""
        if self.info is None:
            answer = httpx.get(
                f"{url}/attestation", headers={CORRELATION_HEADER: self.hint}, timeout=10
            )
            if answer.status_code != 200:
                return False  # no host serves the partition yet
            self.info = EnclaveInstanceInfo.deserialize(answer.content)
        office = self.info.create_post_office(Curve25519PrivateKey.generate(), "bench")
        headers = {CORRELATION_HEADER: self.hint, "Content-Type": "application/octet-stream"}
        if self.acknowledged is not None:
            headers[ACKNOWLEDGE_HEADER] = self.acknowledged
        answer = httpx.post(
            f"{url}/deliver-mail",
            content=office.encrypt_mail(b"reverse me"),
            headers=headers,
            timeout=60,
        )
        if answer.status_code == 200 and answer.content:
            office.decrypt_mail(answer.content)  # the reply to this very mail, or it raises
            self.acknowledged = answer.headers[MAIL_ID_HEADER]
            return True
        if answer.status_code == 400 and answer.json().get("error") == "MAIL_DECRYPTION":
            self.info = None  # a new instance: attest it
        elif answer.status_code not in (503, 504):
            raise RuntimeError(f"{url} answered {answer.status_code}: {answer.text[:200]}")
        return False

    def until_reply(self, url: str, since: float) -> float:
        """Seconds from ``since`` (``perf_counter``) to the first reply through ``url``."""
        while not self.exchange(url):
            if time.perf_counter() - since > _GIVE_UP:
                raise RuntimeError(f"no reply from {url} for {self.hint} in {_GIVE_UP:g} s")
            time.sleep(_PAUSE)
        return time.perf_counter() - since


def _client_of(partition: int, round_number: int) -> _Client:
    """A client, new in this round, whose Correlation-ID maps to ``partition``."""
    number = 0
    while partition_of(hint := f"failover-{round_number}-{number}", PARTITIONS) != partition:
        number += 1
    return _Client(hint)


def _kill_holder(cluster: list[_Host], round_number: int) -> float:
    """SIGKILL the host serving a partition; seconds to the first reply to its client through
    a surviving host. Then start that host again and wait until the cluster is balanced."""
    partition = round_number % PARTITIONS
    holder = next(host for host in cluster if partition in host.serving())
    survivor = cluster[(cluster.index(holder) + 1) % len(cluster)]
    client = _client_of(partition, round_number)
    if not client.exchange(survivor.url):  # ready: attested, one mail answered
        raise RuntimeError(f"partition {partition} did not answer before the kill")
    seconds = client.until_reply(survivor.url, holder.kill())
    holder.start()
    holder.wait_up()
    _balanced(cluster)
    return seconds


def _enclave_process(host: _Host) -> int:
    assert host.process is not None
    found = [
        pid
        for pid, parent, _, title in _processes()
        if parent == host.process.pid and "sanctorum.enclave.child" in title
    ]
    if len(found) != 1:
        raise RuntimeError(f"expected one enclave process under the host, found {found}")
    return found[0]


def _kill_enclave(host: _Host, round_number: int) -> float:
    """SIGKILL the enclave process of a single host; seconds to the first reply."""
    client = _Client(f"restart-{round_number}")
    if not client.exchange(host.url):
        raise RuntimeError("the single host did not answer before the kill")
    pid = _enclave_process(host)
    killed = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    return client.until_reply(host.url, killed)


def _failover(cluster: list[_Host], single: _Host) -> list[Figure]:
    print(
        f"Failover: SIGKILL of the host serving a partition ({HOSTS} hosts, one database) to "
        "the first reply through a surviving host, vs SIGKILL of a single host's enclave "
        f"process (SQLite) to the first reply of the instance it restarts; {KILLS} kills each "
        "after a warm-up, interleaved"
    )
    measures: dict[str, Callable[[int], float]] = {
        FAILOVER: lambda number: _kill_holder(cluster, number),
        RESTART: lambda number: _kill_enclave(single, number),
    }
    times: dict[str, list[float]] = {name: [] for name in measures}
    for round_number in range(KILLS + 1):
        names = list(measures)
        if round_number % 2:
            names.reverse()
        for name in names:
            seconds = measures[name](round_number)
            if round_number:  # the first is a warm-up
                times[name].append(seconds)
    p50 = {name: statistics.median(times[name]) for name in times}
    p99 = {name: _percentile(times[name], 0.99) for name in times}
    for name in times:
        print(
            f"  {name:16}  min {min(times[name]) * 1e3:7.1f} ms   median (p50) "
            f"{p50[name] * 1e3:7.1f} ms   p99 {p99[name] * 1e3:7.1f} ms"
        )
    print(
        f"    failover / restart in place: p50 {p50[FAILOVER] / p50[RESTART]:.2f}x, p99 "
        f"{p99[FAILOVER] / p99[RESTART]:.2f}x  (for information)"
    )
    return [
        Figure(
            "scale-out",
            f"scale-out/failover-{label}/{HOSTS}-hosts",
            figures[FAILOVER],
            floor=figures[RESTART],
            ratio=figures[FAILOVER] / figures[RESTART],
            ratio_of="value/floor",
            min=min(times[FAILOVER]),
            rounds=KILLS,
        )
        for label, figures in (("p50", p50), ("p99", p99))
    ]


if __name__ == "__main__":
    report()
