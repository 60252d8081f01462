"""Property-based API test: requests generated from the OpenAPI description never get a 5xx.

Schemathesis builds the requests; Hypothesis drives them (its pytest plugin is not used).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanctorum import EnclaveMode
from sanctorum.web.app import create_app
from sanctorum.web.service import EnclaveService

ERROR_CODES = {"MAIL_DECRYPTION", "ENCLAVE_EXCEPTION", "BAD_REQUEST"}


def test_no_server_errors(bundle_for: Callable[[str], Path], tmp_path: Path) -> None:
    service = EnclaveService(bundle_for("Recorder"), EnclaveMode.SIMULATION, tmp_path / "state")
    service.start()
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(service, 1 << 16))
        operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
        assert len(operations) == 4
        seen: set[tuple[str, str, int]] = set()

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @given(st.one_of([operation.as_strategy() for operation in operations]))
        def check(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            response = case.call()
            seen.add((case.method, case.path, response.status_code))
            assert response.status_code < 500, (case.method, case.path, response.status_code)
            if response.status_code in (400, 413):
                assert response.json()["error"] in ERROR_CODES

        check()
        assert {path for _, path, _ in seen} == {
            "/attestation",
            "/deliver-mail",
            "/poll-mail",
            "/health",
        }
        assert ("POST", "/deliver-mail", 400) in seen  # the error paths were reached
    finally:
        service.close()
