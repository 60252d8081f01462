"""The host↔enclave boundary next to its floors, measured in the same run (interleaved rounds).

- ``call_enclave`` in simulation mode, empty and with 64 KiB each way, next to a ping-pong of
  the same byte counts between two Python processes over the same kind of socket pair with no
  framework: each side ``recv_into`` a preallocated buffer until it has the bytes it knows are
  coming, then ``sendall`` a prebuilt answer. That is the least any implementation must do.
- Time from ``EnclaveHost.load(bundle).start()`` to the first call answered, next to spawning
  Python (``-I``, as the enclave process is) and importing the primitives the enclave process
  needs (AES-GCM, X25519, Ed25519, HKDF, hashes), then telling the parent over a socket.
- An empty mock-mode ``call_enclave``, next to a plain Python method call.
- The enclave process's peak RSS, next to a bare ``python -c "import cryptography"`` process.

Targets: simulation calls ≤ 1.5x their floor (issue 12); start to first call ≤ 2x its floor
(issue 12); mock ≤ 5x a method call and RSS ≤ 2x the bare process (issue 3). Each figure is
printed as the min and the median of the rounds; a target is judged on the median of the
per-round ratios.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

from results import Figure, Report
from timing import interleaved, paired_ratio

from sanctorum import EnclaveHost
from sanctorum.build import build
from sanctorum.common.frames import Frame, FrameType, encode_call_result, encode_frame

HELLO = Path(__file__).resolve().parents[1] / "samples" / "hello"
sys.path.insert(0, str(HELLO))

BIG = 64 << 10
BENCH = "boundary"
ROUNDS = 9

_ECHO_TOML = """[enclave]
name = "echo"
entry = "echo_enclave:EchoEnclave"
product_id = 1
revocation_level = 0
sources = ["echo_enclave.py"]
"""
_ECHO_ENCLAVE = """from sanctorum import Enclave


class EchoEnclave(Enclave):
    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        return data if data else None
"""

# The floor's other process: read exactly `request` bytes into a preallocated buffer, answer
# `reply` prebuilt bytes; nothing else.
_PONG = """
import socket, sys
request, reply = int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(fileno=int(sys.argv[1]))
buffer = bytearray(request)
view = memoryview(buffer)
answer = bytes(reply)
recv_into, sendall = s.recv_into, s.sendall
while True:
    got = recv_into(buffer)
    if not got:
        sys.exit(0)
    while got < request:
        n = recv_into(view[got:])
        if not n:
            sys.exit(0)
        got += n
    sendall(answer)
"""

# The start floor: spawn Python, import what the enclave process needs, say so.
_STARTED = """
import hashlib, hmac, secrets, socket, struct, sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
s = socket.socket(fileno=int(sys.argv[1]))
s.sendall(b"r")
s.recv(1)
"""


class PingPong:
    """The floor of a round trip of ``request`` bytes out and ``reply`` bytes back."""

    def __init__(self, request: int, reply: int) -> None:
        self._socket, theirs = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-c", _PONG, str(theirs.fileno()), str(request), str(reply)],
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        self._payload = bytes(request)
        self._reply = reply
        self._buffer = bytearray(reply)
        self._view = memoryview(self._buffer)

    def round_trip(self) -> None:
        self._socket.sendall(self._payload)
        got = self._socket.recv_into(self._buffer)
        while got < self._reply:
            got += self._socket.recv_into(self._view[got:])

    def close(self) -> None:
        self._socket.close()
        self._process.wait()


def start_floor() -> float:
    """Seconds from spawning Python to its having imported the primitives (and said so)."""
    began = time.perf_counter()
    mine, theirs = socket.socketpair()
    with mine:
        process = subprocess.Popen(
            [sys.executable, "-I", "-c", _STARTED, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            cwd="/",
        )
        theirs.close()
        ready = mine.recv(1)
        elapsed = time.perf_counter() - began
    process.wait()
    assert ready == b"r"
    return elapsed


def start_to_first_call(bundle: Path) -> float:
    """Seconds from ``EnclaveHost.load`` to the first call answered (closing is not counted)."""
    began = time.perf_counter()
    host = EnclaveHost.load(bundle).start()
    try:
        host.call_enclave(b"")
        return time.perf_counter() - began
    finally:
        host.close()


def best_time(function: Callable[[], object], budget: float = 0.5) -> float:
    number, elapsed = 1, 0.0
    while elapsed < budget / 5:
        elapsed = timeit.timeit(function, number=number)
        number *= 2
    return min(timeit.repeat(function, number=number, repeat=5)) / number


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def frame_sizes(payload: int) -> tuple[int, int]:
    """Bytes of a CALL frame carrying ``payload`` bytes and of the answer echoing them."""
    data = bytes(payload)
    request = len(encode_frame(Frame(FrameType.CALL, 1, data)))
    reply = len(encode_frame(Frame(FrameType.CALL_RESULT, 1, encode_call_result(data or None, []))))
    return request, reply


def _line(
    figure: str,
    name: str,
    times: list[float],
    floor_name: str,
    floor: list[float],
    scale: float,
    unit: str,
    target: float,
) -> Figure:
    ratio = paired_ratio(times, floor)
    met = ratio <= target
    print(
        f"  {name:<22} {min(times) * scale:7.1f} / {statistics.median(times) * scale:7.1f} {unit}"
        f"   {floor_name:<16} {min(floor) * scale:6.1f} / {statistics.median(floor) * scale:6.1f}"
        f" {unit}   {min(times) / min(floor):5.2f}x / {ratio:5.2f}x  "
        f"{'met' if met else 'MISSED'} (≤{target}x)"
    )
    return Figure(
        BENCH,
        figure,
        statistics.median(times),
        floor=statistics.median(floor),
        ratio=ratio,
        ratio_of="value/floor",
        goal=f"at most {target:g}x {floor_name}",
        met=met,
        min=min(times),
        rounds=len(times),
    )


def report() -> Report:
    from hello_enclave import ReverseEnclave

    result = Report()
    print(
        "Host↔enclave boundary (min / median of "
        f"{ROUNDS} interleaved rounds; ratios: of the mins / median of per-round ratios)"
    )
    with tempfile.TemporaryDirectory() as directory:
        project = Path(directory) / "echo"
        project.mkdir()
        (project / "enclave.toml").write_text(_ECHO_TOML)
        (project / "echo_enclave.py").write_text(_ECHO_ENCLAVE)
        bundle = build(project, Path(directory) / "out").path

        starts: dict[str, list[float]] = {"start": [], "floor": []}
        for number in range(ROUNDS + 1):  # interleaved, alternating order; round 0 warms up
            for name in ("start", "floor") if number % 2 else ("floor", "start"):
                elapsed = start_to_first_call(bundle) if name == "start" else start_floor()
                if number:
                    starts[name].append(elapsed)

        big = bytes(BIG)
        with EnclaveHost.load(bundle).start() as host:
            empty_floor = PingPong(*frame_sizes(0))
            big_floor = PingPong(*frame_sizes(BIG))
            try:
                times = interleaved(
                    {
                        "empty": lambda: host.call_enclave(b""),
                        "empty floor": empty_floor.round_trip,
                        "64k": lambda: host.call_enclave(big),
                        "64k floor": big_floor.round_trip,
                    },
                    rounds=ROUNDS,
                    batch=400,
                )
            finally:
                empty_floor.close()
                big_floor.close()
            process = host._platform.process  # type: ignore[attr-defined]
            child_rss = peak_rss_kib(process.pid)

    wall = {name: pair[0] for name, pair in times.items()}
    for figure, name, floor_name, key, scale, unit, target in (
        (
            "boundary/simulation/empty-call",
            "simulation empty call",
            "ping-pong",
            "empty",
            1e6,
            "µs",
            1.5,
        ),
        (
            "boundary/simulation/64KiB-call",
            "simulation 64 KiB call",
            "ping-pong 64 KiB",
            "64k",
            1e6,
            "µs",
            1.5,
        ),
    ):
        result.add(
            _line(figure, name, wall[key], floor_name, wall[key + " floor"], scale, unit, target)
        )
    result.add(
        _line(
            "boundary/start-to-first-call",
            "start to first call",
            starts["start"],
            "python+imports",
            starts["floor"],
            1e3,
            "ms",
            2,
        )
    )

    with EnclaveHost.load(ReverseEnclave).start() as mock_host:
        mock = best_time(lambda: mock_host.call_enclave(b""))
        enclave = mock_host.mock_enclave
        method = best_time(lambda: enclave.receive_from_untrusted_host(b""))
    ratio = mock / method
    met = ratio <= 5
    result.add(
        Figure(
            BENCH,
            "boundary/mock/empty-call",
            mock,
            floor=method,
            ratio=ratio,
            ratio_of="value/floor",
            goal="at most 5x a method call (issue 3)",
            met=met,
        )
    )
    print(
        f"  mock empty call        {mock * 1e6:8.2f} µs   method call     "
        f"{method * 1e6:6.2f} µs   {ratio:5.2f}x  {'met' if met else 'MISSED'} (≤5x)"
    )

    bare = subprocess.run(
        [sys.executable, "-c", "import cryptography; print(open('/proc/self/status').read())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    bare_rss = next(int(line.split()[1]) for line in bare.splitlines() if line.startswith("VmHWM:"))
    ratio = child_rss / bare_rss
    met = ratio <= 2
    result.add(
        Figure(
            BENCH,
            "boundary/simulation/enclave-rss",
            child_rss,
            floor=bare_rss,
            ratio=ratio,
            ratio_of="value/floor",
            goal="at most 2x a bare python importing cryptography (issue 3)",
            met=met,
            unit="KiB",
        )
    )
    print(
        f"  enclave process RSS    {child_rss / 1024:8.1f} MiB  bare python      "
        f"{bare_rss / 1024:6.1f} MiB  {ratio:5.2f}x  {'met' if met else 'MISSED'} (≤2x)"
    )
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(0 if report().ok else 1)
