"""Attestation: evidence, its verification, EnclaveInstanceInfo and EnclaveConstraint."""

from sanctorum.attestation.constraint import EnclaveConstraint
from sanctorum.attestation.evidence import EvidenceClaims, EvidenceProvider, verify_evidence
from sanctorum.attestation.instance_info import EnclaveInstanceInfo, key_binding
from sanctorum.attestation.mock import MockConfiguration, MockEvidenceProvider

__all__ = [
    "EnclaveConstraint",
    "EnclaveInstanceInfo",
    "EvidenceClaims",
    "EvidenceProvider",
    "MockConfiguration",
    "MockEvidenceProvider",
    "key_binding",
    "verify_evidence",
]
