"""The counter sample: state survives restarts, in every mode the run selects (the sanctorum
pytest plugin's ``--enclave-mode``: mock and simulation by default)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from counter_demo import count_once, main

from sanctorum import EnclaveCallError, EnclaveClient, EnclaveHost, InProcessTransport


def test_counts_survive_a_restart(
    enclave_host: EnclaveHost, enclave_client_factory: Callable[[], EnclaveClient]
) -> None:
    alice, bob = enclave_client_factory(), enclave_client_factory()
    assert [count_once(alice), count_once(alice), count_once(bob)] == [1, 2, 1]
    enclave_host.restart()
    for client in (alice, bob):
        client.start(InProcessTransport(enclave_host))
    assert [count_once(alice), count_once(bob)] == [3, 2]
    assert enclave_host.call_enclave(b"clients") == b"2"


def test_the_host_may_only_ask_how_many_clients(enclave_host: EnclaveHost) -> None:
    with pytest.raises(EnclaveCallError):  # the enclave's ValueError, as the host sees it
        enclave_host.call_enclave(b"counts")


def test_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main() == 0
    assert "after the restart the next count is 4" in capsys.readouterr().out
