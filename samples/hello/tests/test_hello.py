"""The hello sample, end to end through the public API, in every mode the run selects (mock
and simulation by default; the sanctorum pytest plugin's ``--enclave-mode``)."""

from __future__ import annotations

import pytest
from client import reverse_remotely
from host import start_host

from sanctorum import (
    EnclaveConstraint,
    EnclaveHost,
    InProcessTransport,
    InvalidEnclaveError,
    SHA256Hash,
)
from sanctorum.build import BuildResult


def test_texts_come_back_reversed(
    enclave_host: EnclaveHost, enclave_constraint: EnclaveConstraint
) -> None:
    texts = ["hello", "", "ünïcödé", "x" * 100_000]
    replies = reverse_remotely(InProcessTransport(enclave_host), enclave_constraint, texts)
    assert replies == [t[::-1] for t in texts]
    assert enclave_host.call_enclave(b"mails") == b"4"


def test_host_calls_are_reversed(enclave_host: EnclaveHost) -> None:
    assert enclave_host.call_enclave(b"abc") == b"cba"


def test_client_refuses_an_unexpected_enclave(enclave_host: EnclaveHost) -> None:
    constraint = EnclaveConstraint.parse(f"C:{SHA256Hash.of(b'evil')} SEC:INSECURE")
    with pytest.raises(InvalidEnclaveError):
        reverse_remotely(InProcessTransport(enclave_host), constraint, ["secret"])


@pytest.mark.enclave_modes("simulation")  # start_host runs bundles in simulation mode
def test_the_sample_host_runs_the_bundle_the_build_printed(enclave_bundle: BuildResult) -> None:
    with start_host(enclave_bundle.path) as host:
        assert host.enclave_instance_info.code_hash == enclave_bundle.code_hash
        assert host.call_enclave(b"abc") == b"cba"


def test_the_sample_host_runs_the_class_in_mock_mode() -> None:
    with start_host() as host:
        assert host.enclave_mode.value == "mock"
        assert host.call_enclave(b"abc") == b"cba"


def test_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import demo

    assert demo.main() == 0
    output = capsys.readouterr().out
    assert "got back 'desserts'" in output
    assert "mail over HTTP" in output
