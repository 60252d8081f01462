"""The Noise X layer reproduces every published Noise_X_25519 test vector byte for byte."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from sanctorum.mail.noise import NoiseSuite, read_handshake, write_handshake
from tests.conftest import vector_file


def _vectors() -> list[Any]:
    document = json.loads(vector_file("noise/noise_x_vectors.json").read_text())
    cases = []
    for source in document["sources"]:
        for vector in source["vectors"]:
            name = vector.get("protocol_name") or vector["name"]
            cases.append(pytest.param(vector, id=f"{source['repo'].split('/')[1]}-{name}"))
    return cases


def _private(hex_key: str) -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(hex_key))


def test_all_24_vectors_are_present() -> None:
    assert len(_vectors()) == 24
    names = {(case.values[0].get("protocol_name") or case.values[0]["name"]) for case in _vectors()}
    assert "Noise_X_25519_AESGCM_SHA256" in names


@pytest.mark.parametrize("vector", _vectors())
def test_initiator_reproduces_vector(vector: dict[str, Any]) -> None:
    suite = NoiseSuite.from_name(vector.get("protocol_name") or vector["name"])
    messages = vector["messages"]
    responder_public = x25519.X25519PublicKey.from_public_bytes(
        bytes.fromhex(vector["init_remote_static"])
    )
    result = write_handshake(
        suite,
        bytes.fromhex(vector["init_prologue"]),
        _private(vector["init_static"]),
        responder_public,
        bytes.fromhex(messages[0]["payload"]),
        ephemeral=_private(vector["init_ephemeral"]),
    )
    assert result.message.hex() == messages[0]["ciphertext"]
    if "handshake_hash" in vector:
        assert result.handshake_hash.hex() == vector["handshake_hash"]
    for message in messages[1:]:
        ciphertext = result.cipher.encrypt(b"", bytes.fromhex(message["payload"]))
        assert ciphertext.hex() == message["ciphertext"]


@pytest.mark.parametrize("vector", _vectors())
def test_responder_opens_vector(vector: dict[str, Any]) -> None:
    suite = NoiseSuite.from_name(vector.get("protocol_name") or vector["name"])
    messages = vector["messages"]
    result = read_handshake(
        suite,
        bytes.fromhex(vector["resp_prologue"]),
        _private(vector["resp_static"]),
        bytes.fromhex(messages[0]["ciphertext"]),
    )
    initiator_public = _private(vector["init_static"]).public_key().public_bytes_raw()
    assert result.remote_static == initiator_public
    assert result.payload.hex() == messages[0]["payload"]
    if "handshake_hash" in vector:
        assert result.handshake_hash.hex() == vector["handshake_hash"]
    for message in messages[1:]:
        plaintext = result.cipher.decrypt(b"", bytes.fromhex(message["ciphertext"]))
        assert plaintext.hex() == message["payload"]
