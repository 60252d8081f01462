"""The KDS over HTTP: its REST front in front of the KDS enclave in simulation mode, the
`sanctorum kds serve` command as a real process, and generated requests that never get a 5xx."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanctorum import EnclaveInstanceInfo, EnclaveMode
from sanctorum.attestation.constraint import EnclaveConstraint
from sanctorum.build import build
from sanctorum.build.builder import measure_project
from sanctorum.common.keys import Curve25519PrivateKey
from sanctorum.kds.enclave import KdsEnclave
from sanctorum.kds.protocol import open_private_response, verify_public_response
from sanctorum.kds.server import create_kds_app, kds_project
from sanctorum.web.service import EnclaveService
from tests.kds.test_kds_enclave import SPEC, Requester
from tests.web.conftest import free_port, serve


class Kds:
    """A KDS served in a background thread (simulation mode, or the class in mock mode) from
    ``state_dir``."""

    def __init__(
        self,
        bundle: Path | type[KdsEnclave],
        state_dir: Path,
        mode: EnclaveMode = EnclaveMode.SIMULATION,
        max_body_size: int = 1 << 16,
    ) -> None:
        self.service = EnclaveService(bundle, mode, state_dir)
        self.service.start()
        self._running = serve(self.service, app=create_kds_app(self.service, max_body_size))
        self.url = self._running.url

    @property
    def constraint(self) -> EnclaveConstraint:
        info = self.service.host.enclave_instance_info
        return EnclaveConstraint.parse(f"C:{info.code_hash} SEC:INSECURE")

    def stop(self) -> None:
        self._running.stop()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(kds_project(), tmp_path_factory.mktemp("kds-build")).path


@pytest.fixture
def kds(bundle: Path, tmp_path: Path) -> Iterator[Kds]:
    running = Kds(bundle, tmp_path / "kds")
    yield running
    running.stop()


def test_keys_over_http_and_the_same_keys_after_a_restart(
    bundle: Path, kds: Kds, tmp_path: Path
) -> None:
    public = httpx.post(f"{kds.url}/public", json=SPEC.to_json())
    assert public.status_code == 200
    public_key = verify_public_response(public.json(), SPEC, kds.constraint)
    requester = Requester()
    private = httpx.post(
        f"{kds.url}/private", json={**SPEC.to_json(), "appAttestationReport": requester.report}
    )
    assert private.status_code == 200
    key = open_private_response(private.json(), SPEC, kds.constraint, requester.key).key
    assert Curve25519PrivateKey(key).public_key == public_key
    kds.stop()
    again = Kds(bundle, tmp_path / "kds")  # the same state dir: the same sealed master keys
    try:
        answer = httpx.post(f"{again.url}/public", json=SPEC.to_json())
        assert verify_public_response(answer.json(), SPEC, again.constraint) == public_key
    finally:
        again.stop()


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{", 400, "not JSON"),
        (b"[]", 400, "JSON object"),
        (json.dumps({"name": "k"}).encode(), 400, "masterKeyType"),
        (b"{" + b" " * (1 << 17) + b"}", 413, "over the limit"),
    ],
)
def test_bad_requests_get_json_reasons_and_the_kds_keeps_serving(
    kds: Kds, body: bytes, status: int, reason: str
) -> None:
    answer = httpx.post(f"{kds.url}/public", content=body)
    assert answer.status_code == status
    assert reason in answer.json()["reason"]
    assert httpx.post(f"{kds.url}/public", json=SPEC.to_json()).status_code == 200


def test_a_requester_that_fails_the_policy_gets_403(kds: Kds) -> None:
    stranger = Requester("tests.kds.Stranger")
    answer = httpx.post(
        f"{kds.url}/private", json={**SPEC.to_json(), "appAttestationReport": stranger.report}
    )
    assert answer.status_code == 403
    assert "policy" in answer.json()["reason"]


def test_generated_requests_never_get_a_server_error(kds: Kds) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_kds_app(kds.service, 1 << 16))
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 3
    seen: set[tuple[str, int]] = set()

    @settings(
        max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(st.one_of([operation.as_strategy() for operation in operations]))
    def check(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
        response = case.call()
        seen.add((case.path, response.status_code))
        assert response.status_code < 500, (case.path, response.status_code, response.text)
        if response.status_code >= 400:
            assert isinstance(response.json()["reason"], str)

    check()
    assert {path for path, _ in seen} == {"/public", "/private", "/health"}
    assert ("/private", 400) in seen  # error paths were reached


def test_kds_serve_runs_as_a_process(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sanctorum",
            "kds",
            "serve",
            "--state-dir",
            str(tmp_path / "state"),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the KDS did not come up"
            time.sleep(0.1)
        answer = httpx.post(f"http://127.0.0.1:{port}/public", json=SPEC.to_json())
        assert answer.status_code == 200
        report = base64.b64decode(answer.json()["kdsAttestationReport"])
        info = EnclaveInstanceInfo.deserialize(report)
        constraint = EnclaveConstraint.parse(f"C:{info.code_hash} SEC:INSECURE")
        verify_public_response(answer.json(), SPEC, constraint)
    finally:
        process.terminate()
        status = process.wait(30)
    assert process.stderr is not None
    log = process.stderr.read().decode()
    # uvicorn shuts down, then ends the process with the signal it got; the enclave stopped.
    assert status == -signal.SIGTERM
    assert "enclave sanctorum-kds stopped" in log
    # It says how to pin it: its constraint and its cluster key.
    assert f'constraint = "C:{info.code_hash} SEC:INSECURE"' in log
    assert f'cluster_key = "{answer.json()["clusterKey"]}"' in log
    assert (tmp_path / "state" / "build").is_dir()


def test_the_docs_name_the_kds_code_hash_a_build_gives() -> None:
    """Users paste the KDS's code hash from the docs into [kds].constraint: it must be real."""
    code = str(measure_project(kds_project()))
    docs = Path(__file__).parents[2] / "docs"
    for page in ("kds.md", "enclave-toml.md"):
        text = (docs / page).read_text()
        named = set(re.findall(r'constraint ?= ?"C:([0-9A-F]{64}) SEC:INSECURE"', text))
        assert named == {code}, page
