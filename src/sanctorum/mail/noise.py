"""The one-way Noise pattern X (``-> e, es, s, ss`` with the responder's static key known).

Sans-IO and written on `cryptography` primitives, following the Noise specification
revision 34 (noiseprotocol.org/noise.html). Sanctorum's Mail uses ``Noise_X_25519_AESGCM_SHA256``;
the other suites exist so the implementation is checked against every published ``Noise_X``
vector. The handshake runs in two straight-line functions rather than a general pattern engine:
X is the only pattern Mail needs, and this keeps sealing and opening close to the cost of the
raw X25519 and AES-GCM operations (see ``bench/``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from sanctorum.common.errors import MailDecryptionError

DH_LEN = 32
TAG_LEN = 16
MAX_MESSAGE_LEN = 65535
"""Noise caps every message at 65535 bytes; Mail chunks its body to stay within it."""

HANDSHAKE_OVERHEAD = DH_LEN + (DH_LEN + TAG_LEN) + TAG_LEN
"""Bytes the X handshake message adds around its payload: e, encrypted s, payload tag."""

_MAX_NONCE = 2**64 - 1  # reserved by the spec: a CipherState may not use it

_AEADS: dict[str, Callable[[bytes], AESGCM | ChaCha20Poly1305]] = {
    "AESGCM": AESGCM,
    "ChaChaPoly": ChaCha20Poly1305,
}
_NONCE_FORMATS = {
    "AESGCM": struct.Struct(">4xQ"),  # 32 zero bits, then the counter big-endian
    "ChaChaPoly": struct.Struct("<4xQ"),  # 32 zero bits, then the counter little-endian
}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256,
    "SHA512": hashes.SHA512,
    "BLAKE2s": lambda: hashes.BLAKE2s(32),
    "BLAKE2b": lambda: hashes.BLAKE2b(64),
}


@dataclass(frozen=True)
class NoiseSuite:
    """A ``Noise_X_25519_<cipher>_<hash>`` protocol."""

    cipher: str
    hash: str

    def __post_init__(self) -> None:
        if self.cipher not in _AEADS or self.hash not in _HASHES:
            raise ValueError(f"unsupported Noise suite {self.name}")

    @property
    def name(self) -> str:
        return f"Noise_X_25519_{self.cipher}_{self.hash}"

    @classmethod
    def from_name(cls, name: str) -> NoiseSuite:
        parts = name.split("_")
        if len(parts) != 5 or parts[:3] != ["Noise", "X", "25519"]:
            raise ValueError(f"not a Noise_X_25519 protocol name: {name!r}")
        return cls(parts[3], parts[4])


NOISE_X_AESGCM_SHA256 = NoiseSuite("AESGCM", "SHA256")


class CipherState:
    """A Noise CipherState with a key: AEAD encryption with a counting nonce."""

    __slots__ = ("_aead", "_nonce", "n")

    def __init__(self, suite: NoiseSuite, key: bytes) -> None:
        self._aead = _AEADS[suite.cipher](key)
        self._nonce = _NONCE_FORMATS[suite.cipher].pack
        self.n = 0

    def _next_nonce(self) -> bytes:
        if self.n >= _MAX_NONCE:
            raise MailDecryptionError("Noise nonce space exhausted")
        nonce = self._nonce(self.n)
        self.n += 1
        return nonce

    def encrypt(self, associated_data: bytes, plaintext: bytes) -> bytes:
        """EncryptWithAd: ciphertext followed by its 16-byte tag."""
        return self._aead.encrypt(self._next_nonce(), plaintext, associated_data)

    def encrypt_into(self, associated_data: bytes, plaintext: bytes, out: memoryview) -> None:
        """EncryptWithAd into ``out``, which must be ``len(plaintext) + 16`` bytes long."""
        self._aead.encrypt_into(self._next_nonce(), plaintext, associated_data, out)

    def decrypt_into(self, associated_data: bytes, ciphertext: bytes, out: memoryview) -> None:
        """DecryptWithAd into ``out``, which must be ``len(ciphertext) - 16`` bytes long."""
        try:
            self._aead.decrypt_into(self._nonce(self.n), ciphertext, associated_data, out)
        except InvalidTag:
            raise MailDecryptionError(
                "authentication failed: the data was altered, or sealed for another key"
            ) from None
        self.n += 1

    def decrypt(self, associated_data: bytes, ciphertext: bytes) -> bytes:
        """DecryptWithAd; :class:`MailDecryptionError` if the tag does not verify.

        The nonce advances only on success, as the specification requires.
        """
        nonce = self._nonce(self.n)
        try:
            plaintext = self._aead.decrypt(nonce, ciphertext, associated_data)
        except InvalidTag:
            raise MailDecryptionError(
                "authentication failed: the data was altered, or sealed for another key"
            ) from None
        self.n += 1
        return plaintext


class _SymmetricState:
    """The handshake's chaining key, handshake hash and current cipher."""

    __slots__ = ("_algorithm", "_hash_len", "_suite", "cipher", "ck", "h")

    def __init__(self, suite: NoiseSuite, prologue: bytes) -> None:
        self._suite = suite
        self._algorithm = _HASHES[suite.hash]()
        self._hash_len = self._algorithm.digest_size
        name = suite.name.encode("ascii")
        if len(name) <= self._hash_len:
            self.h = name.ljust(self._hash_len, b"\0")
        else:
            self.h = self._hash(name)
        self.ck = self.h
        self.cipher: CipherState | None = None
        self.mix_hash(prologue)

    def _hash(self, data: bytes) -> bytes:
        digest = hashes.Hash(self._algorithm)
        digest.update(data)
        return digest.finalize()

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        mac = hmac.HMAC(key, self._algorithm)
        mac.update(data)
        return mac.finalize()

    def hkdf2(self, input_key_material: bytes) -> tuple[bytes, bytes]:
        """HKDF(ck, ikm) with two outputs, as the Noise specification defines it on HMAC."""
        temp_key = self._hmac(self.ck, input_key_material)
        first = self._hmac(temp_key, b"\x01")
        return first, self._hmac(temp_key, first + b"\x02")

    def mix_hash(self, data: bytes) -> None:
        self.h = self._hash(self.h + data)

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, temp_key = self.hkdf2(input_key_material)
        self.cipher = CipherState(self._suite, temp_key[:32])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        assert self.cipher is not None  # X always mixes a key before it encrypts
        ciphertext = self.cipher.encrypt(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        assert self.cipher is not None
        plaintext = self.cipher.decrypt(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split_first(self) -> CipherState:
        """Split(), keeping only the initiator→responder cipher: X is one-way."""
        temp_key, _ = self.hkdf2(b"")
        return CipherState(self._suite, temp_key[:32])


def _dh(private: x25519.X25519PrivateKey, public: x25519.X25519PublicKey) -> bytes:
    try:
        return private.exchange(public)
    except ValueError:  # a low-order point gives an all-zero secret; refuse it
        raise MailDecryptionError("the peer's key is not a usable X25519 public key") from None


@dataclass(frozen=True)
class InitiatorResult:
    message: bytes
    """The handshake message: e, encrypted s, encrypted payload."""
    cipher: CipherState
    """The cipher for the transport messages that follow."""
    handshake_hash: bytes


@dataclass(frozen=True)
class ResponderResult:
    remote_static: bytes
    """The initiator's static public key, authenticated by the handshake."""
    payload: bytes
    cipher: CipherState
    """The cipher that opens the transport messages that follow."""
    handshake_hash: bytes


def write_handshake(
    suite: NoiseSuite,
    prologue: bytes,
    static: x25519.X25519PrivateKey,
    remote_static: x25519.X25519PublicKey,
    payload: bytes,
    ephemeral: x25519.X25519PrivateKey | None = None,
) -> InitiatorResult:
    """Build the initiator's single handshake message to ``remote_static``.

    ``ephemeral`` is for test vectors only; normally a fresh key is generated.
    """
    state = _SymmetricState(suite, prologue)
    state.mix_hash(remote_static.public_bytes_raw())  # pre-message: <- s
    if ephemeral is None:
        ephemeral = x25519.X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    state.mix_hash(ephemeral_public)  # e
    state.mix_key(_dh(ephemeral, remote_static))  # es
    encrypted_static = state.encrypt_and_hash(static.public_key().public_bytes_raw())  # s
    state.mix_key(_dh(static, remote_static))  # ss
    encrypted_payload = state.encrypt_and_hash(payload)
    return InitiatorResult(
        ephemeral_public + encrypted_static + encrypted_payload,
        state.split_first(),
        state.h,
    )


def read_handshake(
    suite: NoiseSuite,
    prologue: bytes,
    static: x25519.X25519PrivateKey,
    message: bytes,
) -> ResponderResult:
    """Process the initiator's handshake message with our static key.

    Raises :class:`MailDecryptionError` if it was not made for this key or was altered.
    """
    if len(message) < HANDSHAKE_OVERHEAD:
        raise MailDecryptionError("the Noise handshake message is truncated")
    state = _SymmetricState(suite, prologue)
    state.mix_hash(static.public_key().public_bytes_raw())  # pre-message: <- s
    ephemeral_public = message[:DH_LEN]
    state.mix_hash(ephemeral_public)  # e
    state.mix_key(_dh(static, x25519.X25519PublicKey.from_public_bytes(ephemeral_public)))  # es
    remote_static = state.decrypt_and_hash(message[DH_LEN : 2 * DH_LEN + TAG_LEN])  # s
    remote_key = x25519.X25519PublicKey.from_public_bytes(remote_static)
    state.mix_key(_dh(static, remote_key))  # ss
    payload = state.decrypt_and_hash(message[2 * DH_LEN + TAG_LEN :])
    return ResponderResult(remote_static, payload, state.split_first(), state.h)
