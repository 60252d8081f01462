"""Shared types: keys, hashes, modes, security info and the error hierarchy.

Imports nothing else of Sanctorum, so every other package may depend on it.
"""

from sanctorum.common.errors import (
    BundleError,
    ClientStateError,
    EnclaveCallError,
    EnclaveCrashedError,
    EnclaveError,
    EnclaveLoadError,
    EnclaveStateError,
    FrameError,
    InvalidConstraintError,
    InvalidEnclaveError,
    InvalidKeyError,
    InvalidSignatureError,
    MailDecryptionError,
    MailError,
    MailFormatError,
    MailGapError,
    MailReplayError,
    MailSenderError,
    MailSequenceError,
    SanctorumError,
    TransportError,
)
from sanctorum.common.hashes import ZERO_HASH, SHA256Hash
from sanctorum.common.keys import (
    Curve25519PrivateKey,
    Curve25519PublicKey,
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sanctorum.common.mode import EnclaveMode, EnclaveSecurityInfo, SecuritySummary

__all__ = [
    "ZERO_HASH",
    "BundleError",
    "ClientStateError",
    "Curve25519PrivateKey",
    "Curve25519PublicKey",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "EnclaveCallError",
    "EnclaveCrashedError",
    "EnclaveError",
    "EnclaveLoadError",
    "EnclaveMode",
    "EnclaveSecurityInfo",
    "EnclaveStateError",
    "FrameError",
    "InvalidConstraintError",
    "InvalidEnclaveError",
    "InvalidKeyError",
    "InvalidSignatureError",
    "MailDecryptionError",
    "MailError",
    "MailFormatError",
    "MailGapError",
    "MailReplayError",
    "MailSenderError",
    "MailSequenceError",
    "SHA256Hash",
    "SanctorumError",
    "SecuritySummary",
    "TransportError",
]
