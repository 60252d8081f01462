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

if TYPE_CHECKING:  # the names below are imported lazily by __getattr__
    from sanctorum.attestation import (
        AttestationQuote as AttestationQuote,
    )
    from sanctorum.attestation import (
        EnclaveConstraint as EnclaveConstraint,
    )
    from sanctorum.attestation import (
        EnclaveInstanceInfo as EnclaveInstanceInfo,
    )
    from sanctorum.attestation import (
        MockConfiguration as MockConfiguration,
    )
    from sanctorum.client import (
        AsyncEnclaveClient as AsyncEnclaveClient,
    )
    from sanctorum.client import (
        EnclaveClient as EnclaveClient,
    )
    from sanctorum.client import (
        InProcessTransport as InProcessTransport,
    )
    from sanctorum.client.web import (
        AsyncWebTransport as AsyncWebTransport,
    )
    from sanctorum.client.web import (
        WebTransport as WebTransport,
    )
    from sanctorum.common import (
        Curve25519PrivateKey as Curve25519PrivateKey,
    )
    from sanctorum.common import (
        Curve25519PublicKey as Curve25519PublicKey,
    )
    from sanctorum.common import (
        EnclaveMode as EnclaveMode,
    )
    from sanctorum.common import (
        EnclaveSecurityInfo as EnclaveSecurityInfo,
    )
    from sanctorum.common import (
        SecuritySummary as SecuritySummary,
    )
    from sanctorum.common import (
        SHA256Hash as SHA256Hash,
    )
    from sanctorum.common.errors import (
        BundleError as BundleError,
    )
    from sanctorum.common.errors import (
        ClientStateError as ClientStateError,
    )
    from sanctorum.common.errors import (
        DependencyMismatchError as DependencyMismatchError,
    )
    from sanctorum.common.errors import (
        EnclaveCallError as EnclaveCallError,
    )
    from sanctorum.common.errors import (
        EnclaveCrashedError as EnclaveCrashedError,
    )
    from sanctorum.common.errors import (
        EnclaveError as EnclaveError,
    )
    from sanctorum.common.errors import (
        EnclaveLoadError as EnclaveLoadError,
    )
    from sanctorum.common.errors import (
        EnclaveRollbackError as EnclaveRollbackError,
    )
    from sanctorum.common.errors import (
        EnclaveStateError as EnclaveStateError,
    )
    from sanctorum.common.errors import (
        FileSystemRollbackError as FileSystemRollbackError,
    )
    from sanctorum.common.errors import (
        FrameError as FrameError,
    )
    from sanctorum.common.errors import (
        InvalidConstraintError as InvalidConstraintError,
    )
    from sanctorum.common.errors import (
        InvalidEnclaveError as InvalidEnclaveError,
    )
    from sanctorum.common.errors import (
        InvalidKeyError as InvalidKeyError,
    )
    from sanctorum.common.errors import (
        InvalidSignatureError as InvalidSignatureError,
    )
    from sanctorum.common.errors import (
        KdsError as KdsError,
    )
    from sanctorum.common.errors import (
        KdsKeyRequiredError as KdsKeyRequiredError,
    )
    from sanctorum.common.errors import (
        KeySpecError as KeySpecError,
    )
    from sanctorum.common.errors import (
        LeaseLostError as LeaseLostError,
    )
    from sanctorum.common.errors import (
        MailDecryptionError as MailDecryptionError,
    )
    from sanctorum.common.errors import (
        MailError as MailError,
    )
    from sanctorum.common.errors import (
        MailFormatError as MailFormatError,
    )
    from sanctorum.common.errors import (
        MailGapError as MailGapError,
    )
    from sanctorum.common.errors import (
        MailPendingError as MailPendingError,
    )
    from sanctorum.common.errors import (
        MailRefusedError as MailRefusedError,
    )
    from sanctorum.common.errors import (
        MailReplayError as MailReplayError,
    )
    from sanctorum.common.errors import (
        MailSenderError as MailSenderError,
    )
    from sanctorum.common.errors import (
        MailSequenceError as MailSequenceError,
    )
    from sanctorum.common.errors import (
        MailTooLargeError as MailTooLargeError,
    )
    from sanctorum.common.errors import (
        NewerSealedStateError as NewerSealedStateError,
    )
    from sanctorum.common.errors import (
        PersistentMapFullError as PersistentMapFullError,
    )
    from sanctorum.common.errors import (
        ProjectInitError as ProjectInitError,
    )
    from sanctorum.common.errors import (
        SanctorumError as SanctorumError,
    )
    from sanctorum.common.errors import (
        SealedStateError as SealedStateError,
    )
    from sanctorum.common.errors import (
        SealedStateJournalError as SealedStateJournalError,
    )
    from sanctorum.common.errors import (
        StateDirInUseError as StateDirInUseError,
    )
    from sanctorum.common.errors import (
        TransportError as TransportError,
    )
    from sanctorum.common.errors import (
        UnattestedSenderError as UnattestedSenderError,
    )
    from sanctorum.enclave import (
        Enclave as Enclave,
    )
    from sanctorum.host import (
        EnclaveHost as EnclaveHost,
    )
    from sanctorum.mail import (
        EnclaveMail as EnclaveMail,
    )
    from sanctorum.mail import (
        MinSizePolicy as MinSizePolicy,
    )
    from sanctorum.mail import (
        PostOffice as PostOffice,
    )

_EXPORTS = {
    "Enclave": "sanctorum.enclave",
    "EnclaveHost": "sanctorum.host",
    "MockConfiguration": "sanctorum.attestation",
    "EnclaveClient": "sanctorum.client",
    "AsyncEnclaveClient": "sanctorum.client",
    "InProcessTransport": "sanctorum.client",
    "WebTransport": "sanctorum.client.web",
    "AsyncWebTransport": "sanctorum.client.web",
    "EnclaveConstraint": "sanctorum.attestation",
    "EnclaveInstanceInfo": "sanctorum.attestation",
    "AttestationQuote": "sanctorum.attestation",
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
            "MailRefusedError",
            "MailTooLargeError",
            "UnattestedSenderError",
            "StateDirInUseError",
            "LeaseLostError",
            "MailPendingError",
            "BundleError",
            "DependencyMismatchError",
            "EnclaveRollbackError",
            "PersistentMapFullError",
            "ProjectInitError",
            "KdsError",
            "KdsKeyRequiredError",
            "KeySpecError",
            "SealedStateError",
            "FileSystemRollbackError",
            "NewerSealedStateError",
            "SealedStateJournalError",
            "EnclaveCrashedError",
            "FrameError",
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
