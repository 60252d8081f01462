"""Sealing keys: secrets that only this enclave identity, on this platform, can derive.

Derivation (documented in docs/persistence.md)::

    key = HKDF-SHA256(ikm = platform secret,
                      salt = "sanctorum-sealing-key-v2",
                      info = policy name || 0 || identity bytes || 0
                             || revocation level u16 || TCB level u16 || 0 || purpose)

where the identity bytes are the code hash (policy ``code-hash``: only this exact code) or the
signer hash followed by the product id (policy ``signer``: every version a signer releases of a
product, so data survives upgrades). The platform secret is the CPU's in SGX; in simulation a
per-machine secret file kept outside the project; in mock mode a fixed, public test secret.

The security versions play the part SGX's ISVSVN and CPUSVN play in ``EGETKEY``: an enclave can
derive the keys of its own versions and of any older ones, never of newer ones. So state sealed
before an upgrade opens after it, and state sealed after a security fix stays closed to the
versions the fix retired. Sealed blobs name, in their authenticated header, the versions whose
key sealed them.
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

_SALT = b"sanctorum-sealing-key-v2"
_MAGIC = b"SNSL"
_VERSION = 2
_HEADER = struct.Struct(">4sBHH")  # magic, format version, revocation level, TCB level
_NONCE_SIZE = 12


class SealingPolicy(enum.Enum):
    """Which part of the enclave's identity a sealing key is bound to."""

    CODE_HASH = "code-hash"
    """Only enclaves with exactly this code hash."""
    SIGNER = "signer"
    """Every enclave of this signer with this product id (survives upgrades)."""


@dataclass(frozen=True)
class SecurityVersions:
    """The versions a sealing key is derived for (SGX's ISVSVN and CPUSVN)."""

    revocation_level: int = 0
    """The enclave's revocation level (ISVSVN): raised by its signer when a release fixes a
    security flaw."""
    tcb_level: int = 0
    """The platform's TCB level (CPUSVN's part): raised by a TCB recovery. Mock mode models it;
    simulation and SGX have 0 here (SGX mixes the real CPUSVN into the CPU's own key)."""

    def __post_init__(self) -> None:
        for name in ("revocation_level", "tcb_level"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
                raise ValueError(f"{name} must be an integer from 0 to 65535, not {value!r}")

    def covers(self, other: SecurityVersions) -> bool:
        """Whether an enclave at these versions may derive keys of ``other`` (each no newer)."""
        return other.revocation_level <= self.revocation_level and other.tcb_level <= self.tcb_level

    def __str__(self) -> str:
        return f"revocation level {self.revocation_level}, TCB level {self.tcb_level}"


@dataclass(frozen=True)
class EnclaveIdentity:
    code_hash: SHA256Hash
    signer_hash: SHA256Hash
    product_id: int
    versions: SecurityVersions = SecurityVersions()
    """The enclave's current security versions: the newest whose keys it may derive."""

    def bytes_for(self, policy: SealingPolicy) -> bytes:
        if policy is SealingPolicy.CODE_HASH:
            return self.code_hash.digest
        return self.signer_hash.digest + struct.pack(">H", self.product_id)


def derive_sealing_key(
    platform_secret: bytes,
    identity: EnclaveIdentity,
    policy: SealingPolicy,
    purpose: bytes,
    versions: SecurityVersions | None = None,
) -> bytes:
    """A 32-byte key for ``purpose``, bound to the platform and to ``identity`` by ``policy``,
    for ``versions`` (default: the identity's own). Versions newer than the identity's are
    refused with :class:`SealedStateError`, as SGX refuses them."""
    if versions is None:
        versions = identity.versions
    elif not identity.versions.covers(versions):
        raise SealedStateError(
            f"a sealing key for {versions} was asked for, but this enclave is at "
            f"{identity.versions}: an enclave never derives the keys of newer versions, so data "
            "sealed after a security fix stays closed to the versions it retired"
        )
    info = b"\0".join(
        (
            policy.value.encode(),
            identity.bytes_for(policy),
            struct.pack(">HH", versions.revocation_level, versions.tcb_level),
            purpose,
        )
    )
    return HKDF(hashes.SHA256(), 32, _SALT, info).derive(platform_secret)


def seal(
    key: bytes, plaintext: bytes, context: bytes, versions: SecurityVersions = SecurityVersions()
) -> bytes:
    """AES-GCM with a random nonce; ``context`` is authenticated, not stored. The header names
    ``versions``, the security versions ``key`` was derived for."""
    nonce = secrets.token_bytes(_NONCE_SIZE)
    header = _HEADER.pack(_MAGIC, _VERSION, versions.revocation_level, versions.tcb_level)
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + context)


def sealed_versions(blob: bytes, what: str = "sealed state") -> SecurityVersions:
    """The security versions whose key sealed ``blob`` (as its header says: check it by
    opening the blob with that key)."""
    if len(blob) < _HEADER.size + _NONCE_SIZE + 16:
        raise SealedStateError(f"{what} is not a Sanctorum sealed blob (or is truncated)")
    magic, version, revocation_level, tcb_level = _HEADER.unpack_from(blob)
    if magic != _MAGIC:
        raise SealedStateError(f"{what} is not a Sanctorum sealed blob")
    if version != _VERSION:
        raise SealedStateError(
            f"{what} is a Sanctorum sealed blob of format {version}, not {_VERSION}: it was "
            "written by another version of Sanctorum, which this one cannot read; run the "
            "version that wrote it, or start afresh (for the web host: a new --state-dir)"
        )
    return SecurityVersions(revocation_level, tcb_level)


def unseal(key: bytes, blob: bytes, context: bytes, what: str = "sealed state") -> bytes:
    """Open :func:`seal`'s output; :class:`SealedStateError` if it is not ours or was altered."""
    sealed_versions(blob, what)
    header, nonce = blob[: _HEADER.size], blob[_HEADER.size : _HEADER.size + _NONCE_SIZE]
    try:
        return AESGCM(key).decrypt(nonce, blob[_HEADER.size + _NONCE_SIZE :], header + context)
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
        # Written whole under another name, then linked into place: a process starting at the
        # same moment finds either no file or all of it, never an empty one.
        secret = secrets.token_bytes(32)
        draft = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(secret)
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(draft, path)
            except FileExistsError:  # another process made it first
                secret = path.read_bytes()
        finally:
            draft.unlink()
    if len(secret) != 32:
        raise SealedStateError(f"the simulated platform secret {path} is damaged (not 32 bytes)")
    return secret
