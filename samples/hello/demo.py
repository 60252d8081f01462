"""End-to-end demo: build the hello enclave, serve it over HTTP in simulation mode, and have a
client verify its attestation and exchange mail with it.

Run with ``make demo``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from client import reverse_remotely
from host import build_enclave

from sanctorum import EnclaveConstraint, WebTransport


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the web host exited during start-up")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the web host did not come up within 30 s")


def main() -> int:
    with tempfile.TemporaryDirectory() as work:
        print("1/5 building the hello enclave bundle …")
        built = build_enclave(Path(work) / "build")
        print(f"    {built.path.name}: code hash {built.code_hash}")
        print(f"    {' ' * len(built.path.name)}  signer hash {built.signer_hash}")

        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        print(f"2/5 starting the web host in simulation mode on {url} …")
        command = [
            sys.executable,
            "-m",
            "sanctorum",
            "host",
            str(built.path),
            "--mode",
            "simulation",
            "--port",
            str(port),
            "--state-dir",
            str(Path(work) / "state"),
        ]
        host = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: S603
        try:
            _wait_until_up(url, host)
            # The client trusts the hash printed by the build, not what the host says.
            constraint = EnclaveConstraint.parse(f"C:{built.code_hash} SEC:INSECURE")
            print(f"3/5 client checks the attestation against {constraint}")
            texts = ["hello, enclave", "Sanctorum", "stressed"]
            with WebTransport(url) as transport:
                replies = reverse_remotely(transport, constraint, texts)
            print("4/5 mail over HTTP:")
            for text, reply in zip(texts, replies, strict=True):
                print(f"    sent {text!r:>18}  got back {reply!r}")
        finally:
            print("5/5 stopping the web host")
            host.terminate()
            host.wait(timeout=30)
        if replies != [text[::-1] for text in texts]:
            print("FAILED: unexpected replies", file=sys.stderr)
            return 1
    print("done: every reply was decrypted and authenticated as coming from the enclave")
    return 0


if __name__ == "__main__":
    sys.exit(main())
