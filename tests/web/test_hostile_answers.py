"""A host that answers with more than a client should read (issue 10, observation 8)."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

_CHUNK = bytes(1 << 20)
_HUGE = 768  # MiB the host would send


class _Flooding(http.server.BaseHTTPRequestHandler):
    """Answers every request with 768 MiB, declared or not."""

    def _flood(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if self.path.startswith("/declared"):
            self.send_header("Content-Length", str(_HUGE << 20))
        self.end_headers()
        try:
            for _ in range(_HUGE):
                self.wfile.write(_CHUNK)
        except OSError:
            pass  # the client hung up: what it should do

    def do_GET(self) -> None:
        self._flood()

    def do_POST(self) -> None:
        self._flood()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def flooding_host() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flooding)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


_CLIENT = textwrap.dedent(
    """
    import sys
    from sanctorum import TransportError, WebTransport

    with WebTransport(sys.argv[1], retry_for=0) as transport:
        try:
            transport.get_attestation()
            outcome = "read it all"
        except TransportError as error:
            outcome = f"refused: {error}"
        try:
            transport.poll_mail("c", None)
        except TransportError as error:
            outcome += f" / refused: {error}"
    print(outcome)
    # The peak of this process's own memory (ru_maxrss would include what the forking parent
    # had: Linux keeps it across exec).
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM:"))
    print(int(peak.split()[1]) // 1024)  # MiB
    """
)


@pytest.mark.parametrize("prefix", ["", "/declared"])
def test_a_flooding_host_cannot_exhaust_a_clients_memory(flooding_host: str, prefix: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT, flooding_host + prefix],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    outcome, peak = done.stdout.splitlines()
    assert re.match(
        r"refused: the host's answer to GET \S*/attestation is over 1052672 ", outcome
    )  # 1 MiB + 4 KiB
    assert re.search(r"POST \S*/poll-mail is over 67108864 bytes", outcome)
    assert int(peak) < 256  # MiB: bounded by the limits, not by what the host sends
