"""The Mail wire format: round trips, layout, padding and every way to tamper with it."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import struct
import weakref

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from hypothesis import given, settings
from hypothesis import strategies as st
from noise.connection import Keypair, NoiseConnection

from sanctorum.common.errors import MailDecryptionError, MailFormatError, SanctorumError
from sanctorum.common.keys import Curve25519PrivateKey
from sanctorum.mail import format as mail_format
from sanctorum.mail.format import (
    CHUNK_PLAINTEXT_SIZE,
    MAGIC,
    open_mail,
    read_mail_header,
    seal_mail,
)

SENDER = Curve25519PrivateKey.generate()
RECIPIENT = Curve25519PrivateKey.generate()


def _seal(body: bytes = b"body", **kwargs: object) -> bytes:
    arguments: dict[str, object] = {"topic": "bids", "sequence_number": 7, "body": body}
    arguments.update(kwargs)
    return seal_mail(SENDER, RECIPIENT.public_key, **arguments)  # type: ignore[arg-type]


SMALL_MAIL = _seal(b"a small secret", envelope=b"env")


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        1024,
        CHUNK_PLAINTEXT_SIZE - 1,
        CHUNK_PLAINTEXT_SIZE,
        CHUNK_PLAINTEXT_SIZE + 1,
        3 * CHUNK_PLAINTEXT_SIZE + 17,
        1 << 20,
    ],
)
def test_round_trip_every_size(size: int) -> None:
    body = bytes(i % 251 for i in range(size))
    mail = _seal(body, envelope=b"plain but authenticated")
    opened = open_mail(RECIPIENT, mail)
    assert opened.body == body
    assert opened.envelope == b"plain but authenticated"
    assert opened.topic == "bids"
    assert opened.sequence_number == 7
    assert opened.authenticated_sender == SENDER.public_key
    assert body not in mail or size < 8  # the body never travels in the clear


def test_layout_matches_the_documented_format() -> None:
    body = bytes(2 * CHUNK_PLAINTEXT_SIZE + 5)
    mail = _seal(body, envelope=b"E")
    assert mail[:4] == MAGIC
    assert mail[4] == 1
    assert mail[5] == 0
    assert struct.unpack(">Q", mail[6:14])[0] == 7
    assert mail[14:16] == b"\x00\x04"
    assert mail[16:20] == b"bids"
    assert mail[20:24] == b"\x00\x00\x00\x01"
    assert mail[24:25] == b"E"
    (handshake_size,) = struct.unpack(">H", mail[25:27])
    assert handshake_size == 32 + 48 + (16 + 2) + 16
    body_wire = len(mail) - 27 - handshake_size
    assert body_wire == len(body) + 3 * 16  # three chunks, each with its own tag
    header = read_mail_header(mail)
    assert (header.topic, header.sequence_number, header.envelope) == ("bids", 7, b"E")


def test_oracle_opens_chunks_of_a_sealed_mail() -> None:
    """Each body chunk is a standard Noise transport message (noiseprotocol reads them)."""
    body = bytes(range(256)) * 600
    mail = _seal(body)
    prologue_end = 20 + 4
    (handshake_size,) = struct.unpack(">H", mail[prologue_end : prologue_end + 2])
    oracle = NoiseConnection.from_name(b"Noise_X_25519_AESGCM_SHA256")
    oracle.set_as_responder()
    oracle.set_keypair_from_private_bytes(Keypair.STATIC, RECIPIENT.encoded)
    oracle.set_prologue(mail[:prologue_end])
    oracle.start_handshake()
    start = prologue_end + 2
    payload = bytes(oracle.read_message(mail[start : start + handshake_size]))
    assert struct.unpack(">QQ", payload[:16]) == (len(body), len(body))
    rest, plaintext = mail[start + handshake_size :], b""
    while rest:
        plaintext += bytes(oracle.decrypt(rest[:65535]))
        rest = rest[65535:]
    assert plaintext == body


def test_padding_hides_length_but_not_content() -> None:
    mail = _seal(b"short", padded_size=5000)
    assert len(mail) > 5000
    assert open_mail(RECIPIENT, mail).body == b"short"


def test_private_header_round_trips() -> None:
    mail = _seal(private_header=b"hidden fields")
    assert open_mail(RECIPIENT, mail).private_header == b"hidden fields"
    assert b"hidden fields" not in mail


def test_every_single_byte_flip_is_rejected() -> None:
    for position in range(len(SMALL_MAIL)):
        tampered = bytearray(SMALL_MAIL)
        tampered[position] ^= 0x01
        with pytest.raises((MailDecryptionError, MailFormatError)):
            open_mail(RECIPIENT, bytes(tampered))


def test_flips_in_a_multi_chunk_body_are_rejected() -> None:
    mail = _seal(bytes(3 * CHUNK_PLAINTEXT_SIZE))
    for position in range(len(mail) - 1, 200, -9973):
        tampered = bytearray(mail)
        tampered[position] ^= 0x80
        with pytest.raises(MailDecryptionError):
            open_mail(RECIPIENT, bytes(tampered))


def test_every_truncation_is_rejected() -> None:
    for length in range(len(SMALL_MAIL)):
        with pytest.raises((MailDecryptionError, MailFormatError)):
            open_mail(RECIPIENT, SMALL_MAIL[:length])


def test_truncation_at_a_chunk_boundary_is_rejected() -> None:
    mail = _seal(bytes(2 * CHUNK_PLAINTEXT_SIZE))
    with pytest.raises(MailFormatError, match="truncated or extended"):
        open_mail(RECIPIENT, mail[: len(mail) - (CHUNK_PLAINTEXT_SIZE + 16)])


def test_extension_is_rejected() -> None:
    with pytest.raises(MailFormatError, match="truncated or extended"):
        open_mail(RECIPIENT, SMALL_MAIL + b"\0")


def test_reordered_chunks_are_rejected() -> None:
    mail = _seal(bytes(range(256)) * 520)  # three chunks
    head = len(mail) - (len(bytes(range(256)) * 520) + 3 * 16)
    first, second = mail[head : head + 65535], mail[head + 65535 : head + 2 * 65535]
    swapped = mail[:head] + second + first + mail[head + 2 * 65535 :]
    with pytest.raises(MailDecryptionError):
        open_mail(RECIPIENT, swapped)


def test_mail_for_another_key_gives_decryption_error() -> None:
    with pytest.raises(MailDecryptionError):
        open_mail(Curve25519PrivateKey.generate(), SMALL_MAIL)


def test_oversized_mail_is_refused_before_any_work() -> None:
    with pytest.raises(MailFormatError, match="over the limit"):
        open_mail(RECIPIENT, SMALL_MAIL, max_size=len(SMALL_MAIL) - 1)


SPEC = b"sanctorum-kds-key-spec\x00\x01 a spec as the host sees it"


def test_a_key_spec_travels_authenticated_in_the_header() -> None:
    mail = _seal(b"for the cluster", envelope=b"env", key_spec=SPEC)
    assert mail[5] == mail_format.KEY_SPEC_FLAG
    assert read_mail_header(mail).key_spec == SPEC
    assert open_mail(RECIPIENT, mail).key_spec == SPEC
    assert open_mail(RECIPIENT, SMALL_MAIL).key_spec is None
    assert read_mail_header(SMALL_MAIL).key_spec is None
    assert len(mail) == mail_format.sealed_size("bids", 3, len(b"for the cluster"), 0, len(SPEC))
    start = mail.index(SPEC)
    for position in (5, start - 1, start, start + len(SPEC) - 1):  # flag, length, spec
        tampered = bytearray(mail)
        tampered[position] ^= 0x01
        with pytest.raises((MailDecryptionError, MailFormatError)):
            open_mail(RECIPIENT, bytes(tampered))
    # Dropping the spec (and its flag) makes another prologue: the mail no longer opens.
    stripped = mail[:5] + b"\x00" + mail[6 : start - 4] + mail[start + len(SPEC) :]
    with pytest.raises(MailDecryptionError):
        open_mail(RECIPIENT, stripped)


@pytest.mark.parametrize(
    ("length", "problem"),
    [(0, "key spec of 0 bytes"), ((1 << 17) + 1, "key spec of 131073 bytes"), (1000, "truncated")],
)
def test_a_bad_key_spec_length_is_refused(length: int, problem: str) -> None:
    mail = _seal(key_spec=SPEC)
    start = mail.index(SPEC)
    bad = mail[: start - 4] + struct.pack(">I", length) + mail[start : start + 10]
    for read in (lambda: read_mail_header(bad), lambda: open_mail(RECIPIENT, bad)):
        with pytest.raises(MailFormatError, match=problem):
            read()
    with pytest.raises(MailFormatError, match="truncated before the key spec"):
        open_mail(RECIPIENT, mail[: start - 2])
    with pytest.raises(ValueError, match="key spec is 1 to"):
        _seal(key_spec=b"")


def test_unknown_flags_are_refused() -> None:
    with pytest.raises(MailFormatError, match="unknown flags 0x02"):
        open_mail(RECIPIENT, SMALL_MAIL[:5] + b"\x02" + SMALL_MAIL[6:])


def test_other_version_and_protocol_are_named() -> None:
    with pytest.raises(MailFormatError, match="version 2 is not supported"):
        open_mail(RECIPIENT, SMALL_MAIL[:4] + b"\x02" + SMALL_MAIL[5:])
    with pytest.raises(MailFormatError, match="not Sanctorum Mail"):
        open_mail(RECIPIENT, b"HTTP" + SMALL_MAIL[4:])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"topic": ""}, "non-empty"),
        ({"topic": "t" * 257}, "at most 256"),
        ({"sequence_number": -1}, "out of range"),
        ({"envelope": bytes((1 << 20) + 1)}, "envelope"),
    ],
)
def test_bad_seal_arguments(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _seal(**arguments)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_sanctorum_errors(data: bytes) -> None:
    with pytest.raises(SanctorumError):
        open_mail(RECIPIENT, data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SMALL_MAIL) - 1), st.integers(1, 255), st.integers(0, len(SMALL_MAIL)))
def test_flipped_and_truncated_mail_raise_only_sanctorum_errors(
    position: int, mask: int, length: int
) -> None:
    tampered = bytearray(SMALL_MAIL)
    tampered[position] ^= mask
    for candidate in (bytes(tampered), bytes(tampered[:length])):
        with pytest.raises(SanctorumError):
            open_mail(RECIPIENT, candidate)
        with contextlib.suppress(SanctorumError):
            read_mail_header(candidate)


# Digests of mails sealed with fixed keys by the implementation before issue 12 (which sealed
# into a scratch buffer and padded by copying the body): the wire bytes may not change.
_GOLDEN_SENDER = Curve25519PrivateKey(bytes(range(32)))
_GOLDEN_RECIPIENT = Curve25519PrivateKey(bytes(range(32, 64)))


@pytest.mark.parametrize(
    ("size", "padded_size", "digest"),
    [
        (0, 0, "cf71787e82b2625c34eeb547988faaebce238ce32e56c09b4f086a4df87af0d3"),
        (1, 0, "c031dc70ee0af58042db454cad0ee1f4765ce9543cebb76c2657a897fafc9305"),
        (1024, 0, "7e7bb897ee97c093832c90fa686afd7dd9fa3a054edc385e95515adee603bb3d"),
        (16, 1024, "47e872ff0e3f9ef1682098bb010424772f0e2bdf4e5d8e31a2ec27e4930a4dc6"),
        (65519, 0, "8e95a87753f64017009fc09e934196c21ffa93595bd7c3a1536c7b39f5ee5363"),
        (65520, 0, "bfa5fb1aac2e1869d4b3f2414a119ed60d2bb83557f34c75447f7a4a7c353460"),
        (1000, 65524, "49585d2ff67544921897f81914fa9f19b67ee0ac7805315063a19d2b8255597d"),
        (65526, 196558, "fb0a06378258d8f091ca1e22b71d69981cb858fcb267e1737b9884fcd5a9043b"),
        (196557, 327592, "8d20b55c050086c4fffbaaa8ead33bbe5e63417fc20f36e614101b585ad9626e"),
        (1 << 20, 0, "089d7e527e3cacc972e26ba1e740c5ba674901fd720aea0420bc233218d02ffe"),
    ],
)
def test_sealed_bytes_are_unchanged(size: int, padded_size: int, digest: str) -> None:
    body = bytes(i * 7 % 251 for i in range(size))
    mail = seal_mail(
        _GOLDEN_SENDER,
        _GOLDEN_RECIPIENT.public_key,
        topic="bids",
        sequence_number=7,
        body=body,
        envelope=b"env",
        padded_size=padded_size,
        private_header=b"ph",
        ephemeral=x25519.X25519PrivateKey.from_private_bytes(bytes([9]) * 32),
    )
    assert hashlib.sha256(mail).hexdigest() == digest
    opened = open_mail(_GOLDEN_RECIPIENT, mail)
    assert (opened.body, opened.private_header) == (body, b"ph")
    assert opened.authenticated_sender == _GOLDEN_SENDER.public_key


def test_each_private_key_has_its_own_static_secrets() -> None:
    secrets = mail_format._StaticSecrets()
    first, second = Curve25519PrivateKey.generate(), Curve25519PrivateKey.generate()
    twin = Curve25519PrivateKey(first.encoded)  # another object for the same key
    for key in (first, second, twin, first, second):  # the last-used key changes every time
        cache = secrets.of(key)
        assert cache.public_key == key.public_key.encoded
        assert cache.static.private_bytes_raw() == key.encoded
        assert cache is secrets.of(key)
    assert secrets.of(first) is not secrets.of(second)
    assert secrets.of(twin) is secrets.of(first)  # equal keys, so the same secrets


def test_static_secrets_go_with_their_key() -> None:
    secrets = mail_format._StaticSecrets()
    key = Curve25519PrivateKey.generate()
    cache = weakref.ref(secrets.of(key))
    del key
    gc.collect()
    assert cache() is None  # neither the dictionary nor the last-used slot keeps it
    assert len(secrets._caches) == 0
    other = Curve25519PrivateKey.generate()
    assert secrets.of(other).static is other.crypto_key
    secrets.clear()
    assert secrets._last is None
    assert len(secrets._caches) == 0


@pytest.mark.parametrize("size", [CHUNK_PLAINTEXT_SIZE + 1, 3 * CHUNK_PLAINTEXT_SIZE])
def test_multi_chunk_mail_is_not_copied_out_of_its_buffer(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffers: list[io.BytesIO] = []

    def output(size: int) -> io.BytesIO:
        buffers.append(io.BytesIO(bytes(size)))
        return buffers[-1]

    monkeypatch.setattr(mail_format, "_output", output)
    mail = _seal(bytes(size))
    assert buffers[-1].getvalue() is mail  # getvalue() copies while a view of it is alive
    assert open_mail(RECIPIENT, mail).body is buffers[-1].getvalue()


@pytest.mark.parametrize("size", [1024, 2 * CHUNK_PLAINTEXT_SIZE + 3])
@pytest.mark.parametrize("wrap", [bytearray, memoryview])
def test_mail_opens_from_any_bytes_like_object(size: int, wrap: type) -> None:
    body = bytes(i % 251 for i in range(size))
    mail = _seal(body, envelope=b"env")
    opened = open_mail(RECIPIENT, wrap(mail))
    assert (opened.body, opened.envelope, opened.topic) == (body, b"env", "bids")
    assert type(opened.body) is bytes
    assert read_mail_header(wrap(mail)).envelope == b"env"
