"""Attestation: evidence, its verification, EnclaveInstanceInfo and EnclaveConstraint.

Names are imported lazily, so the enclave process, which only makes evidence, does not load
what verifies it or parses constraints.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below are imported lazily by __getattr__
    from sanctorum.attestation.constraint import EnclaveConstraint as EnclaveConstraint
    from sanctorum.attestation.evidence import EvidenceClaims as EvidenceClaims
    from sanctorum.attestation.evidence import EvidenceProvider as EvidenceProvider
    from sanctorum.attestation.evidence import verify_evidence as verify_evidence
    from sanctorum.attestation.instance_info import EnclaveInstanceInfo as EnclaveInstanceInfo
    from sanctorum.attestation.instance_info import key_binding as key_binding
    from sanctorum.attestation.mock import MockConfiguration as MockConfiguration
    from sanctorum.attestation.mock import MockEvidenceProvider as MockEvidenceProvider
    from sanctorum.attestation.quote import AttestationQuote as AttestationQuote

_EXPORTS = {
    "AttestationQuote": "sanctorum.attestation.quote",
    "EnclaveConstraint": "sanctorum.attestation.constraint",
    "EnclaveInstanceInfo": "sanctorum.attestation.instance_info",
    "EvidenceClaims": "sanctorum.attestation.evidence",
    "EvidenceProvider": "sanctorum.attestation.evidence",
    "MockConfiguration": "sanctorum.attestation.mock",
    "MockEvidenceProvider": "sanctorum.attestation.mock",
    "key_binding": "sanctorum.attestation.instance_info",
    "verify_evidence": "sanctorum.attestation.evidence",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sanctorum.attestation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
