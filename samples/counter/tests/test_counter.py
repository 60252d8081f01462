"""The counter sample: state survives restarts, in mock and simulation mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sanctorum import EnclaveClient, EnclaveHost, InProcessTransport
from sanctorum.build import build

SAMPLE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SAMPLE))

from counter_demo import count_once, main  # noqa: E402
from counter_enclave import CounterEnclave  # noqa: E402


@pytest.mark.parametrize("mode", ["mock", "simulation"])
def test_counts_survive_a_restart(mode: str, tmp_path: Path) -> None:
    target = CounterEnclave if mode == "mock" else build(SAMPLE, tmp_path).path
    with EnclaveHost.load(target).start() as host:
        alice = EnclaveClient(f"C:{host.enclave_instance_info.code_hash} SEC:INSECURE")
        bob = EnclaveClient(alice.constraint)
        for client in (alice, bob):
            client.start(InProcessTransport(host))
        assert [count_once(alice), count_once(alice), count_once(bob)] == [1, 2, 1]
        host.restart()
        for client in (alice, bob):
            client.start(InProcessTransport(host))
        assert [count_once(alice), count_once(bob)] == [3, 2]
        assert host.call_enclave(b"clients") == b"2"


def test_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main() == 0
    assert "after the restart the next count is 4" in capsys.readouterr().out
