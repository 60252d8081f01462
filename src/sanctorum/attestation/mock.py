"""Mock attestation: the claims of an enclave running inside the host's own process.

There is no hardware and no signature: mock "evidence" is just the claims, so anyone can make
it and its security summary is always INSECURE. It lets tests exercise constraints, upgrades and
rollbacks through :class:`MockConfiguration`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sanctorum.attestation.evidence import (
    REPORT_DATA_SIZE,
    EvidenceClaims,
    register_verifier,
)
from sanctorum.common.codec import Reader, Writer
from sanctorum.common.errors import InvalidEnclaveError
from sanctorum.common.hashes import ZERO_HASH, SHA256Hash
from sanctorum.common.mode import EnclaveMode, EnclaveSecurityInfo, SecuritySummary

MOCK_EVIDENCE_TYPE = "mock"
_VERSION = 1


@dataclass(frozen=True)
class MockConfiguration:
    """What a mock enclave claims to be; every field is optional.

    Defaults: the code hash is SHA-256 of the enclave class's qualified name, the
    signer hash is 32 zero bytes, TCB level 1. A product id or revocation level left at None
    comes from the enclave's ``enclave.toml`` when :meth:`EnclaveHost.load` finds one (see
    ``docs/tutorial.md``), else it is 1 and 0; a value given here wins over the file, so a test
    can play another release of the enclave.
    """

    code_hash: SHA256Hash | None = None
    signer_hash: SHA256Hash | None = None
    product_id: int | None = None
    revocation_level: int | None = None
    tcb_level: int = 1

    def __post_init__(self) -> None:
        for name in ("code_hash", "signer_hash"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, SHA256Hash):
                raise ValueError(
                    f"MockConfiguration.{name} is a SHA256Hash, not {type(value).__name__}: "
                    f'use SHA256Hash.parse("...") for a hash written in hex'
                )
        if self.product_id is not None:
            _check_range("product_id", self.product_id, 1, 65535)
        if self.revocation_level is not None:
            _check_range("revocation_level", self.revocation_level, 0, 65534)
        _check_range("tcb_level", self.tcb_level, 1, 65535)


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(
            f"MockConfiguration.{name} must be an integer from {low} to {high}, not {value!r}"
        )


@dataclass(frozen=True)
class MockEvidenceProvider:
    """Produces mock evidence for one mock enclave."""

    code_hash: SHA256Hash
    signer_hash: SHA256Hash
    product_id: int
    revocation_level: int
    tcb_level: int
    evidence_type: str = MOCK_EVIDENCE_TYPE

    @classmethod
    def for_class(
        cls, qualified_name: str, config: MockConfiguration | None
    ) -> MockEvidenceProvider:
        config = config or MockConfiguration()
        return cls(
            code_hash=config.code_hash or SHA256Hash.of(qualified_name.encode("utf-8")),
            signer_hash=config.signer_hash or ZERO_HASH,
            product_id=1 if config.product_id is None else config.product_id,
            revocation_level=0 if config.revocation_level is None else config.revocation_level,
            tcb_level=config.tcb_level,
        )

    def produce(self, report_data: bytes) -> bytes:
        if len(report_data) != REPORT_DATA_SIZE:
            raise ValueError(f"report data is {REPORT_DATA_SIZE} bytes")
        return (
            Writer()
            .u8(_VERSION)
            .raw(self.code_hash.digest)
            .raw(self.signer_hash.digest)
            .u16(self.product_id)
            .u16(self.revocation_level)
            .u16(self.tcb_level)
            .u64(time.time_ns() // 1_000_000)
            .raw(report_data)
            .getvalue()
        )


def verify_mock_evidence(evidence: bytes, at: datetime | None = None) -> EvidenceClaims:
    """Decode mock evidence. Nothing is signed: the summary is always INSECURE."""
    reader = Reader(evidence, error=InvalidEnclaveError, what="mock attestation evidence")
    version = reader.u8("version")
    if version != _VERSION:
        raise reader.fail(f"version {version} is not supported (expected {_VERSION})")
    code_hash = SHA256Hash(reader.raw(32, "code hash"))
    signer_hash = SHA256Hash(reader.raw(32, "signer hash"))
    product_id = reader.u16("product id")
    revocation_level = reader.u16("revocation level")
    tcb_level = reader.u16("TCB level")
    millis = reader.u64("timestamp")
    report_data = reader.raw(REPORT_DATA_SIZE, "report data")
    reader.expect_end()
    if not product_id >= 1 or revocation_level > 65534 or not tcb_level >= 1:
        raise reader.fail("product id, revocation level or TCB level out of range")
    try:
        timestamp = datetime.fromtimestamp(millis / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        raise reader.fail(f"timestamp {millis} is out of range") from None
    security = EnclaveSecurityInfo(
        summary=SecuritySummary.INSECURE,
        reason=(
            f"Mock mode (TCB level {tcb_level}): the enclave runs inside the host's process "
            "with no hardware protection and nothing vouches for it."
        ),
        timestamp=timestamp,
    )
    return EvidenceClaims(
        code_hash=code_hash,
        signer_hash=signer_hash,
        product_id=product_id,
        revocation_level=revocation_level,
        mode=EnclaveMode.MOCK,
        security=security,
        report_data=report_data,
    )


register_verifier(MOCK_EVIDENCE_TYPE, verify_mock_evidence)
