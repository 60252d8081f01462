"""Our Noise X interoperates both ways with the independent `noiseprotocol` package."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from noise.connection import Keypair, NoiseConnection

from sanctorum.common.errors import MailDecryptionError
from sanctorum.mail.noise import NOISE_X_AESGCM_SHA256, read_handshake, write_handshake

NAME = b"Noise_X_25519_AESGCM_SHA256"
PROLOGUE = b"interop prologue"


def _oracle(role: str, static: x25519.X25519PrivateKey, remote: bytes | None) -> NoiseConnection:
    connection = NoiseConnection.from_name(NAME)
    if role == "initiator":
        connection.set_as_initiator()
    else:
        connection.set_as_responder()
    connection.set_keypair_from_private_bytes(Keypair.STATIC, static.private_bytes_raw())
    if remote is not None:
        connection.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote)
    connection.set_prologue(PROLOGUE)
    connection.start_handshake()
    return connection


@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(256)) * 200])
def test_oracle_opens_what_we_write(payload: bytes) -> None:
    sender, recipient = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    ours = write_handshake(
        NOISE_X_AESGCM_SHA256, PROLOGUE, sender, recipient.public_key(), payload[:60000]
    )
    oracle = _oracle("responder", recipient, None)
    assert bytes(oracle.read_message(ours.message)) == payload[:60000]
    assert bytes(oracle.get_handshake_hash()) == ours.handshake_hash
    for index in range(3):
        message = payload[index::3][:65000]
        assert bytes(oracle.decrypt(ours.cipher.encrypt(b"", message))) == message


@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(256)) * 200])
def test_we_open_what_the_oracle_writes(payload: bytes) -> None:
    sender, recipient = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    oracle = _oracle("initiator", sender, recipient.public_key().public_bytes_raw())
    message = oracle.write_message(payload[:60000])
    ours = read_handshake(NOISE_X_AESGCM_SHA256, PROLOGUE, recipient, bytes(message))
    assert ours.payload == payload[:60000]
    assert ours.remote_static == sender.public_key().public_bytes_raw()
    assert ours.handshake_hash == bytes(oracle.get_handshake_hash())
    for index in range(3):
        chunk = payload[index::3][:65000]
        assert ours.cipher.decrypt(b"", bytes(oracle.encrypt(chunk))) == chunk


def test_oracle_message_with_other_prologue_is_refused() -> None:
    sender, recipient = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    oracle = _oracle("initiator", sender, recipient.public_key().public_bytes_raw())
    message = bytes(oracle.write_message(b"payload"))
    with pytest.raises(MailDecryptionError):
        read_handshake(NOISE_X_AESGCM_SHA256, b"another prologue", recipient, message)


def test_low_order_ephemeral_key_is_refused() -> None:
    recipient = x25519.X25519PrivateKey.generate()
    message = bytes(32) + bytes(80)  # the all-zero point gives an all-zero shared secret
    with pytest.raises(MailDecryptionError, match="usable X25519"):
        read_handshake(NOISE_X_AESGCM_SHA256, b"", recipient, message)
