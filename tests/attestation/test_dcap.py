"""DCAP evidence, checked against real quotes recorded from Intel hardware."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanctorum.attestation import EnclaveConstraint, EnclaveInstanceInfo, key_binding
from sanctorum.attestation.dcap import (
    DCAP_EVIDENCE_TYPE,
    classify,
    encode_dcap_evidence,
    verify_dcap_evidence,
)
from sanctorum.attestation.evidence import EvidenceClaims, register_verifier
from sanctorum.common import (
    Curve25519PrivateKey,
    Ed25519PrivateKey,
    EnclaveMode,
    InvalidEnclaveError,
    SecuritySummary,
    SHA256Hash,
)
from tests.conftest import vector_file

QUOTE = vector_file("dcap/sgx_quote_v3.bin").read_bytes()
COLLATERAL = vector_file("dcap/sgx_quote_v3.collateral.json").read_text()
VALID_AT = datetime.fromtimestamp(1750416971, UTC)
EVIDENCE = encode_dcap_evidence(QUOTE, COLLATERAL)
MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
MRSIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"


def test_recorded_quote_verifies_as_stale_with_its_advisories() -> None:
    claims = verify_dcap_evidence(EVIDENCE, VALID_AT)
    assert claims.code_hash == SHA256Hash(bytes.fromhex(MRENCLAVE))
    assert claims.signer_hash == SHA256Hash(bytes.fromhex(MRSIGNER))
    assert (claims.product_id, claims.revocation_level) == (0, 0)
    assert claims.mode is EnclaveMode.RELEASE  # the debug attribute is not set
    assert claims.report_data == b"Hello, world!".ljust(64, b"\0")
    security = claims.security
    assert security.summary is SecuritySummary.STALE
    assert security.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert security.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert "INTEL-SA-00289" in security.reason
    assert "INTEL-SA-00615" in security.reason


@pytest.mark.parametrize(
    "when",
    [
        VALID_AT - timedelta(days=30),  # before the TCB info was issued
        VALID_AT + timedelta(days=60),  # after it expired
        None,  # now: the recorded collateral is long expired
    ],
)
def test_rejected_outside_its_validity_window(when: datetime | None) -> None:
    with pytest.raises(InvalidEnclaveError, match="DCAP quote verification failed"):
        verify_dcap_evidence(EVIDENCE, when)


def test_any_flipped_bit_in_the_signed_parts_is_rejected() -> None:
    # The header and report body (bytes 0-431) and the quote signature (after the 4-byte
    # signature-data length) are signed; sample positions across all of them.
    positions = [*range(0, 432, 7), *range(436, 436 + 64, 5)]
    for position in positions:
        for bit in (0, 5):
            tampered = bytearray(QUOTE)
            tampered[position] ^= 1 << bit
            with pytest.raises(InvalidEnclaveError, match=r"verification failed|not from an SGX"):
                verify_dcap_evidence(encode_dcap_evidence(bytes(tampered), COLLATERAL), VALID_AT)


def test_tampered_collateral_is_rejected() -> None:
    tampered = COLLATERAL.replace("ConfigurationAndSWHardeningNeeded", "UpToDate")
    assert tampered != COLLATERAL
    with pytest.raises(InvalidEnclaveError, match="verification failed"):
        verify_dcap_evidence(encode_dcap_evidence(QUOTE, tampered), VALID_AT)


def test_a_tdx_quote_is_not_an_sgx_enclave() -> None:
    quote = vector_file("dcap/tdx_quote_v4.bin").read_bytes()
    collateral = vector_file("dcap/tdx_quote_v4.collateral.json").read_text()
    with pytest.raises(InvalidEnclaveError, match="not from an SGX enclave"):
        verify_dcap_evidence(
            encode_dcap_evidence(quote, collateral), datetime.fromtimestamp(1750414563, UTC)
        )


def test_as_an_instance_the_binding_fails_with_its_own_reason() -> None:
    """The quote verifies, but its report data is not a Sanctorum key binding."""
    signing, encryption = Ed25519PrivateKey.generate(), Curve25519PrivateKey.generate()
    with pytest.raises(InvalidEnclaveError, match="key binding mismatch") as binding:
        EnclaveInstanceInfo(
            signing.public_key,
            encryption.public_key,
            DCAP_EVIDENCE_TYPE,
            EVIDENCE,
            verification_time=VALID_AT,
        )
    assert "verification failed" not in str(binding.value)
    tampered = bytearray(QUOTE)
    tampered[100] ^= 1
    with pytest.raises(InvalidEnclaveError, match="verification failed") as signature:
        EnclaveInstanceInfo(
            signing.public_key,
            encryption.public_key,
            DCAP_EVIDENCE_TYPE,
            encode_dcap_evidence(bytes(tampered), COLLATERAL),
            verification_time=VALID_AT,
        )
    assert "binding" not in str(signature.value)


def _instance_from_recorded_claims() -> EnclaveInstanceInfo:
    """An instance whose claims are the recorded quote's, bound to test keys (test-only type:
    no real quote carries a Sanctorum binding for keys we hold)."""
    signing, encryption = Ed25519PrivateKey.generate(), Curve25519PrivateKey.generate()

    def verify(evidence: bytes, at: datetime | None) -> EvidenceClaims:
        claims = verify_dcap_evidence(evidence, VALID_AT)
        return replace(claims, report_data=key_binding(signing.public_key, encryption.public_key))

    register_verifier("test-dcap-bound", verify)
    return EnclaveInstanceInfo(
        signing.public_key, encryption.public_key, "test-dcap-bound", EVIDENCE
    )


def test_constraints_on_the_recorded_claims() -> None:
    info = _instance_from_recorded_claims()
    EnclaveConstraint.parse(f"C:{MRENCLAVE} SEC:STALE").check(info)
    EnclaveConstraint.parse(f"S:{MRSIGNER} PROD:0 REVOKE:0 SEC:STALE").check(info)
    failures = {
        f"C:{MRENCLAVE}": "fails SEC:SECURE: it is STALE",
        f"C:{MRENCLAVE} SEC:INSECURE": "fails SEC:INSECURE: it is STALE",
        f"S:{MRSIGNER} PROD:1 SEC:STALE": "fails PROD:1",
        f"C:{MRENCLAVE} REVOKE:1 SEC:STALE": "fails REVOKE:1",
        f"C:{MRSIGNER} SEC:STALE": "match none of",
    }
    for text, message in failures.items():
        with pytest.raises(InvalidEnclaveError, match=message):
            EnclaveConstraint.parse(text).check(info)


@pytest.mark.parametrize(
    ("status", "summary"),
    [
        ("UpToDate", SecuritySummary.SECURE),
        ("SWHardeningNeeded", SecuritySummary.STALE),
        ("ConfigurationNeeded", SecuritySummary.STALE),
        ("ConfigurationAndSWHardeningNeeded", SecuritySummary.STALE),
        ("OutOfDate", SecuritySummary.STALE),
        ("OutOfDateConfigurationNeeded", SecuritySummary.STALE),
    ],
)
def test_tcb_status_mapping(status: str, summary: SecuritySummary) -> None:
    assert classify(status, ["INTEL-SA-1"])[0] is summary


@pytest.mark.parametrize("status", ["Revoked", "TCBLevelUnknown", ""])
def test_revoked_and_unknown_statuses_are_rejected(status: str) -> None:
    with pytest.raises(InvalidEnclaveError, match=r"revoked|unknown TCB status"):
        classify(status, [])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_malformed_evidence_raises_only_invalid_enclave(data: bytes) -> None:
    with pytest.raises(InvalidEnclaveError):
        verify_dcap_evidence(data, VALID_AT)


def serialized_with(collateral: str, quote: bytes = QUOTE) -> bytes:
    """What a host could send: a DCAP instance info whose collateral it chose."""
    from sanctorum.common.codec import Writer

    return (
        Writer()
        .raw(b"SNCI")
        .u8(1)
        .raw(Ed25519PrivateKey.generate().public_key.encoded)
        .raw(Curve25519PrivateKey.generate().public_key.encoded)
        .text16(DCAP_EVIDENCE_TYPE)
        .bytes32(encode_dcap_evidence(quote, collateral))
        .getvalue()
    )


def test_a_client_can_bring_its_own_or_fresh_collateral(pccs: str) -> None:
    from sanctorum.attestation.collateral import CollateralFetcher

    altered = json.loads(COLLATERAL)
    altered["tcb_info"] = altered["tcb_info"].replace('"tcbType":0', '"tcbType":1')
    lying_host = serialized_with(json.dumps(altered))
    with pytest.raises(InvalidEnclaveError, match="verification failed"):
        EnclaveInstanceInfo.deserialize(lying_host, verification_time=VALID_AT)
    # With its own collateral the quote verifies; only the (recorded) binding fails now.
    with pytest.raises(InvalidEnclaveError, match="key binding mismatch"):
        EnclaveInstanceInfo.deserialize(
            lying_host, verification_time=VALID_AT, collateral=COLLATERAL
        )
    fresh = CollateralFetcher(pccs, clock=lambda: VALID_AT)
    with pytest.raises(InvalidEnclaveError, match="key binding mismatch"):
        EnclaveInstanceInfo.deserialize(lying_host, verification_time=VALID_AT, collateral=fresh)
    with pytest.raises(InvalidEnclaveError, match="cannot get fresh collateral"):
        EnclaveInstanceInfo.deserialize(
            lying_host, collateral=CollateralFetcher("http://127.0.0.1:9")
        )
