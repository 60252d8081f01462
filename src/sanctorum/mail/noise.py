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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from sanctorum.common.errors import MailDecryptionError

DH_LEN = 32
TAG_LEN = 16
MAX_MESSAGE_LEN = 65535
"""Noise caps every message at 65535 bytes; Mail chunks its body to stay within it."""

HANDSHAKE_OVERHEAD = DH_LEN + (DH_LEN + TAG_LEN) + TAG_LEN
"""Bytes the X handshake message adds around its payload: e, encrypted s, payload tag."""

_MAX_NONCE = 2**64 - 1  # reserved by the spec: a CipherState may not use it
# Nonce n = 0 in both formats. Each handshake key encrypts exactly one message (MixKey resets n),
# so the handshake uses the AEAD with this nonce and no CipherState: ~1 µs less per mail.
_FIRST_NONCE = bytes(12)
_AUTHENTICATION_FAILED = "authentication failed: the data was altered, or sealed for another key"

_AEADS: dict[str, Callable[[bytes], AESGCM | ChaCha20Poly1305]] = {
    "AESGCM": AESGCM,
    "ChaChaPoly": ChaCha20Poly1305,
}
_NONCE_FORMATS = {
    "AESGCM": struct.Struct(">4xQ"),  # 32 zero bits, then the counter big-endian
    "ChaChaPoly": struct.Struct("<4xQ"),  # 32 zero bits, then the counter little-endian
}
# HKDF comes from `cryptography`: Noise's HKDF(ck, ikm) is RFC 5869 HKDF with salt=ck and empty
# info (the first one as its extract and expand halves, see _first_mix_key). Hashing uses
# hashlib's one-shot constructors: for the short inputs of a handshake they are three times
# faster than a `cryptography` Hash object (see docs/decisions.md).
_HASHES: dict[str, tuple[Callable[[bytes], Any], hashes.HashAlgorithm]] = {
    "SHA256": (hashlib.sha256, hashes.SHA256()),
    "SHA512": (hashlib.sha512, hashes.SHA512()),
    "BLAKE2s": (hashlib.blake2s, hashes.BLAKE2s(32)),
    "BLAKE2b": (hashlib.blake2b, hashes.BLAKE2b(64)),
}
KEY_LEN = 32


class _Primitives(NamedTuple):
    hash_function: Callable[[bytes], Any]
    algorithm: hashes.HashAlgorithm
    hash_len: int
    initial_hash: bytes
    """InitializeSymmetric's h and ck: the protocol name, padded or hashed to ``hash_len``."""
    initial_mac: hmac.HMAC
    """HMAC keyed with the initial ck, never updated: copies of it start the first MixKey."""
    aead: Callable[[bytes], AESGCM | ChaCha20Poly1305]
    nonce: Callable[[int], bytes]


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

    @functools.cached_property
    def _primitives(self) -> _Primitives:
        """Everything a handshake looks up about the suite, found once (~0.4 µs a mail)."""
        hash_function, algorithm = _HASHES[self.hash]
        name = self.name.encode("ascii")
        hash_len = algorithm.digest_size
        initial = (
            name.ljust(hash_len, b"\0") if len(name) <= hash_len else hash_function(name).digest()
        )
        return _Primitives(
            hash_function,
            algorithm,
            hash_len,
            initial,
            hmac.HMAC(initial, algorithm),
            _AEADS[self.cipher],
            _NONCE_FORMATS[self.cipher].pack,
        )

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

    def __init__(self, aead: AESGCM | ChaCha20Poly1305, nonce: Callable[[int], bytes]) -> None:
        """``aead`` holds the key; ``nonce`` encodes the counter as the suite's cipher wants."""
        self._aead = aead
        self._nonce = nonce
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

    # The two methods below are EncryptWithAd/DecryptWithAd with empty associated data over a
    # list of messages, each written into its own slice of a caller's buffer. One Python call
    # per list rather than per message: the Python around each AEAD call cost ~0.3 µs a
    # message, 5-8% of the AES-GCM work of a 4-16 MiB mail (docs/decisions.md, issue 12).

    def encrypt_all_into(
        self, plaintexts: Sequence[bytes | memoryview], outputs: Sequence[memoryview]
    ) -> None:
        """Encrypt each plaintext into its output, ``len(plaintext) + 16`` bytes long."""
        count = len(plaintexts)
        if len(outputs) != count:  # map() would stop at the shorter list
            raise ValueError("one output buffer per plaintext")
        if count > _MAX_NONCE - self.n:
            raise MailDecryptionError("Noise nonce space exhausted")
        first = self.n
        self.n += count  # before encrypting: a failure part way must not leave nonces for reuse
        nonces = map(self._nonce, range(first, first + count))
        for _ in map(self._aead.encrypt_into, nonces, plaintexts, repeat(b""), outputs):
            pass

    def decrypt_all_into(
        self, ciphertexts: Sequence[bytes | memoryview], outputs: Sequence[memoryview]
    ) -> None:
        """Decrypt each ciphertext into its output, ``len(ciphertext) - 16`` bytes long.

        The nonce advances once per message that authenticates, as the specification requires.
        """
        count = len(ciphertexts)
        if len(outputs) != count:  # map() would stop at the shorter list
            raise ValueError("one output buffer per ciphertext")
        if count > _MAX_NONCE - self.n:
            raise MailDecryptionError("Noise nonce space exhausted")
        nonces = map(self._nonce, range(self.n, self.n + count))
        try:
            for _ in map(self._aead.decrypt_into, nonces, ciphertexts, repeat(b""), outputs):
                self.n += 1
        except InvalidTag:
            raise MailDecryptionError(_AUTHENTICATION_FAILED) from None

    def decrypt(self, associated_data: bytes, ciphertext: bytes | memoryview) -> bytes:
        """DecryptWithAd; :class:`MailDecryptionError` if the tag does not verify.

        The nonce advances only on success, as the specification requires.
        """
        nonce = self._nonce(self.n)
        try:
            plaintext = self._aead.decrypt(nonce, ciphertext, associated_data)
        except InvalidTag:
            raise MailDecryptionError(_AUTHENTICATION_FAILED) from None
        self.n += 1
        return plaintext


def _first_mix_key(primitives: _Primitives, ikm: bytes) -> bytes:
    """HKDF(ck, ikm) with the initial ck: RFC 5869's extract (HMAC(ck, ikm)) from a copy of
    the HMAC keyed with it once per suite, then HKDF's expand. Keying an HMAC is most of an
    HKDF's cost: this saves ~0.5 µs a mail (checked against HKDF in tests/mail/)."""
    extract = primitives.initial_mac.copy()
    extract.update(ikm)
    return HKDFExpand(primitives.algorithm, primitives.hash_len + KEY_LEN, b"").derive(
        extract.finalize()
    )


def _open_first(aead: AESGCM | ChaCha20Poly1305, h: bytes, ciphertext: bytes) -> bytes:
    """DecryptWithAd(h, ciphertext) with a handshake key's one nonce (see ``_FIRST_NONCE``)."""
    try:
        return aead.decrypt(_FIRST_NONCE, ciphertext, h)
    except InvalidTag:
        raise MailDecryptionError(_AUTHENTICATION_FAILED) from None


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
        self.static = static
        self.public_key = static.public_key().public_bytes_raw()
        self._max_entries = max_entries
        self._secrets: OrderedDict[bytes, bytes] = OrderedDict()

    def shared_secret(
        self, remote: bytes, remote_key: x25519.X25519PublicKey | None = None
    ) -> bytes:
        secret = self._secrets.get(remote)
        if secret is None:
            if remote_key is None:
                remote_key = x25519.X25519PublicKey.from_public_bytes(remote)
            secret = _dh(self.static, remote_key)
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
    hash_function, algorithm, hash_len, ck, _, aead, nonce = primitives = suite._primitives
    h = hash_function(ck + prologue).digest()  # MixHash(prologue)
    remote_public = remote_static.public_bytes_raw()
    h = hash_function(h + remote_public).digest()  # pre-message: <- s
    if ephemeral is None:
        ephemeral = x25519.X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    h = hash_function(h + ephemeral_public).digest()  # e
    keys = _first_mix_key(primitives, _dh(ephemeral, remote_static))
    ck = keys[:hash_len]  # es: MixKey
    encrypted_static = aead(keys[hash_len:]).encrypt(_FIRST_NONCE, cache.public_key, h)  # s
    h = hash_function(h + encrypted_static).digest()
    ss = cache.shared_secret(remote_public, remote_static)
    keys = HKDF(algorithm, hash_len + KEY_LEN, ck, b"").derive(ss)
    ck = keys[:hash_len]  # ss: MixKey
    encrypted_payload = aead(keys[hash_len:]).encrypt(_FIRST_NONCE, payload, h)
    h = hash_function(h + encrypted_payload).digest()
    transport = CipherState(aead(HKDF(algorithm, KEY_LEN, ck, b"").derive(b"")), nonce)  # Split()
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
    if len(message) < HANDSHAKE_OVERHEAD:
        raise MailDecryptionError("the Noise handshake message is truncated")
    hash_function, algorithm, hash_len, ck, _, aead, nonce = primitives = suite._primitives
    h = hash_function(ck + prologue).digest()  # MixHash(prologue)
    h = hash_function(h + cache.public_key).digest()  # pre-message: <- s
    ephemeral_public = message[:DH_LEN]
    h = hash_function(h + ephemeral_public).digest()  # e
    ephemeral_key = x25519.X25519PublicKey.from_public_bytes(ephemeral_public)
    keys = _first_mix_key(primitives, _dh(cache.static, ephemeral_key))
    ck = keys[:hash_len]  # es: MixKey
    encrypted_static = message[DH_LEN : 2 * DH_LEN + TAG_LEN]
    remote_static = _open_first(aead(keys[hash_len:]), h, encrypted_static)  # s
    h = hash_function(h + encrypted_static).digest()
    keys = HKDF(algorithm, hash_len + KEY_LEN, ck, b"").derive(cache.shared_secret(remote_static))
    ck = keys[:hash_len]  # ss: MixKey
    encrypted_payload = message[2 * DH_LEN + TAG_LEN :]
    payload = _open_first(aead(keys[hash_len:]), h, encrypted_payload)
    h = hash_function(h + encrypted_payload).digest()
    transport = CipherState(aead(HKDF(algorithm, KEY_LEN, ck, b"").derive(b"")), nonce)  # Split()
    return ResponderResult(remote_static, payload, transport, h)
