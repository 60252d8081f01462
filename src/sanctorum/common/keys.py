"""Key types: Curve25519 (X25519) for Mail encryption, Ed25519 for data signing.

Thin, hashable wrappers around `cryptography`'s key objects that encode to and from raw bytes,
so keys can be dictionary keys, compared, and carried in wire formats.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from sanctorum.common.errors import InvalidKeyError, InvalidSignatureError

KEY_SIZE = 32


def _check_size(kind: str, raw: bytes) -> bytes:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise InvalidKeyError(f"{kind} must be bytes, not {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) != KEY_SIZE:
        raise InvalidKeyError(f"{kind} is {KEY_SIZE} raw bytes, got {len(raw)}")
    return raw


class _RawKey:
    """Equality, hashing and repr by raw encoding."""

    __slots__ = ("_raw",)
    _raw: bytes

    @property
    def encoded(self) -> bytes:
        """The 32 raw key bytes."""
        return self._raw

    def __bytes__(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and isinstance(other, _RawKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._raw))


class Curve25519PublicKey(_RawKey):
    """A public X25519 key: the destination of Mail, or its authenticated sender."""

    __slots__ = ("_key",)

    def __init__(self, raw: bytes) -> None:
        self._raw = _check_size("a Curve25519 public key", raw)
        self._key: x25519.X25519PublicKey | None = None  # made when first needed

    @property
    def crypto_key(self) -> x25519.X25519PublicKey:
        """The `cryptography` key object."""
        if self._key is None:
            self._key = x25519.X25519PublicKey.from_public_bytes(self._raw)
        return self._key

    def __repr__(self) -> str:
        return f"Curve25519PublicKey({self._raw.hex()})"


class Curve25519PrivateKey(_RawKey):
    """A private X25519 key. Its repr never shows the secret."""

    __slots__ = ("__weakref__", "_key", "_public")

    def __init__(self, raw: bytes) -> None:
        self._raw = _check_size("a Curve25519 private key", raw)
        self._key = x25519.X25519PrivateKey.from_private_bytes(self._raw)
        self._public = Curve25519PublicKey(self._key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> Curve25519PrivateKey:
        """A fresh random key."""
        return cls(x25519.X25519PrivateKey.generate().private_bytes_raw())

    @property
    def public_key(self) -> Curve25519PublicKey:
        """The matching public key."""
        return self._public

    @property
    def crypto_key(self) -> x25519.X25519PrivateKey:
        """The `cryptography` key object."""
        return self._key

    def __repr__(self) -> str:
        return f"Curve25519PrivateKey(public={self._public.encoded.hex()})"


class Ed25519PublicKey(_RawKey):
    """A public Ed25519 key: the enclave's data signing key, as a client sees it."""

    __slots__ = ("_key",)

    def __init__(self, raw: bytes) -> None:
        self._raw = _check_size("an Ed25519 public key", raw)
        try:
            self._key = ed25519.Ed25519PublicKey.from_public_bytes(self._raw)
        except ValueError as error:
            raise InvalidKeyError(f"not a valid Ed25519 public key: {error}") from None

    def verify(self, signature: bytes, data: bytes) -> None:
        """Check ``signature`` over ``data``; raise :class:`InvalidSignatureError` if it fails."""
        try:
            self._key.verify(bytes(signature), bytes(data))
        except InvalidSignature:
            raise InvalidSignatureError(
                "the signature does not verify under this Ed25519 key: the data or the "
                "signature was altered, or another key signed it"
            ) from None

    def __repr__(self) -> str:
        return f"Ed25519PublicKey({self._raw.hex()})"


class Ed25519PrivateKey(_RawKey):
    """A private Ed25519 key. Its repr never shows the secret."""

    __slots__ = ("_key", "_public")

    def __init__(self, raw: bytes) -> None:
        self._raw = _check_size("an Ed25519 private key", raw)
        self._key = ed25519.Ed25519PrivateKey.from_private_bytes(self._raw)
        self._public = Ed25519PublicKey(self._key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> Ed25519PrivateKey:
        """A fresh random key."""
        return cls(ed25519.Ed25519PrivateKey.generate().private_bytes_raw())

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The matching public key."""
        return self._public

    def sign(self, data: bytes) -> bytes:
        """A 64-byte Ed25519 signature over ``data``."""
        return self._key.sign(bytes(data))

    def __repr__(self) -> str:
        return f"Ed25519PrivateKey(public={self._public.encoded.hex()})"
