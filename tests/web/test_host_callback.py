"""The web host answers an enclave's call_untrusted_host while it handles mail, with the
callback the application gives its EnclaveService."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sanctorum import EnclaveCallError, EnclaveMode
from sanctorum.web.service import EnclaveService
from tests.web.conftest import serve, web_client


def test_the_applications_callback_answers_the_enclave_during_mail(
    bundle_for: Callable[[str], Path], tmp_path: Path
) -> None:
    asked: list[bytes] = []

    def lookup(data: bytes) -> bytes:
        asked.append(data)
        return b"rate for " + data + b": 1.08"

    service = EnclaveService(
        bundle_for("Recorder"), EnclaveMode.SIMULATION, tmp_path, host_callback=lookup
    )
    service.start()
    running = serve(service)
    try:
        client, _ = web_client(running.url)
        answer = client.send_mail(b"ask EUR/USD")
        assert answer is not None
        assert answer.body == b"rate for EUR/USD: 1.08"
        assert asked == [b"EUR/USD"]
    finally:
        running.stop()


def test_without_a_callback_the_enclaves_call_fails_and_the_client_hears_why(
    bundle_for: Callable[[str], Path], tmp_path: Path
) -> None:
    service = EnclaveService(bundle_for("Recorder"), EnclaveMode.SIMULATION, tmp_path)
    service.start()
    running = serve(service)
    try:
        client, _ = web_client(running.url)
        with pytest.raises(EnclaveCallError, match="needs a host callback"):
            client.send_mail(b"ask EUR/USD")
        answer = client.send_mail(b"plain")  # the enclave goes on
        assert answer is not None
        assert answer.body == b"PLAIN"
    finally:
        running.stop()
