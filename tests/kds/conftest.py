"""A KDS in its own process, as users run it: `sanctorum kds serve`."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from sanctorum import EnclaveInstanceInfo
from tests.kds.test_kds_enclave import SPEC
from tests.web.conftest import free_port


@pytest.fixture(scope="module")
def kds_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """`sanctorum kds serve` in its own process: its URL, code hash and cluster key."""
    port = free_port()
    state = tmp_path_factory.mktemp("kds-state")
    command = ["kds", "serve", "--state-dir", str(state), "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "sanctorum", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.post(f"{url}/public", json=SPEC.to_json())
                if answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, "the KDS process ended"
            assert time.monotonic() < deadline, "the KDS did not come up"
            time.sleep(0.1)
        report = base64.b64decode(answer.json()["kdsAttestationReport"])
        code_hash = str(EnclaveInstanceInfo.deserialize(report).code_hash)
        yield url, code_hash, answer.json()["clusterKey"]
    finally:
        process.terminate()
        process.wait(30)
