"""The Mail wire format (sans-IO): sealing bytes and opening them.

Layout, all integers big-endian::

    "SNCM"  protocol id                 4 bytes   ┐
    version                             1 byte    │ plaintext, authenticated:
    flags                               1 byte    │ the Noise prologue, so the
    sequence number                     8 bytes   │ host cannot change them
    topic            (u16 length) UTF-8           │ unnoticed
    envelope         (u32 length) bytes           ┘
    handshake        (u16 length) Noise X message: e, encrypted s, encrypted
                                  payload = body length (u64), padded length (u64),
                                  private header (u16 length + bytes)
    body chunks      the padded body in Noise transport messages of at most 65535
                     bytes each (65519 plaintext + 16-byte tag), every one but the
                     last full size

The sender's static key is inside the handshake, so only the recipient learns who sent the mail;
the private header carries fields the runtime adds that the host must not see.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import x25519

from sanctorum.common.codec import Reader, Writer
from sanctorum.common.errors import MailDecryptionError, MailFormatError
from sanctorum.common.keys import Curve25519PrivateKey, Curve25519PublicKey
from sanctorum.mail.noise import (
    HANDSHAKE_OVERHEAD,
    MAX_MESSAGE_LEN,
    NOISE_X_AESGCM_SHA256,
    TAG_LEN,
    read_handshake,
    write_handshake,
)

MAGIC = b"SNCM"
VERSION = 1
CHUNK_PLAINTEXT_SIZE = MAX_MESSAGE_LEN - TAG_LEN
MAX_TOPIC_SIZE = 256
MAX_ENVELOPE_SIZE = 1 << 20
MAX_PRIVATE_HEADER_SIZE = 4096
DEFAULT_MAX_MAIL_SIZE = 64 << 20
"""Mails above this size are refused unless the caller raises the limit."""

_KNOWN_FLAGS = 0
_LENGTHS = struct.Struct(">QQ")
_PREFIX = struct.Struct(">4sBBQ")


@dataclass(frozen=True)
class EnclaveMail:
    """A decrypted mail: what the enclave (or a client) receives."""

    body: bytes
    envelope: bytes
    """Application bytes that travelled in the clear but authenticated."""
    topic: str
    sequence_number: int
    authenticated_sender: Curve25519PublicKey
    """The sender's static key, proven by the Noise handshake."""
    private_header: bytes = field(default=b"", repr=False)
    """Fields the Sanctorum runtime adds inside the encryption; empty for application mail."""


@dataclass(frozen=True)
class MailHeader:
    """What the host can read of a mail without its key: for routing and sequencing."""

    topic: str
    sequence_number: int
    envelope: bytes


def validate_topic(topic: str) -> str:
    """Check a topic: non-empty text of at most 256 UTF-8 bytes."""
    if not isinstance(topic, str) or not topic:
        raise ValueError("a mail topic must be a non-empty string")
    if len(topic.encode("utf-8")) > MAX_TOPIC_SIZE:
        raise ValueError(f"a mail topic is at most {MAX_TOPIC_SIZE} UTF-8 bytes")
    return topic


def _body_wire_size(padded_size: int) -> int:
    chunks = -(-padded_size // CHUNK_PLAINTEXT_SIZE)
    return padded_size + chunks * TAG_LEN


def seal_mail(
    sender: Curve25519PrivateKey,
    recipient: Curve25519PublicKey,
    *,
    topic: str,
    sequence_number: int,
    body: bytes,
    envelope: bytes = b"",
    padded_size: int = 0,
    private_header: bytes = b"",
    ephemeral: x25519.X25519PrivateKey | None = None,
) -> bytes:
    """Encrypt ``body`` as one self-contained mail from ``sender`` to ``recipient``."""
    validate_topic(topic)
    if not 0 <= sequence_number < 2**64:
        raise ValueError(f"sequence number out of range: {sequence_number}")
    if len(envelope) > MAX_ENVELOPE_SIZE:
        raise ValueError(f"an envelope is at most {MAX_ENVELOPE_SIZE} bytes")
    if len(private_header) > MAX_PRIVATE_HEADER_SIZE:
        raise ValueError(f"a private header is at most {MAX_PRIVATE_HEADER_SIZE} bytes")
    body_size = len(body)
    padded_size = max(padded_size, body_size)

    prologue = (
        Writer()
        .raw(_PREFIX.pack(MAGIC, VERSION, 0, sequence_number))
        .text16(topic)
        .bytes32(envelope)
        .getvalue()
    )
    payload = Writer().raw(_LENGTHS.pack(body_size, padded_size)).bytes16(private_header)
    handshake = write_handshake(
        NOISE_X_AESGCM_SHA256,
        prologue,
        sender.crypto_key,
        recipient.crypto_key,
        payload.getvalue(),
        ephemeral,
    )
    head_size = len(prologue) + 2 + len(handshake.message)
    mail = bytearray(head_size + _body_wire_size(padded_size))
    mail[: len(prologue)] = prologue
    struct.pack_into(">H", mail, len(prologue), len(handshake.message))
    mail[len(prologue) + 2 : head_size] = handshake.message

    # Encrypt chunk by chunk straight into the output buffer: no per-chunk copies.
    plaintext = memoryview(body)
    if padded_size > body_size:
        plaintext = memoryview(bytes(body) + bytes(padded_size - body_size))
    out = memoryview(mail)
    write_at = head_size
    for start in range(0, padded_size, CHUNK_PLAINTEXT_SIZE):
        chunk = plaintext[start : start + CHUNK_PLAINTEXT_SIZE]
        end = write_at + len(chunk) + TAG_LEN
        handshake.cipher.encrypt_into(b"", chunk, out[write_at:end])
        write_at = end
    return bytes(mail)


def _parse_prefix(reader: Reader) -> tuple[int, int]:
    magic = reader.raw(4, "protocol id")
    if magic != MAGIC:
        raise reader.fail(f"protocol id {magic!r} is not Sanctorum Mail ({MAGIC!r})")
    version = reader.u8("version")
    if version != VERSION:
        raise reader.fail(
            f"version {version} is not supported (this library reads version {VERSION}); "
            "upgrade the side that is older"
        )
    flags = reader.u8("flags")
    if flags & ~_KNOWN_FLAGS:
        raise reader.fail(f"unknown flags 0x{flags:02x}")
    return flags, reader.u64("sequence number")


def _read_header(reader: Reader) -> MailHeader:
    _, sequence_number = _parse_prefix(reader)
    topic = reader.text16("topic", MAX_TOPIC_SIZE)
    if not topic:
        raise reader.fail("empty topic")
    envelope = reader.bytes32("envelope", MAX_ENVELOPE_SIZE)
    return MailHeader(topic, sequence_number, envelope)


def _reader(data: bytes, max_size: int) -> Reader:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MailFormatError(f"a mail is bytes, not {type(data).__name__}")
    if len(data) > max_size:
        raise MailFormatError(
            f"mail of {len(data)} bytes is over the limit of {max_size} bytes; "
            "raise max_size if such mail is expected"
        )
    return Reader(data, error=MailFormatError, what="mail")


def read_mail_header(data: bytes, max_size: int = DEFAULT_MAX_MAIL_SIZE) -> MailHeader:
    """Parse the plaintext part of a mail without decrypting it (what a host can see).

    Nothing here is authenticated until the mail is opened by its recipient.
    """
    return _read_header(_reader(data, max_size))


def open_mail(
    recipient: Curve25519PrivateKey, data: bytes, max_size: int = DEFAULT_MAX_MAIL_SIZE
) -> EnclaveMail:
    """Decrypt and authenticate a mail sealed for ``recipient``.

    Raises :class:`MailFormatError` for malformed bytes and :class:`MailDecryptionError` for
    mail sealed to another key or altered in transit.
    """
    reader = _reader(data, max_size)
    header = _read_header(reader)
    prologue = bytes(memoryview(data)[: reader.offset])
    handshake_size = reader.u16("handshake length")
    if handshake_size < HANDSHAKE_OVERHEAD + _LENGTHS.size + 2:
        raise reader.fail(f"handshake of {handshake_size} bytes is too short")
    message = reader.raw(handshake_size, "handshake")
    result = read_handshake(NOISE_X_AESGCM_SHA256, prologue, recipient.crypto_key, message)

    payload = Reader(result.payload, error=MailFormatError, what="mail payload")
    body_size, padded_size = _LENGTHS.unpack(payload.raw(_LENGTHS.size, "lengths"))
    private_header = payload.bytes16("private header", MAX_PRIVATE_HEADER_SIZE)
    payload.expect_end()
    if body_size > padded_size:
        raise MailFormatError("malformed mail payload: body longer than its padded size")
    if reader.remaining != _body_wire_size(padded_size):
        raise MailFormatError(
            f"mail body is {reader.remaining} bytes but its authenticated size says "
            f"{_body_wire_size(padded_size)}: the mail was truncated or extended in transit"
        )

    padded = bytearray(padded_size)
    out = memoryview(padded)
    wire = reader.rest()
    read_at = 0
    for start in range(0, padded_size, CHUNK_PLAINTEXT_SIZE):
        size = min(CHUNK_PLAINTEXT_SIZE, padded_size - start)
        result.cipher.decrypt_into(
            b"", wire[read_at : read_at + size + TAG_LEN], out[start : start + size]
        )
        read_at += size + TAG_LEN
    del out
    if padded_size > body_size:
        del padded[body_size:]
    try:
        sender = Curve25519PublicKey(result.remote_static)
    except ValueError:  # pragma: no cover - 32 bytes are guaranteed by the handshake
        raise MailDecryptionError("the sender key in the mail is malformed") from None
    return EnclaveMail(
        body=bytes(padded),
        envelope=header.envelope,
        topic=header.topic,
        sequence_number=header.sequence_number,
        authenticated_sender=sender,
        private_header=private_header,
    )
