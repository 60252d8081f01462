"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sanctorum.attestation import (
    EnclaveInstanceInfo,
    MockConfiguration,
    MockEvidenceProvider,
    key_binding,
)
from sanctorum.common import Curve25519PrivateKey, Ed25519PrivateKey

DATA = Path(__file__).parent / "data"
SHARED_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


def vector_file(relative: str) -> Path:
    """A third-party vector file: the shared copy when present, else the committed one."""
    shared = SHARED_VECTORS / relative
    if shared.exists():
        return shared
    return DATA / Path(relative).name


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


def mock_instance_info(
    config: MockConfiguration,
    signing: Ed25519PrivateKey | None = None,
    encryption: Curve25519PrivateKey | None = None,
) -> EnclaveInstanceInfo:
    """An EnclaveInstanceInfo with mock evidence for ``config``, bound to the given keys."""
    signing = signing or Ed25519PrivateKey.generate()
    encryption = encryption or Curve25519PrivateKey.generate()
    provider = MockEvidenceProvider.for_class("tests.Enclave", config)
    evidence = provider.produce(key_binding(signing.public_key, encryption.public_key))
    return EnclaveInstanceInfo(signing.public_key, encryption.public_key, "mock", evidence)
