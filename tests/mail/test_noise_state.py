"""The Noise layer's shortcuts: the first MixKey, batched transport messages, the ss cache."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sanctorum.common.errors import MailDecryptionError
from sanctorum.mail import noise
from sanctorum.mail.noise import NOISE_X_AESGCM_SHA256, CipherState, NoiseSuite, StaticSecretCache

SUITES = [NoiseSuite(cipher, hash) for cipher in ("AESGCM", "ChaChaPoly") for hash in noise._HASHES]


@pytest.mark.parametrize("suite", SUITES, ids=lambda suite: suite.name)
def test_first_mix_key_is_hkdf_with_the_initial_chaining_key(suite: NoiseSuite) -> None:
    primitives = suite._primitives
    for ikm in (b"", os.urandom(32), os.urandom(32)):
        expected = HKDF(
            primitives.algorithm, primitives.hash_len + noise.KEY_LEN, primitives.initial_hash, b""
        ).derive(ikm)
        # Twice: the shared HMAC is copied, never used up.
        assert noise._first_mix_key(primitives, ikm) == expected
        assert noise._first_mix_key(primitives, ikm) == expected


def _states(count: int = 2, suite: NoiseSuite = NOISE_X_AESGCM_SHA256) -> list[CipherState]:
    """``count`` fresh cipher states with one key."""
    primitives, key = suite._primitives, os.urandom(32)
    return [CipherState(primitives.aead(key), primitives.nonce) for _ in range(count)]


def _pair() -> tuple[CipherState, CipherState]:
    sender, receiver = _states()
    return sender, receiver


@pytest.mark.parametrize("suite", SUITES[::4], ids=lambda suite: suite.cipher)
def test_batches_are_the_same_messages_as_one_at_a_time(suite: NoiseSuite) -> None:
    batched, single, opener = _states(3, suite)
    plaintexts = [os.urandom(size) for size in (0, 1, 100, 5000)]
    sealed = [bytearray(len(plaintext) + 16) for plaintext in plaintexts]
    batched.encrypt_all_into(plaintexts, [memoryview(s) for s in sealed])
    assert [bytes(s) for s in sealed] == [single.encrypt(b"", p) for p in plaintexts]
    assert batched.n == single.n == 4

    opened = [bytearray(len(plaintext)) for plaintext in plaintexts]
    opener.decrypt_all_into([bytes(s) for s in sealed], [memoryview(o) for o in opened])
    assert [bytes(o) for o in opened] == plaintexts
    assert opener.n == 4


def test_a_batch_continues_the_nonce_sequence() -> None:
    sender, receiver = _pair()
    first = sender.encrypt(b"", b"one")
    second = bytearray(3 + 16)
    sender.encrypt_all_into([b"two"], [memoryview(second)])
    assert sender.n == 2
    assert receiver.decrypt(b"", first) == b"one"
    assert receiver.decrypt(b"", bytes(second)) == b"two"  # sealed with nonce 1


def test_a_failed_encryption_never_leaves_its_nonces_for_reuse() -> None:
    sender, _ = _pair()
    outputs = [memoryview(bytearray(16 + 1)), memoryview(bytearray(5))]  # the second is too short
    with pytest.raises(ValueError, match="buffer must be"):
        sender.encrypt_all_into([b"a", b"b"], outputs)
    assert sender.n == 2


def test_decryption_advances_once_per_authenticated_message() -> None:
    sender, receiver = _pair()
    sealed = [bytearray(16 + 1) for _ in range(3)]
    sender.encrypt_all_into([b"a", b"b", b"c"], [memoryview(s) for s in sealed])
    sealed[1][0] ^= 1
    with pytest.raises(MailDecryptionError, match="authentication failed"):
        receiver.decrypt_all_into([bytes(s) for s in sealed], [memoryview(bytearray(1))] * 3)
    assert receiver.n == 1


def test_batches_need_one_output_per_message() -> None:
    sender, receiver = _pair()
    with pytest.raises(ValueError, match="one output"):
        sender.encrypt_all_into([b"a", b"b"], [memoryview(bytearray(17))])
    with pytest.raises(ValueError, match="one output"):
        receiver.decrypt_all_into([bytes(17)], [])
    assert sender.n == receiver.n == 0


def test_batches_refuse_to_reach_the_reserved_nonce() -> None:
    sender, receiver = _pair()
    sender.n = receiver.n = 2**64 - 2
    outputs = [memoryview(bytearray(17)) for _ in range(2)]
    with pytest.raises(MailDecryptionError, match="exhausted"):
        sender.encrypt_all_into([b"a", b"b"], outputs)
    with pytest.raises(MailDecryptionError, match="exhausted"):
        receiver.decrypt_all_into([bytes(17)] * 2, [memoryview(bytearray(1))] * 2)
    assert sender.n == receiver.n == 2**64 - 2
    sender.encrypt_all_into([b"a"], outputs[:1])  # the last usable nonce
    assert sender.n == 2**64 - 1


def _public(key: x25519.X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def test_static_secret_cache_keeps_one_secret_per_remote_key() -> None:
    static = x25519.X25519PrivateKey.generate()
    cache = StaticSecretCache(static)
    remotes = [x25519.X25519PrivateKey.generate() for _ in range(3)]
    for remote in remotes * 2:
        assert cache.shared_secret(_public(remote)) == remote.exchange(static.public_key())
    assert len({cache.shared_secret(_public(remote)) for remote in remotes}) == 3


def test_static_secret_cache_is_bounded_and_forgets_the_oldest() -> None:
    static = x25519.X25519PrivateKey.generate()
    cache = StaticSecretCache(static, max_entries=2)
    remotes = [_public(x25519.X25519PrivateKey.generate()) for _ in range(3)]
    for remote in remotes:
        cache.shared_secret(remote)
    assert list(cache._secrets) == remotes[1:]
    assert cache.shared_secret(remotes[0]) == static.exchange(
        x25519.X25519PublicKey.from_public_bytes(remotes[0])
    )
    assert list(cache._secrets) == [remotes[2], remotes[0]]
