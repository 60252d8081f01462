"""A release enclave's exceptions reach the host as their type only (their messages may hold
the enclave's data); other modes show the message, to help development."""

from __future__ import annotations

import pytest

from sanctorum import Enclave, EnclaveCallError
from sanctorum.attestation.mock import MockEvidenceProvider
from sanctorum.enclave.runtime import EnclaveRuntime
from sanctorum.enclave.sealing import MOCK_PLATFORM_SECRET, EnclaveIdentity


class Leaky(Enclave):
    def on_startup(self) -> None:
        self.salaries = {"alice": 91_000}

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        raise KeyError(f"no salary for {data.decode()}; known: {self.salaries}")


def _runtime(reveal_errors: bool) -> EnclaveRuntime:
    provider = MockEvidenceProvider.for_class("tests.Leaky", None)
    identity = EnclaveIdentity(provider.code_hash, provider.signer_hash, provider.product_id)
    runtime = EnclaveRuntime(
        Leaky(),
        provider,
        identity=identity,
        platform_secret=MOCK_PLATFORM_SECRET,
        reveal_errors=reveal_errors,
    )
    runtime.start()
    return runtime


def test_a_release_enclave_keeps_exception_messages_inside() -> None:
    with pytest.raises(EnclaveCallError) as raised:
        _runtime(reveal_errors=False).call(b"bob", None)
    message = str(raised.value)
    assert "KeyError" in message
    assert "91000" not in message
    assert "alice" not in message
    assert "keeps the message inside" in message
    assert raised.value.enclave_traceback is None  # nor the traceback


def test_other_modes_show_the_enclaves_traceback() -> None:
    with pytest.raises(EnclaveCallError) as raised:
        _runtime(reveal_errors=True).call(b"bob", None)
    traceback = raised.value.enclave_traceback
    assert traceback is not None
    assert "in receive_from_untrusted_host" in traceback


def test_other_modes_show_the_message() -> None:
    with pytest.raises(EnclaveCallError, match="91000"):
        _runtime(reveal_errors=True).call(b"bob", None)
