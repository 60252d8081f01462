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
debug attribute set                                        rejected
=========================================================  ========

Debug enclaves are refused, not classified INSECURE: ``dcap-qvl`` refuses their quotes and its
Python binding has no switch to allow them, so they could never attest anyway (see
``docs/decisions.md``). The refusal comes before verification, with its own reason, since
the debug attribute alone settles it.

The evidence's time (what ``EXPIRE:`` counts from) is the issue date of the oldest collateral
item Intel reissues continuously; :func:`collateral_info` reads every date and the TCB
evaluation data numbers from the same signed bytes ``dcap-qvl`` checked.

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
from sanctorum.common.mode import (
    CollateralInfo,
    EnclaveMode,
    EnclaveSecurityInfo,
    SecuritySummary,
)

DCAP_EVIDENCE_TYPE = "dcap"
_VERSION = 1
_MAX_PART = 512 * 1024
_DEBUG_FLAG = 0x02  # SGX ATTRIBUTES.DEBUG
# Quote v3: a 48-byte header (TEE type, u32 little-endian, at 4; 0 is SGX), then the report
# body: CPUSVN 16, MISCSELECT 4, reserved 12, ISVEXTPRODID 16, then ATTRIBUTES.
_TEE_TYPE_OFFSET = 4
_ATTRIBUTES_OFFSET = 48 + 16 + 4 + 12 + 16

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


def is_debug_quote(quote: bytes) -> bool:
    """Whether an SGX quote's report body has the DEBUG attribute set (read unverified)."""
    if len(quote) <= _ATTRIBUTES_OFFSET:
        return False  # too short to be a quote: verification says why
    tee_type = int.from_bytes(quote[_TEE_TYPE_OFFSET : _TEE_TYPE_OFFSET + 4], "little")
    return tee_type == 0 and bool(quote[_ATTRIBUTES_OFFSET] & _DEBUG_FLAG)


def classify(status: str, advisories: list[str]) -> tuple[SecuritySummary, str]:
    """The security summary and reason for a verified release-mode quote; raises for
    revoked or unknown TCB statuses."""
    if status == "Revoked":
        raise InvalidEnclaveError(
            "DCAP: the platform's TCB is revoked; no enclave on it can be trusted"
        )
    summary = TCB_STATUS_SUMMARY.get(status)
    if summary is None:
        raise InvalidEnclaveError(f"DCAP: unknown TCB status {status!r}; refusing to trust it")
    advisory_text = f" (advisories: {', '.join(advisories)})" if advisories else ""
    if summary is SecuritySummary.SECURE:
        return summary, "SGX enclave on an up-to-date platform (TCB status UpToDate)."
    return summary, (
        f"SGX enclave on a platform that needs updates: TCB status {status}{advisory_text}."
    )


def verify_dcap_evidence(evidence: bytes, at: datetime | None = None) -> EvidenceClaims:
    """Verify the quote and collateral with dcap-qvl at ``at`` (default now)."""
    quote, collateral_text = decode_dcap_evidence(evidence)
    # Unverified, but either way the answer is no: a real debug enclave cannot keep secrets,
    # and a release quote whose DEBUG bit was flipped would fail verification.
    if is_debug_quote(quote):
        raise InvalidEnclaveError(
            "DCAP: debug enclave: its memory can be read by the host, so it can keep no secret "
            "and its attestation proves nothing (the quote's DEBUG attribute is set). Sanctorum "
            "refuses debug quotes: develop in simulation mode and attest SGX enclaves built "
            "with --mode release"
        )
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
        report_data = bytes.fromhex(body["report_data"])
        code_hash = SHA256Hash(bytes.fromhex(body["mr_enclave"]))
        signer_hash = SHA256Hash(bytes.fromhex(body["mr_signer"]))
        product_id, revocation_level = int(body["isv_prod_id"]), int(body["isv_svn"])
        status, advisories = str(verified["status"]), [str(a) for a in verified["advisory_ids"]]
    except (KeyError, ValueError, TypeError, IndexError) as error:
        raise InvalidEnclaveError(f"DCAP: unexpected verified report: {error!r}") from None
    if len(report_data) != REPORT_DATA_SIZE:
        raise InvalidEnclaveError("DCAP: the report data is not 64 bytes")
    summary, reason = classify(status, advisories)
    collateral = collateral_info(collateral_text)
    return EvidenceClaims(
        code_hash=code_hash,
        signer_hash=signer_hash,
        product_id=product_id,
        revocation_level=revocation_level,
        mode=EnclaveMode.RELEASE,
        security=EnclaveSecurityInfo(
            summary=summary,
            reason=reason,
            timestamp=collateral.oldest_reissued_item[1],
            tcb_status=status,
            advisory_ids=tuple(advisories),
            collateral=collateral,
        ),
        report_data=report_data,
    )


def collateral_info(collateral_text: str) -> CollateralInfo:
    """The issue date of every collateral item and the TCB evaluation data numbers, read from
    the collateral JSON (the layout ``dcap_qvl.QuoteCollateralV3.from_json`` reads).

    Call it on the text ``dcap-qvl`` verified: then every value is Intel-signed. Raises
    :class:`InvalidEnclaveError` if an item is missing or malformed.
    """
    try:
        collateral = _json_object(collateral_text, strict=True)
        # Intel signs these two texts as they are, so no one else can add a second issueDate.
        tcb_info = _json_object(collateral["tcb_info"])
        qe_identity = _json_object(collateral["qe_identity"])
        return CollateralInfo(
            tcb_info_issued=_issue_date(tcb_info),
            qe_identity_issued=_issue_date(qe_identity),
            pck_crl_issued=_crl_issued(collateral["pck_crl"]),
            root_ca_crl_issued=_crl_issued(collateral["root_ca_crl"]),
            tcb_info_evaluation_data_number=_evaluation_number(tcb_info),
            qe_identity_evaluation_data_number=_evaluation_number(qe_identity),
        )
    except (KeyError, ValueError, TypeError) as error:
        raise InvalidEnclaveError(f"DCAP: malformed collateral: {error!r}") from None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # dcap-qvl refuses duplicate keys; refusing them too keeps both readings of one text equal.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in collateral JSON")
    return result


def _json_object(text: object, *, strict: bool = False) -> dict[str, Any]:
    if not isinstance(text, str):
        raise TypeError(f"expected JSON text, not {type(text).__name__}")
    value = json.loads(text, object_pairs_hook=_reject_duplicates if strict else None)
    if not isinstance(value, dict):
        raise TypeError("expected a JSON object")
    return value


def _issue_date(document: dict[str, Any]) -> datetime:
    issued = datetime.fromisoformat(str(document["issueDate"]))
    if issued.tzinfo is None:
        raise ValueError(f"issueDate {document['issueDate']!r} has no time zone")
    return issued.astimezone(UTC)


def _evaluation_number(document: dict[str, Any]) -> int:
    number = document["tcbEvaluationDataNumber"]
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise ValueError(f"tcbEvaluationDataNumber {number!r} is not a whole number")
    return number


def _crl_issued(hex_text: object) -> datetime:
    """A CRL's thisUpdate; the collateral holds it as hex of DER (PEM accepted as well)."""
    # Imported here: x509 costs an enclave process ~18 ms at every start, and only DCAP
    # verification (in clients) reads CRLs.
    from cryptography import x509

    if not isinstance(hex_text, str):
        raise TypeError("a CRL in the collateral is hex text")
    data = bytes.fromhex(hex_text)
    crl = (
        x509.load_pem_x509_crl(data)
        if data.lstrip().startswith(b"-----")
        else x509.load_der_x509_crl(data)
    )
    return crl.last_update_utc


register_verifier(DCAP_EVIDENCE_TYPE, verify_dcap_evidence)
