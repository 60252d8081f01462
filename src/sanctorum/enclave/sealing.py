"""Sealing keys: secrets that only this enclave identity, on this platform, can derive.

Derivation (documented in docs/persistence.md)::

    key = HKDF-SHA256(ikm = platform secret,
                      salt = "sanctorum-sealing-key-v1",
                      info = policy name || identity bytes || purpose)

where the identity bytes are the code hash (policy ``code-hash``: only this exact code) or the
signer hash followed by the product id (policy ``signer``: every version a signer releases of a
product, so data survives upgrades). The platform secret is the CPU's in SGX; in simulation a
per-machine secret file kept outside the project; in mock mode a fixed, public test secret.
"""

from __future__ import annotations

import enum
import hashlib
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sanctorum.common.errors import SealedStateError
from sanctorum.common.hashes import SHA256Hash

SIMULATION_SECRET_ENV = "SANCTORUM_SIMULATION_SECRET_FILE"  # noqa: S105  (a variable name)
MOCK_PLATFORM_SECRET = hashlib.sha256(b"sanctorum mock platform secret").digest()
"""Public: mock mode protects nothing, and tests need the same keys on every run."""

_SALT = b"sanctorum-sealing-key-v1"
_MAGIC = b"SNSL"
_VERSION = 1
_NONCE_SIZE = 12


class SealingPolicy(enum.Enum):
    """Which part of the enclave's identity a sealing key is bound to."""

    CODE_HASH = "code-hash"
    """Only enclaves with exactly this code hash."""
    SIGNER = "signer"
    """Every enclave of this signer with this product id (survives upgrades)."""


@dataclass(frozen=True)
class EnclaveIdentity:
    code_hash: SHA256Hash
    signer_hash: SHA256Hash
    product_id: int

    def bytes_for(self, policy: SealingPolicy) -> bytes:
        if policy is SealingPolicy.CODE_HASH:
            return self.code_hash.digest
        return self.signer_hash.digest + struct.pack(">H", self.product_id)


def derive_sealing_key(
    platform_secret: bytes, identity: EnclaveIdentity, policy: SealingPolicy, purpose: bytes
) -> bytes:
    """A 32-byte key for ``purpose``, bound to the platform and to ``identity`` by ``policy``."""
    info = policy.value.encode() + b"\0" + identity.bytes_for(policy) + b"\0" + purpose
    return HKDF(hashes.SHA256(), 32, _SALT, info).derive(platform_secret)


def seal(key: bytes, plaintext: bytes, context: bytes) -> bytes:
    """AES-GCM with a random nonce; ``context`` is authenticated, not stored."""
    nonce = secrets.token_bytes(_NONCE_SIZE)
    header = _MAGIC + bytes([_VERSION])
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + context)


def unseal(key: bytes, blob: bytes, context: bytes, what: str = "sealed state") -> bytes:
    """Open :func:`seal`'s output; :class:`SealedStateError` if it is not ours or was altered."""
    header = _MAGIC + bytes([_VERSION])
    if len(blob) < len(header) + _NONCE_SIZE + 16 or blob[: len(header)] != header:
        raise SealedStateError(f"{what} is not a Sanctorum sealed blob (or is truncated)")
    nonce = blob[len(header) : len(header) + _NONCE_SIZE]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(header) + _NONCE_SIZE :], header + context)
    except InvalidTag:
        raise SealedStateError(
            f"{what} does not open: it was sealed by another enclave identity or on another "
            "platform, or it was altered; refusing to start rather than lose or forge state"
        ) from None


def simulation_platform_secret(path: Path | None = None) -> bytes:
    """This machine's simulated platform secret, created on first use.

    Kept outside any project (``$XDG_DATA_HOME/sanctorum`` or ``~/.local/share/sanctorum``);
    ``$SANCTORUM_SIMULATION_SECRET_FILE`` or ``path`` names another file (tests use this to play
    several machines).
    """
    if path is None:
        override = os.environ.get(SIMULATION_SECRET_ENV)
        if override:
            path = Path(override)
        else:
            base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
            path = Path(base) / "sanctorum" / "simulation-platform-secret"
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            secret = path.read_bytes()
        else:
            secret = secrets.token_bytes(32)
            with os.fdopen(descriptor, "wb") as file:
                file.write(secret)
    if len(secret) != 32:
        raise SealedStateError(f"the simulated platform secret {path} is damaged (not 32 bytes)")
    return secret
