"""Sanctorum: build enclaves in Python.

The safe, everyday API is here::

    from sanctorum import Enclave, EnclaveHost, EnclaveClient, EnclaveConstraint

Names are imported lazily, so a client that never touches the host does not load its code.
Sharper tools (the Noise layer, the wire formats, the runtime) live in the role packages:
``sanctorum.mail``, ``sanctorum.attestation``, ``sanctorum.enclave``, ``sanctorum.host``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sanctorum._version import __version__

if TYPE_CHECKING:
    from sanctorum.attestation import EnclaveConstraint, EnclaveInstanceInfo, MockConfiguration
    from sanctorum.client import EnclaveClient, InProcessTransport
    from sanctorum.common import (
        Curve25519PrivateKey,
        Curve25519PublicKey,
        EnclaveMode,
        EnclaveSecurityInfo,
        SecuritySummary,
        SHA256Hash,
    )
    from sanctorum.common.errors import *  # noqa: F403
    from sanctorum.enclave import Enclave
    from sanctorum.host import EnclaveHost
    from sanctorum.mail import EnclaveMail, MinSizePolicy, PostOffice

_EXPORTS = {
    "Enclave": "sanctorum.enclave",
    "EnclaveHost": "sanctorum.host",
    "MockConfiguration": "sanctorum.attestation",
    "EnclaveClient": "sanctorum.client",
    "InProcessTransport": "sanctorum.client",
    "EnclaveConstraint": "sanctorum.attestation",
    "EnclaveInstanceInfo": "sanctorum.attestation",
    "EnclaveMail": "sanctorum.mail",
    "MinSizePolicy": "sanctorum.mail",
    "PostOffice": "sanctorum.mail",
    "Curve25519PrivateKey": "sanctorum.common",
    "Curve25519PublicKey": "sanctorum.common",
    "EnclaveMode": "sanctorum.common",
    "EnclaveSecurityInfo": "sanctorum.common",
    "SecuritySummary": "sanctorum.common",
    "SHA256Hash": "sanctorum.common",
    **dict.fromkeys(
        [
            "SanctorumError",
            "InvalidEnclaveError",
            "InvalidConstraintError",
            "InvalidSignatureError",
            "InvalidKeyError",
            "MailError",
            "MailFormatError",
            "MailDecryptionError",
            "MailSenderError",
            "MailSequenceError",
            "MailReplayError",
            "MailGapError",
            "EnclaveError",
            "EnclaveLoadError",
            "EnclaveStateError",
            "EnclaveCallError",
            "ClientStateError",
            "TransportError",
        ],
        "sanctorum.common.errors",
    ),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sanctorum' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
