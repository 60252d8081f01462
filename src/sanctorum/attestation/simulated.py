"""Simulated attestation: evidence signed by a simulated quoting key that ships with Sanctorum.

Simulation mode runs the enclave in its own process from a measured bundle, so the evidence
says what really runs, but the quoting key is public (every simulation enclave must sign with
it), so anyone can forge such evidence. Its summary is therefore always INSECURE.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sanctorum.attestation.evidence import REPORT_DATA_SIZE, EvidenceClaims, register_verifier
from sanctorum.common.codec import Reader, Writer
from sanctorum.common.errors import InvalidEnclaveError, InvalidSignatureError
from sanctorum.common.hashes import SHA256Hash
from sanctorum.common.keys import Ed25519PrivateKey
from sanctorum.common.mode import EnclaveMode, EnclaveSecurityInfo, SecuritySummary

SIMULATED_EVIDENCE_TYPE = "simulated"
SIMULATED_QUOTING_KEY = Ed25519PrivateKey(
    hashlib.sha256(b"sanctorum simulated quoting key").digest()
)
"""Both halves are public: simulated evidence proves nothing against a malicious host."""

_VERSION = 1
_CONTEXT = b"sanctorum-simulated-quote\0"
_SIGNATURE_SIZE = 64


@dataclass(frozen=True)
class SimulatedEvidenceProvider:
    """Produces simulated evidence for one enclave instance (runs inside the enclave)."""

    code_hash: SHA256Hash
    signer_hash: SHA256Hash
    product_id: int
    revocation_level: int
    evidence_type: str = SIMULATED_EVIDENCE_TYPE

    def produce(self, report_data: bytes) -> bytes:
        if len(report_data) != REPORT_DATA_SIZE:
            raise ValueError(f"report data is {REPORT_DATA_SIZE} bytes")
        claims = (
            Writer()
            .u8(_VERSION)
            .raw(self.code_hash.digest)
            .raw(self.signer_hash.digest)
            .u16(self.product_id)
            .u16(self.revocation_level)
            .u64(time.time_ns() // 1_000_000)
            .raw(report_data)
            .getvalue()
        )
        return claims + SIMULATED_QUOTING_KEY.sign(_CONTEXT + claims)


def verify_simulated_evidence(evidence: bytes, at: datetime | None = None) -> EvidenceClaims:
    """Check the simulated quoting key's signature and decode the claims."""
    if len(evidence) <= _SIGNATURE_SIZE:
        raise InvalidEnclaveError("malformed simulated attestation evidence: truncated")
    claims, signature = evidence[:-_SIGNATURE_SIZE], evidence[-_SIGNATURE_SIZE:]
    reader = Reader(claims, error=InvalidEnclaveError, what="simulated attestation evidence")
    version = reader.u8("version")
    if version != _VERSION:
        raise reader.fail(f"version {version} is not supported (expected {_VERSION})")
    try:
        SIMULATED_QUOTING_KEY.public_key.verify(signature, _CONTEXT + claims)
    except InvalidSignatureError:
        raise InvalidEnclaveError(
            "simulated attestation evidence is not signed by the simulated quoting key: "
            "it was altered"
        ) from None
    code_hash = SHA256Hash(reader.raw(32, "code hash"))
    signer_hash = SHA256Hash(reader.raw(32, "signer hash"))
    product_id = reader.u16("product id")
    revocation_level = reader.u16("revocation level")
    millis = reader.u64("timestamp")
    report_data = reader.raw(REPORT_DATA_SIZE, "report data")
    reader.expect_end()
    try:
        timestamp = datetime.fromtimestamp(millis / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        raise reader.fail(f"timestamp {millis} is out of range") from None
    return EvidenceClaims(
        code_hash=code_hash,
        signer_hash=signer_hash,
        product_id=product_id,
        revocation_level=revocation_level,
        mode=EnclaveMode.SIMULATION,
        security=EnclaveSecurityInfo(
            summary=SecuritySummary.INSECURE,
            reason=(
                "Simulation mode: the enclave runs in its own process from a measured bundle, "
                "but without hardware protection, and its evidence is signed by a public "
                "simulated quoting key that anyone can use."
            ),
            timestamp=timestamp,
        ),
        report_data=report_data,
    )


register_verifier(SIMULATED_EVIDENCE_TYPE, verify_simulated_evidence)
