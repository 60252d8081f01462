"""Attestation evidence: what a platform vouches for, and the verifiers that check it.

Every kind of evidence (mock, simulated, DCAP, …) has a verifier that turns its raw bytes into
:class:`EvidenceClaims`: everything a client may believe about an enclave comes from there,
never from an unsigned field next to the evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sanctorum.common.errors import InvalidEnclaveError
from sanctorum.common.hashes import SHA256Hash
from sanctorum.common.mode import EnclaveMode, EnclaveSecurityInfo

REPORT_DATA_SIZE = 64


@dataclass(frozen=True)
class EvidenceClaims:
    """What verified evidence says about an enclave instance."""

    code_hash: SHA256Hash
    signer_hash: SHA256Hash
    product_id: int
    revocation_level: int
    mode: EnclaveMode
    security: EnclaveSecurityInfo
    report_data: bytes
    """64 bytes the enclave chose: Sanctorum binds its keys there."""


class Attested:
    """The properties verified evidence backs, for the classes that hold it (an attestation,
    a quote): they set ``_claims``, ``_evidence_type`` and ``_evidence`` once verified."""

    __slots__ = ()
    _claims: EvidenceClaims
    _evidence_type: str
    _evidence: bytes

    @property
    def code_hash(self) -> SHA256Hash:
        """The measurement of the enclave's code (like SGX MRENCLAVE)."""
        return self._claims.code_hash

    @property
    def signer_hash(self) -> SHA256Hash:
        """SHA-256 of the enclave signer's public key (like SGX MRSIGNER)."""
        return self._claims.signer_hash

    @property
    def product_id(self) -> int:
        return self._claims.product_id

    @property
    def revocation_level(self) -> int:
        return self._claims.revocation_level

    @property
    def enclave_mode(self) -> EnclaveMode:
        return self._claims.mode

    @property
    def security_info(self) -> EnclaveSecurityInfo:
        return self._claims.security

    @property
    def evidence_type(self) -> str:
        return self._evidence_type

    @property
    def evidence(self) -> bytes:
        """The raw evidence these properties were derived from."""
        return self._evidence


class EvidenceProvider(Protocol):
    """The enclave platform's side: produces evidence over report data."""

    @property
    def evidence_type(self) -> str:
        """The type verifiers know this evidence by."""
        ...

    def produce(self, report_data: bytes) -> bytes:
        """Evidence bytes whose claims carry ``report_data``."""
        ...


EvidenceVerifier = Callable[[bytes, datetime | None], EvidenceClaims]
"""Checks evidence bytes at a time (None: now) and returns its claims."""
_VERIFIERS: dict[str, EvidenceVerifier] = {}


def register_verifier(evidence_type: str, verifier: EvidenceVerifier) -> None:
    """Make ``verifier`` the checker for evidence of ``evidence_type``."""
    _VERIFIERS[evidence_type] = verifier


def verify_evidence(
    evidence_type: str, evidence: bytes, at: datetime | None = None
) -> EvidenceClaims:
    """Check evidence of a known type at time ``at`` (default: now).

    Raises :class:`InvalidEnclaveError` if it does not verify.
    """
    verifier = _VERIFIERS.get(evidence_type)
    if verifier is None:
        known = ", ".join(sorted(_VERIFIERS)) or "none"
        raise InvalidEnclaveError(
            f"unknown attestation evidence type {evidence_type!r} (this library knows: {known}); "
            "the enclave may be newer than this client"
        )
    return verifier(evidence, at)
