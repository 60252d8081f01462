"""The one-way Noise pattern X (``-> e, es, s, ss`` with the responder's static key known).

Sans-IO and written on `cryptography` primitives, following the Noise specification
revision 34 (noiseprotocol.org/noise.html). Sanctorum's Mail uses ``Noise_X_25519_AESGCM_SHA256``;
the other suites exist so the implementation is checked against every published ``Noise_X``
vector. The handshake runs in two straight-line functions rather than a general pattern engine:
X is the only pattern Mail needs, and this keeps sealing and opening close to the cost of the
raw X25519 and AES-GCM operations (see ``bench/``).
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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
# HKDF comes from `cryptography`: Noise's HKDF(ck, ikm) is RFC 5869 HKDF with salt=ck and empty
# info. Hashing uses hashlib's one-shot constructors: for the short inputs of a handshake they are
# three times faster than a `cryptography` Hash object (see docs/decisions.md).
_HASHES: dict[str, tuple[Callable[[bytes], Any], hashes.HashAlgorithm]] = {
    "SHA256": (hashlib.sha256, hashes.SHA256()),
    "SHA512": (hashlib.sha512, hashes.SHA512()),
    "BLAKE2s": (hashlib.blake2s, hashes.BLAKE2s(32)),
    "BLAKE2b": (hashlib.blake2b, hashes.BLAKE2b(64)),
}
KEY_LEN = 32


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

    def encrypt_into(
        self, associated_data: bytes, plaintext: bytes | memoryview, out: memoryview
    ) -> None:
        """EncryptWithAd into ``out``, which must be ``len(plaintext) + 16`` bytes long."""
        self._aead.encrypt_into(self._next_nonce(), plaintext, associated_data, out)

    def decrypt_into(
        self, associated_data: bytes, ciphertext: bytes | memoryview, out: memoryview
    ) -> None:
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


def _dh(private: x25519.X25519PrivateKey, public: x25519.X25519PublicKey) -> bytes:
    try:
        return private.exchange(public)
    except ValueError:  # a low-order point gives an all-zero secret; refuse it
        raise MailDecryptionError("the peer's key is not a usable X25519 public key") from None


class StaticSecretCache:
    """Remembers DH(s, rs) for one static key ``s``, per remote static key ``rs``.

    The static-static term of Noise X is the same for every message between the same two
    parties; computing it once per pair instead of once per mail saves one of the two or three
    X25519 operations a mail costs. Bounded, since remote keys may be chosen by an attacker.
    Thread-safe (dict operations are atomic; a race only computes a secret twice).
    """

    def __init__(self, static: x25519.X25519PrivateKey, max_entries: int = 4096) -> None:
        self._static = static
        self.public_key = static.public_key().public_bytes_raw()
        self._max_entries = max_entries
        self._secrets: OrderedDict[bytes, bytes] = OrderedDict()

    @property
    def static(self) -> x25519.X25519PrivateKey:
        return self._static

    def shared_secret(
        self, remote: bytes, remote_key: x25519.X25519PublicKey | None = None
    ) -> bytes:
        secret = self._secrets.get(remote)
        if secret is None:
            if remote_key is None:
                remote_key = x25519.X25519PublicKey.from_public_bytes(remote)
            secret = _dh(self._static, remote_key)
            self._secrets[remote] = secret
            while len(self._secrets) > self._max_entries:
                self._secrets.popitem(last=False)
        return secret


class InitiatorResult(NamedTuple):
    message: bytes
    """The handshake message: e, encrypted s, encrypted payload."""
    cipher: CipherState
    """The cipher for the transport messages that follow."""
    handshake_hash: bytes


class ResponderResult(NamedTuple):
    remote_static: bytes
    """The initiator's static public key, authenticated by the handshake."""
    payload: bytes
    cipher: CipherState
    """The cipher that opens the transport messages that follow."""
    handshake_hash: bytes


# The two handshake functions below are the Noise X message pattern written out token by
# token, with the SymmetricState (h, ck and the current key k) in local variables. A class with
# a method per operation reads the same but costs a third more time per mail (bench/).


@functools.cache
def _initial_hash(suite: NoiseSuite, hash_len: int) -> bytes:
    name = suite.name.encode("ascii")
    return (
        name.ljust(hash_len, b"\0")
        if len(name) <= hash_len
        else _HASHES[suite.hash][0](name).digest()
    )


def write_handshake(
    suite: NoiseSuite,
    prologue: bytes,
    static: x25519.X25519PrivateKey | StaticSecretCache,
    remote_static: x25519.X25519PublicKey,
    payload: bytes,
    ephemeral: x25519.X25519PrivateKey | None = None,
) -> InitiatorResult:
    """Build the initiator's single handshake message to ``remote_static``.

    ``static`` may be a :class:`StaticSecretCache` of the static key, to reuse the ss term.
    ``ephemeral`` is for test vectors only; normally a fresh key is generated.
    """
    cache = static if isinstance(static, StaticSecretCache) else StaticSecretCache(static, 0)
    static = cache.static
    hash_function, algorithm = _HASHES[suite.hash]
    hash_len = algorithm.digest_size
    ck = _initial_hash(suite, hash_len)
    h = hash_function(ck + prologue).digest()  # MixHash(prologue)
    h = hash_function(h + remote_static.public_bytes_raw()).digest()  # pre-message: <- s
    if ephemeral is None:
        ephemeral = x25519.X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    h = hash_function(h + ephemeral_public).digest()  # e
    keys = HKDF(algorithm, hash_len + KEY_LEN, ck, b"").derive(_dh(ephemeral, remote_static))
    ck, cipher = keys[:hash_len], CipherState(suite, keys[hash_len:])  # es: MixKey
    encrypted_static = cipher.encrypt(h, cache.public_key)  # s
    h = hash_function(h + encrypted_static).digest()
    ss = cache.shared_secret(remote_static.public_bytes_raw(), remote_static)
    keys = HKDF(algorithm, hash_len + KEY_LEN, ck, b"").derive(ss)
    ck, cipher = keys[:hash_len], CipherState(suite, keys[hash_len:])  # ss: MixKey
    encrypted_payload = cipher.encrypt(h, payload)
    h = hash_function(h + encrypted_payload).digest()
    transport = CipherState(suite, HKDF(algorithm, KEY_LEN, ck, b"").derive(b""))  # Split()
    return InitiatorResult(ephemeral_public + encrypted_static + encrypted_payload, transport, h)


def read_handshake(
    suite: NoiseSuite,
    prologue: bytes,
    static: x25519.X25519PrivateKey | StaticSecretCache,
    message: bytes,
) -> ResponderResult:
    """Process the initiator's handshake message with our static key.

    ``static`` may be a :class:`StaticSecretCache` of the static key, to reuse the ss term.
    Raises :class:`MailDecryptionError` if it was not made for this key or was altered.
    """
    cache = static if isinstance(static, StaticSecretCache) else StaticSecretCache(static, 0)
    static = cache.static
    if len(message) < HANDSHAKE_OVERHEAD:
        raise MailDecryptionError("the Noise handshake message is truncated")
    hash_function, algorithm = _HASHES[suite.hash]
    hash_len = algorithm.digest_size
    ck = _initial_hash(suite, hash_len)
    h = hash_function(ck + prologue).digest()  # MixHash(prologue)
    h = hash_function(h + cache.public_key).digest()  # pre-message: <- s
    ephemeral_public = message[:DH_LEN]
    h = hash_function(h + ephemeral_public).digest()  # e
    ephemeral_key = x25519.X25519PublicKey.from_public_bytes(ephemeral_public)
    keys = HKDF(algorithm, hash_len + KEY_LEN, ck, b"").derive(_dh(static, ephemeral_key))
    ck, cipher = keys[:hash_len], CipherState(suite, keys[hash_len:])  # es: MixKey
    encrypted_static = message[DH_LEN : 2 * DH_LEN + TAG_LEN]
    remote_static = cipher.decrypt(h, encrypted_static)  # s
    h = hash_function(h + encrypted_static).digest()
    keys = HKDF(algorithm, hash_len + KEY_LEN, ck, b"").derive(cache.shared_secret(remote_static))
    ck, cipher = keys[:hash_len], CipherState(suite, keys[hash_len:])  # ss: MixKey
    encrypted_payload = message[2 * DH_LEN + TAG_LEN :]
    payload = cipher.decrypt(h, encrypted_payload)
    h = hash_function(h + encrypted_payload).digest()
    transport = CipherState(suite, HKDF(algorithm, KEY_LEN, ck, b"").derive(b""))  # Split()
    return ResponderResult(remote_static, payload, transport, h)
