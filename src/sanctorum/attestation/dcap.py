"""Intel SGX DCAP evidence: an ECDSA quote (v3 or v4) and the collateral to verify it.

Verification is done by ``dcap-qvl`` against the Intel SGX root it pins, at an explicit time
(collateral expires; recorded evidence is checked at the time it was valid). The claims come
from the verified report body; the TCB status decides the security summary (DESIGN §5):

=========================================================  ========
UpToDate                                                   SECURE
SWHardeningNeeded, ConfigurationNeeded,                    STALE
ConfigurationAndSWHardeningNeeded, OutOfDate,
OutOfDateConfigurationNeeded
Revoked, anything else, any verification failure           rejected
debug attribute set                                        INSECURE
=========================================================  ========

Evidence layout: version u8 | quote (u32 length) | collateral JSON (u32 length), the JSON in
the layout ``dcap_qvl.QuoteCollateralV3.from_json`` reads.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sanctorum.attestation.evidence import REPORT_DATA_SIZE, EvidenceClaims, register_verifier
from sanctorum.common.codec import Reader, Writer
from sanctorum.common.errors import InvalidEnclaveError
from sanctorum.common.hashes import SHA256Hash
from sanctorum.common.mode import EnclaveMode, EnclaveSecurityInfo, SecuritySummary

DCAP_EVIDENCE_TYPE = "dcap"
_VERSION = 1
_MAX_PART = 512 * 1024
_DEBUG_FLAG = 0x02  # SGX ATTRIBUTES.DEBUG

TCB_STATUS_SUMMARY = {
    "UpToDate": SecuritySummary.SECURE,
    "SWHardeningNeeded": SecuritySummary.STALE,
    "ConfigurationNeeded": SecuritySummary.STALE,
    "ConfigurationAndSWHardeningNeeded": SecuritySummary.STALE,
    "OutOfDate": SecuritySummary.STALE,
    "OutOfDateConfigurationNeeded": SecuritySummary.STALE,
}


def encode_dcap_evidence(quote: bytes, collateral: str | dict[str, Any]) -> bytes:
    """Evidence bytes from a quote and its collateral (JSON text or its parsed dict)."""
    text = collateral if isinstance(collateral, str) else json.dumps(collateral, sort_keys=True)
    return Writer().u8(_VERSION).bytes32(quote).bytes32(text.encode("utf-8")).getvalue()


def decode_dcap_evidence(evidence: bytes) -> tuple[bytes, str]:
    reader = Reader(evidence, error=InvalidEnclaveError, what="DCAP evidence")
    version = reader.u8("version")
    if version != _VERSION:
        raise reader.fail(f"version {version} is not supported (expected {_VERSION})")
    quote = reader.bytes32("quote", _MAX_PART)
    collateral = reader.bytes32("collateral", _MAX_PART)
    reader.expect_end()
    try:
        return quote, collateral.decode("utf-8")
    except UnicodeDecodeError:
        raise reader.fail("collateral is not UTF-8 JSON") from None


def classify(status: str, advisories: list[str], debug: bool) -> tuple[SecuritySummary, str]:
    """The security summary and reason for a verified quote; raises for revoked/unknown."""
    if status == "Revoked":
        raise InvalidEnclaveError(
            "DCAP: the platform's TCB is revoked; no enclave on it can be trusted"
        )
    summary = TCB_STATUS_SUMMARY.get(status)
    if summary is None:
        raise InvalidEnclaveError(f"DCAP: unknown TCB status {status!r}; refusing to trust it")
    advisory_text = f" (advisories: {', '.join(advisories)})" if advisories else ""
    if debug:
        return SecuritySummary.INSECURE, (
            f"SGX debug enclave: its memory can be read by the host. TCB status {status}"
            f"{advisory_text}."
        )
    if summary is SecuritySummary.SECURE:
        return summary, "SGX enclave on an up-to-date platform (TCB status UpToDate)."
    return summary, (
        f"SGX enclave on a platform that needs updates: TCB status {status}{advisory_text}."
    )


def verify_dcap_evidence(evidence: bytes, at: datetime | None = None) -> EvidenceClaims:
    """Verify the quote and collateral with dcap-qvl at ``at`` (default now)."""
    quote, collateral_text = decode_dcap_evidence(evidence)
    when = at or datetime.now(UTC)
    try:
        import dcap_qvl

        collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_text)
        verified = json.loads(dcap_qvl.verify(quote, collateral, int(when.timestamp())).to_json())
    except ImportError:
        raise InvalidEnclaveError(
            "DCAP evidence needs the dcap-qvl package: pip install dcap-qvl"
        ) from None
    except Exception as error:  # dcap-qvl raises ValueError and others on every failure
        raise InvalidEnclaveError(f"DCAP quote verification failed: {error}") from None
    body = verified.get("report", {}).get("SgxEnclave")
    if not isinstance(body, dict):
        raise InvalidEnclaveError(
            "DCAP: the quote is not from an SGX enclave (a TDX quote, say); Sanctorum enclaves "
            "attest with SGX quotes"
        )
    try:
        attributes = bytes.fromhex(body["attributes"])
        debug = bool(attributes[0] & _DEBUG_FLAG)
        report_data = bytes.fromhex(body["report_data"])
        code_hash = SHA256Hash(bytes.fromhex(body["mr_enclave"]))
        signer_hash = SHA256Hash(bytes.fromhex(body["mr_signer"]))
        product_id, revocation_level = int(body["isv_prod_id"]), int(body["isv_svn"])
        status, advisories = str(verified["status"]), [str(a) for a in verified["advisory_ids"]]
    except (KeyError, ValueError, TypeError, IndexError) as error:
        raise InvalidEnclaveError(f"DCAP: unexpected verified report: {error!r}") from None
    if len(report_data) != REPORT_DATA_SIZE:
        raise InvalidEnclaveError("DCAP: the report data is not 64 bytes")
    summary, reason = classify(status, advisories, debug)
    return EvidenceClaims(
        code_hash=code_hash,
        signer_hash=signer_hash,
        product_id=product_id,
        revocation_level=revocation_level,
        mode=EnclaveMode.DEBUG if debug else EnclaveMode.RELEASE,
        security=EnclaveSecurityInfo(
            summary=summary,
            reason=reason,
            timestamp=_collateral_time(collateral_text),
            tcb_status=status,
            advisory_ids=tuple(advisories),
        ),
        report_data=report_data,
    )


def _collateral_time(collateral_text: str) -> datetime:
    """When Intel issued the TCB info: the freshest signed time the evidence carries."""
    try:
        tcb_info = json.loads(json.loads(collateral_text)["tcb_info"])
        return datetime.fromisoformat(tcb_info["issueDate"])
    except (KeyError, ValueError, TypeError) as error:
        raise InvalidEnclaveError(
            f"DCAP: the collateral has no TCB issue date: {error!r}"
        ) from None


register_verifier(DCAP_EVIDENCE_TYPE, verify_dcap_evidence)
