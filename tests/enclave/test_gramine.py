"""The enclave runtime under Gramine, run against a fake /dev/attestation directory."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sanctorum.attestation.dcap import decode_dcap_evidence, verify_dcap_evidence
from sanctorum.attestation.evidence import REPORT_DATA_SIZE
from sanctorum.common.errors import EnclaveLoadError, InvalidEnclaveError
from sanctorum.common.hashes import SHA256Hash
from sanctorum.enclave import Enclave
from sanctorum.enclave.gramine import GramineAttestation
from sanctorum.enclave.runtime import EnclaveRuntime
from sanctorum.enclave.sealing import EnclaveIdentity, SealingPolicy
from tests.conftest import vector_file

QUOTE = vector_file("dcap/sgx_quote_v3.bin").read_bytes()
COLLATERAL: dict[str, str] = json.loads(
    vector_file("dcap/sgx_quote_v3.collateral.json").read_text()
)
VALID_AT = datetime.fromtimestamp(1750416971, UTC)


@pytest.fixture
def attestation_dir(tmp_path: Path) -> Path:
    """What Gramine shows an SGX enclave with remote attestation "dcap"."""
    directory = tmp_path / "attestation"
    (directory / "keys").mkdir(parents=True)
    (directory / "attestation_type").write_text("dcap")
    (directory / "quote").write_bytes(QUOTE)  # the hardware's answer, recorded
    (directory / "keys" / "_sgx_mrenclave").write_bytes(bytes(range(16)))
    (directory / "keys" / "_sgx_mrsigner").write_bytes(bytes(range(16, 32)))
    return directory


def _collateral_for(quote: bytes) -> dict[str, str]:
    assert quote == QUOTE  # the host is asked for exactly the quote the enclave read
    return COLLATERAL


def test_quote_requests_write_the_report_data_and_read_the_quote(attestation_dir: Path) -> None:
    gramine = GramineAttestation(_collateral_for, attestation_dir)
    report_data = bytes(range(REPORT_DATA_SIZE))
    evidence = gramine.produce(report_data)
    assert (attestation_dir / "user_report_data").read_bytes() == report_data
    assert decode_dcap_evidence(evidence) == (QUOTE, json.dumps(COLLATERAL, sort_keys=True))
    claims = verify_dcap_evidence(evidence, VALID_AT)  # what a client checks
    assert claims.security.tcb_status == "ConfigurationAndSWHardeningNeeded"
    with pytest.raises(ValueError, match="64 bytes"):
        gramine.produce(b"short")


def test_sealing_keys_come_from_the_cpu(attestation_dir: Path) -> None:
    gramine = GramineAttestation(_collateral_for, attestation_dir)
    assert gramine.platform_secret(SealingPolicy.CODE_HASH) == bytes(range(16))
    assert gramine.platform_secret(SealingPolicy.SIGNER) == bytes(range(16, 32))
    (attestation_dir / "keys" / "_sgx_mrsigner").write_bytes(b"short")
    with pytest.raises(EnclaveLoadError, match="not a 16-byte sealing key"):
        gramine.platform_secret(SealingPolicy.SIGNER)


def test_not_under_gramine_or_without_dcap(tmp_path: Path, attestation_dir: Path) -> None:
    with pytest.raises(EnclaveLoadError, match="not an SGX enclave under Gramine"):
        GramineAttestation(_collateral_for, tmp_path / "missing")
    (attestation_dir / "attestation_type").write_text("none")
    with pytest.raises(EnclaveLoadError, match='remote_attestation = "dcap"'):
        GramineAttestation(_collateral_for, attestation_dir)


def test_the_runtime_binds_its_keys_through_gramine(attestation_dir: Path) -> None:
    """The runtime writes SHA-512(signing key || encryption key) as report data. The fake
    directory answers with a recorded quote made for other report data, so the instance is
    refused — for the binding, once the quote itself verifies."""

    class Empty(Enclave):
        pass

    gramine = GramineAttestation(_collateral_for, attestation_dir)
    identity = EnclaveIdentity(SHA256Hash(bytes(32)), SHA256Hash(bytes(32)), 1)
    with pytest.raises(InvalidEnclaveError) as refused:
        EnclaveRuntime(Empty(), gramine, identity=identity, platform_secret=gramine.platform_secret)
    written = (attestation_dir / "user_report_data").read_bytes()
    assert len(written) == REPORT_DATA_SIZE
    assert written != QUOTE[368:432]  # ours, not the recorded report data
    # Checked now, the recorded collateral has expired: the quote check fails first.
    assert "DCAP quote verification failed" in str(refused.value)


def test_each_policy_derives_from_its_own_cpu_key(attestation_dir: Path) -> None:
    from sanctorum.enclave.sealing import derive_sealing_key

    gramine = GramineAttestation(_collateral_for, attestation_dir)
    identity = EnclaveIdentity(SHA256Hash(bytes(32)), SHA256Hash(bytes(32)), 1)
    by_code = derive_sealing_key(
        gramine.platform_secret(SealingPolicy.CODE_HASH), identity, SealingPolicy.CODE_HASH, b"p"
    )
    by_signer = derive_sealing_key(
        gramine.platform_secret(SealingPolicy.SIGNER), identity, SealingPolicy.SIGNER, b"p"
    )
    assert by_code != by_signer
