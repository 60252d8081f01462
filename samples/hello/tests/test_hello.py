"""The hello sample, end to end through the public API."""

from __future__ import annotations

import pytest
from client import reverse_remotely
from hello_enclave import ReverseEnclave
from host import start_host

from sanctorum import EnclaveConstraint, InProcessTransport, InvalidEnclaveError, SHA256Hash


def test_texts_come_back_reversed() -> None:
    with start_host() as host:
        constraint = EnclaveConstraint.parse(
            f"C:{host.enclave_instance_info.code_hash} SEC:INSECURE"
        )
        texts = ["hello", "", "ünïcödé", "x" * 100_000]
        assert reverse_remotely(InProcessTransport(host), constraint, texts) == [
            t[::-1] for t in texts
        ]
        enclave = host.mock_enclave
        assert isinstance(enclave, ReverseEnclave)
        assert enclave.mails_received == 4


def test_host_calls_are_reversed_too() -> None:
    with start_host() as host:
        assert host.call_enclave(b"abc") == b"cba"


def test_client_refuses_an_unexpected_enclave() -> None:
    with start_host() as host:
        constraint = EnclaveConstraint.parse(f"C:{SHA256Hash.of(b'evil')} SEC:INSECURE")
        with pytest.raises(InvalidEnclaveError):
            reverse_remotely(InProcessTransport(host), constraint, ["secret"])


def test_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import demo

    assert demo.main() == 0
    assert "'stressed' -> 'desserts'" in capsys.readouterr().out
