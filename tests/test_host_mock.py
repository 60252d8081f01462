"""What only mock mode has: the enclave object in the host's process and MockConfiguration."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from behaviour_enclave import Recorder

from sanctorum import (
    Enclave,
    EnclaveCallError,
    EnclaveHost,
    EnclaveLoadError,
    EnclaveStateError,
    MockConfiguration,
    SHA256Hash,
)


@pytest.fixture
def host() -> Iterator[EnclaveHost]:
    with EnclaveHost.load(Recorder, mode="mock") as running:
        running.start()
        yield running


def test_mock_enclave_is_the_object(host: EnclaveHost) -> None:
    enclave = host.mock_enclave
    assert isinstance(enclave, Recorder)
    host.call_enclave(b"abc")
    assert enclave.events == ["startup", "call abc"]


def test_enclave_exceptions_keep_their_cause(host: EnclaveHost) -> None:
    with pytest.raises(EnclaveCallError) as caught:
        host.call_enclave(b"raise")
    assert isinstance(caught.value.__cause__, ValueError)


def test_non_bytes_input_is_refused(host: EnclaveHost) -> None:
    with pytest.raises(TypeError, match="must be bytes"):
        host.call_enclave("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be bytes"):
        host.deliver_mail("text")  # type: ignore[arg-type]


def test_persistent_map_needs_enabling(host: EnclaveHost) -> None:
    with pytest.raises(EnclaveStateError, match="no persistent map: enable it"):
        _ = host.mock_enclave.persistent_map


def test_enclave_services_need_a_running_enclave() -> None:
    with pytest.raises(EnclaveStateError, match="not running yet"):
        _ = Recorder().enclave_instance_info


def test_mock_attestation_defaults(host: EnclaveHost) -> None:
    info = host.enclave_instance_info
    assert info.code_hash == SHA256Hash.of(b"behaviour_enclave.Recorder")
    assert info.signer_hash == SHA256Hash(bytes(32))
    assert (info.product_id, info.revocation_level) == (1, 0)


def test_mock_configuration_is_attested() -> None:
    config = MockConfiguration(
        code_hash=SHA256Hash.of(b"v2"),
        signer_hash=SHA256Hash.of(b"me"),
        product_id=9,
        revocation_level=4,
        tcb_level=3,
    )
    with EnclaveHost.load(Recorder, mock_config=config).start() as host:
        info = host.enclave_instance_info
    assert (info.code_hash, info.signer_hash) == (SHA256Hash.of(b"v2"), SHA256Hash.of(b"me"))
    assert (info.product_id, info.revocation_level) == (9, 4)
    assert "TCB level 3" in info.security_info.reason


@pytest.mark.parametrize(
    ("enclave", "mode", "message"),
    [
        (Recorder(), "mock", "not an Enclave subclass"),
        (str, "mock", "not an Enclave subclass"),
        (Recorder, "turbo", "unknown enclave mode"),
        (Recorder, "simulation", "signed bundle"),
        (Recorder, "release", "signed bundle"),
    ],
)
def test_load_errors(enclave: object, mode: str, message: str) -> None:
    with pytest.raises(EnclaveLoadError, match=message):
        EnclaveHost.load(enclave, mode=mode)  # type: ignore[arg-type]


def test_enclave_needing_arguments_is_a_load_error() -> None:
    class NeedsArgs(Enclave):
        def __init__(self, value: int) -> None:
            self.value = value

    with pytest.raises(EnclaveLoadError, match="constructible with no arguments"):
        EnclaveHost.load(NeedsArgs)


def test_startup_failure_is_reported() -> None:
    class BrokenStartup(Enclave):
        def on_startup(self) -> None:
            raise OSError("no config")

    with pytest.raises(EnclaveCallError, match="on_startup raised OSError: no config"):
        EnclaveHost.load(BrokenStartup).start()
