"""The host↔enclave boundary next to its floors, measured in the same run.

- An empty ``call_enclave`` in simulation mode, next to a ping-pong of the same byte counts
  between two Python processes over the same kind of socket pair, with no framework.
- An empty mock-mode ``call_enclave``, next to a plain Python method call.
- Time from ``EnclaveHost.load(bundle).start()`` to the first call answered (hello bundle).
- The enclave process's peak RSS, next to a bare ``python -c "import cryptography"`` process.
Targets (issue 3): simulation ≤ 1.5x its floor; mock ≤ 5x a method call; start < 0.5 s;
RSS ≤ 2x the bare process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

from sanctorum import EnclaveHost
from sanctorum.build import build
from sanctorum.common.frames import Frame, FrameType, encode_call_result, encode_frame

HELLO = Path(__file__).resolve().parents[1] / "samples" / "hello"
sys.path.insert(0, str(HELLO))

_ECHO = """
import socket, sys
request, reply = int(sys.argv[2]), int(sys.argv[3])
with socket.socket(fileno=int(sys.argv[1])) as s:
    answer = bytes(reply)
    while True:
        got = 0
        while got < request:
            data = s.recv(65536)
            if not data:
                sys.exit(0)
            got += len(data)
        s.sendall(answer)
"""


def best_time(function: object, budget: float = 0.5) -> float:
    number, elapsed = 1, 0.0
    while elapsed < budget / 5:
        elapsed = timeit.timeit(function, number=number)  # type: ignore[arg-type]
        number *= 2
    return min(timeit.repeat(function, number=number, repeat=5)) / number  # type: ignore[arg-type]


def ping_pong_floor(request: int, reply: int) -> float:
    """Round trip of ``request`` bytes out and ``reply`` bytes back to another process."""
    mine, theirs = socket.socketpair()
    process = subprocess.Popen(
        [sys.executable, "-c", _ECHO, str(theirs.fileno()), str(request), str(reply)],
        pass_fds=[theirs.fileno()],
    )
    theirs.close()
    payload = bytes(request)

    def round_trip() -> None:
        mine.sendall(payload)
        got = 0
        while got < reply:
            got += len(mine.recv(65536))

    try:
        return best_time(round_trip)
    finally:
        mine.close()
        process.wait()


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def report() -> bool:
    from hello_enclave import ReverseEnclave

    ok = True
    print("Host↔enclave boundary (ratios against floors measured in this run)")
    with tempfile.TemporaryDirectory() as output:
        bundle = build(HELLO, Path(output)).path

        started = time.perf_counter()
        host = EnclaveHost.load(bundle).start()
        host.call_enclave(b"")
        start_time = time.perf_counter() - started
        with host:
            simulation = best_time(lambda: host.call_enclave(b""))
            process = host._platform.process  # type: ignore[attr-defined]
            child_rss = peak_rss_kib(process.pid)

    request = len(encode_frame(Frame(FrameType.CALL, 1, b"")))
    reply = len(encode_frame(Frame(FrameType.CALL_RESULT, 1, encode_call_result(b"", []))))
    floor = ping_pong_floor(request, reply)
    ratio = simulation / floor
    met = ratio <= 1.5
    ok &= met
    print(
        f"  simulation empty call  {simulation * 1e6:8.1f} µs   ping-pong floor "
        f"{floor * 1e6:6.1f} µs   {ratio:5.2f}x  {'met' if met else 'MISSED'} (≤1.5x); "
        f"{1 / simulation:,.0f} calls/s"
    )

    with EnclaveHost.load(ReverseEnclave).start() as mock_host:
        mock = best_time(lambda: mock_host.call_enclave(b""))
        enclave = mock_host.mock_enclave
        method = best_time(lambda: enclave.receive_from_untrusted_host(b""))
    ratio = mock / method
    met = ratio <= 5
    ok &= met
    print(
        f"  mock empty call        {mock * 1e6:8.2f} µs   method call     "
        f"{method * 1e6:6.2f} µs   {ratio:5.2f}x  {'met' if met else 'MISSED'} (≤5x)"
    )

    met = start_time < 0.5
    ok &= met
    print(
        f"  load+start+first call  {start_time * 1e3:8.1f} ms   "
        f"{'met' if met else 'MISSED'} (<500 ms)"
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
    ok &= met
    print(
        f"  enclave process RSS    {child_rss / 1024:8.1f} MiB  bare python      "
        f"{bare_rss / 1024:6.1f} MiB  {ratio:5.2f}x  {'met' if met else 'MISSED'} (≤2x)"
    )
    return ok
