"""A KDS in its own process, as users run it: `sanctorum kds serve`."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from sanctorum import EnclaveInstanceInfo
from sanctorum.testing.servers import KdsProcess
from tests.kds.test_kds_enclave import SPEC


@pytest.fixture(scope="module")
def kds_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """`sanctorum kds serve` in its own process: its URL, code hash and cluster key."""
    with KdsProcess(tmp_path_factory.mktemp("kds") / "state") as kds:
        answer = httpx.post(f"{kds.url}/public", json=SPEC.to_json())
        assert answer.status_code == 200, answer.text
        report = base64.b64decode(answer.json()["kdsAttestationReport"])
        code_hash = str(EnclaveInstanceInfo.deserialize(report).code_hash)
        yield kds.url, code_hash, answer.json()["clusterKey"]
