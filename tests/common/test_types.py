"""Keys and hashes encode and decode; wrong sizes get InvalidKeyError."""

from __future__ import annotations

import pytest

from sanctorum.common import (
    Curve25519PrivateKey,
    Curve25519PublicKey,
    Ed25519PrivateKey,
    Ed25519PublicKey,
    InvalidKeyError,
    InvalidSignatureError,
    SanctorumError,
    SHA256Hash,
)


def test_curve25519_round_trip_and_equality() -> None:
    private = Curve25519PrivateKey.generate()
    again = Curve25519PrivateKey(private.encoded)
    assert again == private
    assert hash(again) == hash(private)
    public = Curve25519PublicKey(private.public_key.encoded)
    assert public == private.public_key
    assert {public: 1}[again.public_key] == 1
    assert private.encoded.hex() not in repr(private)


def test_ed25519_sign_and_verify() -> None:
    private = Ed25519PrivateKey.generate()
    public = Ed25519PublicKey(bytes(private.public_key))
    signature = private.sign(b"data")
    public.verify(signature, b"data")
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        public.verify(signature, b"other data")
    with pytest.raises(InvalidSignatureError):
        public.verify(b"short", b"data")


@pytest.mark.parametrize(
    "cls", [Curve25519PublicKey, Curve25519PrivateKey, Ed25519PublicKey, Ed25519PrivateKey]
)
@pytest.mark.parametrize("size", [0, 31, 33])
def test_wrong_key_sizes(cls: type, size: int) -> None:
    with pytest.raises(InvalidKeyError, match="32 raw bytes"):
        cls(bytes(size))


def test_keys_of_different_kinds_are_not_equal() -> None:
    raw = Curve25519PrivateKey.generate().public_key.encoded
    assert Curve25519PublicKey(raw) != Ed25519PublicKey(raw)


def test_hash_parse_and_format() -> None:
    digest = SHA256Hash.of(b"abc")
    text = str(digest)
    assert text == "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
    assert SHA256Hash.parse(text.lower()) == digest
    assert SHA256Hash.parse(f"  {text}\n") == digest


@pytest.mark.parametrize("text", ["", "AB", "Z" * 64, "A" * 63, "A" * 65])
def test_bad_hashes(text: str) -> None:
    with pytest.raises(InvalidKeyError):
        SHA256Hash.parse(text)


def test_errors_share_one_root() -> None:
    assert issubclass(InvalidKeyError, SanctorumError)
