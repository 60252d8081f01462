"""EnclaveInstanceInfo: canonical bytes, full re-verification, and nothing else accepted."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanctorum.attestation import (
    EnclaveInstanceInfo,
    MockConfiguration,
    MockEvidenceProvider,
    key_binding,
)
from sanctorum.common import (
    Curve25519PrivateKey,
    Ed25519PrivateKey,
    EnclaveMode,
    InvalidEnclaveError,
    InvalidSignatureError,
    SecuritySummary,
    SHA256Hash,
)
from sanctorum.mail import open_mail
from tests.conftest import mock_instance_info

SIGNING = Ed25519PrivateKey.generate()
ENCRYPTION = Curve25519PrivateKey.generate()
CONFIG = MockConfiguration(
    code_hash=SHA256Hash.of(b"code"),
    signer_hash=SHA256Hash.of(b"signer"),
    product_id=7,
    revocation_level=3,
    tcb_level=2,
)
PROVIDER = MockEvidenceProvider.for_class("pkg.Enclave", CONFIG)


INFO = mock_instance_info(CONFIG, SIGNING, ENCRYPTION)
SERIALIZED = INFO.serialize()


def test_properties_come_from_the_evidence() -> None:
    assert INFO.code_hash == SHA256Hash.of(b"code")
    assert INFO.signer_hash == SHA256Hash.of(b"signer")
    assert (INFO.product_id, INFO.revocation_level) == (7, 3)
    assert INFO.enclave_mode is EnclaveMode.MOCK
    assert INFO.security_info.summary is SecuritySummary.INSECURE
    assert "TCB level 2" in INFO.security_info.reason
    before = datetime.now(UTC)
    fresh = mock_instance_info(CONFIG)
    # Millisecond precision: the stamp is within the creation, give or take a millisecond.
    assert before - timedelta(milliseconds=1) <= fresh.security_info.timestamp
    assert fresh.security_info.timestamp <= datetime.now(UTC)


def test_round_trip_is_canonical() -> None:
    again = EnclaveInstanceInfo.deserialize(SERIALIZED)
    assert again == INFO
    assert again.serialize() == SERIALIZED
    assert again.encryption_key == ENCRYPTION.public_key
    assert again.data_signing_key == SIGNING.public_key


def test_mock_defaults() -> None:
    provider = MockEvidenceProvider.for_class("pkg.Enclave", None)
    assert provider.code_hash == SHA256Hash.of(b"pkg.Enclave")
    assert provider.signer_hash == SHA256Hash(bytes(32))
    assert (provider.product_id, provider.revocation_level, provider.tcb_level) == (1, 0, 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("product_id", 0),
        ("product_id", 65536),
        ("revocation_level", -1),
        ("revocation_level", 65535),
        ("tcb_level", 0),
        ("tcb_level", 65536),
        ("product_id", True),
    ],
)
def test_mock_configuration_ranges(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        MockConfiguration(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["code_hash", "signer_hash"])
def test_a_mock_hash_written_in_hex_says_to_parse_it(field: str) -> None:
    with pytest.raises(ValueError, match=r"SHA256Hash.parse"):
        MockConfiguration(**{field: "AB" * 32})  # type: ignore[arg-type]


def test_mock_configuration_edges_are_accepted() -> None:
    MockConfiguration(product_id=65535, revocation_level=65534, tcb_level=65535)
    MockConfiguration(product_id=1, revocation_level=0, tcb_level=1)


def test_key_binding_mismatch_is_refused() -> None:
    other = Curve25519PrivateKey.generate().public_key
    tampered = SERIALIZED[:37] + other.encoded + SERIALIZED[69:]
    with pytest.raises(InvalidEnclaveError, match="key binding mismatch"):
        EnclaveInstanceInfo.deserialize(tampered)


def test_tampered_claims_break_the_binding_or_parse() -> None:
    """Evidence fields cannot be edited: every byte flip fails (mock claims carry no signature,
    so flips in the claims still leave them bound; the constraint then sees the change)."""
    rejected = 0
    for position in range(len(SERIALIZED)):
        tampered = bytearray(SERIALIZED)
        tampered[position] ^= 0x01
        try:
            again = EnclaveInstanceInfo.deserialize(bytes(tampered))
        except InvalidEnclaveError:
            rejected += 1
            continue
        assert again != INFO
    # Header, keys, type, lengths and report data are all checked.
    assert rejected >= len(SERIALIZED) - (32 + 32 + 2 + 2 + 2 + 8)


def test_unknown_evidence_type_is_named() -> None:
    evidence = PROVIDER.produce(key_binding(SIGNING.public_key, ENCRYPTION.public_key))
    with pytest.raises(InvalidEnclaveError, match="unknown attestation evidence type 'sgx-x'"):
        EnclaveInstanceInfo(SIGNING.public_key, ENCRYPTION.public_key, "sgx-x", evidence)


def test_oversized_input_is_refused() -> None:
    with pytest.raises(InvalidEnclaveError, match="over the limit"):
        EnclaveInstanceInfo.deserialize(bytes(2 << 20))


def test_wrong_types_are_refused() -> None:
    with pytest.raises(InvalidEnclaveError, match="is bytes"):
        EnclaveInstanceInfo.deserialize("text")  # type: ignore[arg-type]


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(InvalidEnclaveError, match="unexpected bytes"):
        EnclaveInstanceInfo.deserialize(SERIALIZED + b"\0")


def test_verifier_checks_enclave_signatures() -> None:
    signature = SIGNING.sign(b"result: 42")
    verifier = EnclaveInstanceInfo.deserialize(SERIALIZED).verifier()
    verifier.verify(signature, b"result: 42")
    with pytest.raises(InvalidSignatureError):
        verifier.verify(signature, b"result: 43")
    with pytest.raises(InvalidSignatureError):
        verifier.verify(Ed25519PrivateKey.generate().sign(b"result: 42"), b"result: 42")


def test_post_office_seals_to_the_attested_key() -> None:
    client = Curve25519PrivateKey.generate()
    mail = INFO.create_post_office(client, "topic").encrypt_mail(b"secret")
    opened = open_mail(ENCRYPTION, mail)
    assert (opened.body, opened.topic, opened.authenticated_sender) == (
        b"secret",
        "topic",
        client.public_key,
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_invalid_enclave(data: bytes) -> None:
    with pytest.raises(InvalidEnclaveError):
        EnclaveInstanceInfo.deserialize(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SERIALIZED) - 1), st.integers(1, 255), st.integers(0, len(SERIALIZED)))
def test_flipped_or_truncated_raise_only_invalid_enclave(
    position: int, mask: int, length: int
) -> None:
    tampered = bytearray(SERIALIZED)
    tampered[position] ^= mask
    with contextlib.suppress(InvalidEnclaveError):
        EnclaveInstanceInfo.deserialize(bytes(tampered))
    if length < len(SERIALIZED):
        with pytest.raises(InvalidEnclaveError):
            EnclaveInstanceInfo.deserialize(SERIALIZED[:length])
