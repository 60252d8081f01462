"""Mail throughput of the web host next to a bare FastAPI/uvicorn echo endpoint, same run.

16 client threads each post 100 small mails (pre-sealed, so client-side crypto is not timed)
to a web host serving the hello enclave in simulation mode; the peer is a FastAPI app on
uvicorn that echoes the same bytes. Both servers run in their own process on this machine.
Target (issue 5): at least 50% of the bare endpoint's throughput. p50 and p99 latency shown.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from sanctorum import EnclaveInstanceInfo
from sanctorum.build import build
from sanctorum.common.keys import Curve25519PrivateKey

HELLO = Path(__file__).resolve().parents[1] / "samples" / "hello"
CLIENTS = 16
MAILS = 100

_ECHO_SERVER = """
import sys, uvicorn
from fastapi import FastAPI, Request, Response
app = FastAPI()
@app.post("/echo")
async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")
@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def _run(requests: Callable[[int, httpx.Client], list[float]]) -> tuple[float, list[float]]:
    """Runs CLIENTS threads; returns requests per second and every latency."""
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]

    def worker(number: int) -> None:
        with httpx.Client(timeout=60) as http:
            latencies[number] = requests(number, http)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    flat = [latency for group in latencies for latency in group]
    return len(flat) / elapsed, flat


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report() -> bool:
    print(f"Web host: {CLIENTS} clients x {MAILS} small mails (ratios against the same run)")
    with tempfile.TemporaryDirectory() as work:
        bundle = build(HELLO, Path(work) / "build").path
        host_port, echo_port = _free_port(), _free_port()
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
                str(Path(work) / "state"),
            ],
            stdout=subprocess.DEVNULL,
            # Its log (a line per request) goes to a file, as in a deployment, not a terminal.
            stderr=(Path(work) / "host.log").open("wb"),
        )
        echo = subprocess.Popen(
            [sys.executable, "-c", _ECHO_SERVER, str(echo_port)], stdout=subprocess.DEVNULL
        )
        try:
            host_url, echo_url = f"http://127.0.0.1:{host_port}", f"http://127.0.0.1:{echo_port}"
            _wait(host_url)
            _wait(echo_url)
            info = EnclaveInstanceInfo.deserialize(httpx.get(f"{host_url}/attestation").content)
            mails = []
            for _ in range(CLIENTS):
                office = info.create_post_office(Curve25519PrivateKey.generate(), "bench")
                mails.append([office.encrypt_mail(b"reverse me, please") for _ in range(MAILS)])

            def to_host(number: int, http: httpx.Client) -> list[float]:
                times, acknowledged = [], None
                for mail in mails[number]:
                    headers = {"Correlation-ID": f"client-{number}"}
                    if acknowledged is not None:
                        headers["Acknowledge-Mail-ID"] = acknowledged
                    started = time.perf_counter()
                    response = http.post(f"{host_url}/deliver-mail", content=mail, headers=headers)
                    times.append(time.perf_counter() - started)
                    if response.status_code != 200 or not response.content:
                        raise RuntimeError(f"the host answered {response.status_code}")
                    acknowledged = response.headers["Mail-ID"]
                return times

            def to_echo(number: int, http: httpx.Client) -> list[float]:
                times = []
                for mail in mails[number]:
                    started = time.perf_counter()
                    http.post(f"{echo_url}/echo", content=mail)
                    times.append(time.perf_counter() - started)
                return times

            host_rate, host_latency = _run(to_host)
            echo_rate, echo_latency = _run(to_echo)
        finally:
            host.terminate()
            echo.terminate()
            host.wait()
            echo.wait()
    share = host_rate / echo_rate
    met = share >= 0.5
    for name, rate, latency in (
        ("web host", host_rate, host_latency),
        ("bare echo", echo_rate, echo_latency),
    ):
        print(
            f"  {name:9}  {rate:7.0f} mails/s   p50 {_percentile(latency, 0.5) * 1e3:6.2f} ms"
            f"   p99 {_percentile(latency, 0.99) * 1e3:6.2f} ms"
            f"   mean {statistics.fmean(latency) * 1e3:6.2f} ms"
        )
    print(f"  web host / bare echo: {share:.0%}  {'met' if met else 'MISSED'} (≥50%)")
    return met
