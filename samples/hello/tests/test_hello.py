"""The hello sample, end to end through the public API, in mock and simulation mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from client import reverse_remotely
from host import build_enclave, start_host

from sanctorum import (
    EnclaveConstraint,
    EnclaveHost,
    InProcessTransport,
    InvalidEnclaveError,
    SHA256Hash,
)


@pytest.fixture(params=["mock", "simulation"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EnclaveHost]:
    bundle = build_enclave(tmp_path).path if request.param == "simulation" else None
    with start_host(bundle) as running:
        yield running


def test_texts_come_back_reversed(host: EnclaveHost) -> None:
    constraint = EnclaveConstraint.parse(f"C:{host.enclave_instance_info.code_hash} SEC:INSECURE")
    texts = ["hello", "", "ünïcödé", "x" * 100_000]
    assert reverse_remotely(InProcessTransport(host), constraint, texts) == [t[::-1] for t in texts]
    assert host.call_enclave(b"mails") == b"4"


def test_host_calls_are_reversed(host: EnclaveHost) -> None:
    assert host.call_enclave(b"abc") == b"cba"


def test_client_refuses_an_unexpected_enclave(host: EnclaveHost) -> None:
    constraint = EnclaveConstraint.parse(f"C:{SHA256Hash.of(b'evil')} SEC:INSECURE")
    with pytest.raises(InvalidEnclaveError):
        reverse_remotely(InProcessTransport(host), constraint, ["secret"])


def test_the_bundle_attests_the_code_hash_the_build_printed(tmp_path: Path) -> None:
    built = build_enclave(tmp_path)
    with start_host(built.path) as host:
        assert host.enclave_instance_info.code_hash == built.code_hash


def test_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import demo

    assert demo.main() == 0
    output = capsys.readouterr().out
    assert "got back 'desserts'" in output
    assert "mail over HTTP" in output
