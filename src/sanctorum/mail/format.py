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

import io
import struct
import weakref
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import x25519

from sanctorum.common.errors import MailFormatError
from sanctorum.common.keys import Curve25519PrivateKey, Curve25519PublicKey
from sanctorum.mail.noise import (
    HANDSHAKE_OVERHEAD,
    MAX_MESSAGE_LEN,
    NOISE_X_AESGCM_SHA256,
    TAG_LEN,
    StaticSecretCache,
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
_ZERO_CHUNK = memoryview(bytes(CHUNK_PLAINTEXT_SIZE))


_static_secrets: weakref.WeakKeyDictionary[Curve25519PrivateKey, StaticSecretCache] = (
    weakref.WeakKeyDictionary()
)


def _static_secrets_of(key: Curve25519PrivateKey) -> StaticSecretCache:
    """The static-static DH cache of ``key``, kept as long as the key object lives."""
    cache = _static_secrets.get(key)
    if cache is None:
        cache = _static_secrets.setdefault(key, StaticSecretCache(key.crypto_key))
    return cache


def _output(size: int) -> io.BytesIO:
    """A zeroed buffer of ``size`` bytes that :meth:`io.BytesIO.getvalue` hands out as the
    final ``bytes`` without copying (CPython shares a BytesIO's buffer when nothing else holds
    it; elsewhere it is one copy). Chunks are encrypted straight into its ``getbuffer()``: one
    allocation per mail whatever its size, the same as a single AES-GCM call's output, no
    scratch buffer and no copy (docs/decisions.md, issue 12).
    """
    return io.BytesIO(bytes(size))  # bytes(n) is calloc: fresh pages are not written twice


_PREFIX = struct.Struct(">4sBBQ")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_PAYLOAD = struct.Struct(">QQH")  # body length, padded length, private header length
_HANDSHAKE_SIZE = HANDSHAKE_OVERHEAD + _PAYLOAD.size


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


def _encode_topic(topic: str) -> bytes:
    if not isinstance(topic, str) or not topic:
        raise ValueError("a mail topic must be a non-empty string")
    encoded = topic.encode("utf-8")
    if len(encoded) > MAX_TOPIC_SIZE:
        raise ValueError(f"a mail topic is at most {MAX_TOPIC_SIZE} UTF-8 bytes")
    return encoded


def validate_topic(topic: str) -> str:
    """Check a topic: non-empty text of at most 256 UTF-8 bytes."""
    _encode_topic(topic)
    return topic


def _body_wire_size(padded_size: int) -> int:
    chunks = -(-padded_size // CHUNK_PLAINTEXT_SIZE)
    return padded_size + chunks * TAG_LEN


def sealed_size(
    topic: str, envelope_size: int, padded_size: int, private_header_size: int = 0
) -> int:
    """The exact size of a sealed mail, known before sealing it."""
    head = _PREFIX.size + 2 + len(topic.encode("utf-8")) + 4 + envelope_size
    handshake = _HANDSHAKE_SIZE + private_header_size
    return head + 2 + handshake + _body_wire_size(padded_size)


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
    topic_bytes = _encode_topic(topic)
    if not 0 <= sequence_number < 2**64:
        raise ValueError(f"sequence number out of range: {sequence_number}")
    if len(envelope) > MAX_ENVELOPE_SIZE:
        raise ValueError(f"an envelope is at most {MAX_ENVELOPE_SIZE} bytes")
    if len(private_header) > MAX_PRIVATE_HEADER_SIZE:
        raise ValueError(f"a private header is at most {MAX_PRIVATE_HEADER_SIZE} bytes")
    body_size = len(body)
    padded_size = max(padded_size, body_size)

    prologue = b"".join(
        (
            _PREFIX.pack(MAGIC, VERSION, 0, sequence_number),
            _U16.pack(len(topic_bytes)),
            topic_bytes,
            _U32.pack(len(envelope)),
            envelope,
        )
    )
    payload = _PAYLOAD.pack(body_size, padded_size, len(private_header)) + private_header
    handshake = write_handshake(
        NOISE_X_AESGCM_SHA256,
        prologue,
        _static_secrets_of(sender),
        recipient.crypto_key,
        payload,
        ephemeral,
    )
    message = handshake.message
    if padded_size <= CHUNK_PLAINTEXT_SIZE:  # one chunk (or none): a few small copies at most
        if padded_size == 0:
            return b"".join((prologue, _U16.pack(len(message)), message))
        if padded_size > body_size:
            body = bytes(body) + bytes(padded_size - body_size)
        sealed = handshake.cipher.encrypt(b"", body)
        return b"".join((prologue, _U16.pack(len(message)), message, sealed))
    head_size = len(prologue) + 2 + len(message)
    output = _output(head_size + _body_wire_size(padded_size))
    with output.getbuffer() as out:
        out[: len(prologue)] = prologue
        _U16.pack_into(out, len(prologue), len(message))
        out[len(prologue) + 2 : head_size] = message
        # Encrypt chunk by chunk straight into the output: no per-chunk copies, and only the
        # chunk that straddles the end of the body is padded by copying.
        plaintext = memoryview(body)
        encrypt_into = handshake.cipher.encrypt_into
        write_at = head_size
        for start in range(0, padded_size, CHUNK_PLAINTEXT_SIZE):
            end = min(start + CHUNK_PLAINTEXT_SIZE, padded_size)
            chunk: bytes | memoryview
            if end <= body_size:
                chunk = plaintext[start:end]
            elif start >= body_size:
                chunk = _ZERO_CHUNK[: end - start]
            else:
                chunk = bytes(plaintext[start:]) + bytes(end - body_size)
            encrypt_into(b"", chunk, out[write_at : write_at + end - start + TAG_LEN])
            write_at += end - start + TAG_LEN
    return output.getvalue()


def _malformed(problem: str) -> MailFormatError:
    return MailFormatError(f"malformed mail: {problem}")


def _parse_header(data: bytes, max_size: int) -> tuple[MailHeader, int]:
    """The header and where the prologue ends. Plain struct reads: this is on the hot path."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MailFormatError(f"a mail is bytes, not {type(data).__name__}")
    size = len(data)
    if size > max_size:
        raise MailFormatError(
            f"mail of {size} bytes is over the limit of {max_size} bytes; "
            "raise max_size if such mail is expected"
        )
    if size < _PREFIX.size + 2:
        raise _malformed(f"truncated in the header ({size} bytes)")
    magic, version, flags, sequence_number = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise _malformed(f"protocol id {magic!r} is not Sanctorum Mail ({MAGIC!r})")
    if version != VERSION:
        raise _malformed(
            f"version {version} is not supported (this library reads version {VERSION}); "
            "upgrade the side that is older"
        )
    if flags & ~_KNOWN_FLAGS:
        raise _malformed(f"unknown flags 0x{flags:02x}")
    (topic_size,) = _U16.unpack_from(data, _PREFIX.size)
    if not 0 < topic_size <= MAX_TOPIC_SIZE:
        raise _malformed(f"topic of {topic_size} bytes (1 to {MAX_TOPIC_SIZE} allowed)")
    offset = _PREFIX.size + 2 + topic_size
    if size < offset + 4:
        raise _malformed("truncated in the topic")
    try:
        topic = bytes(data[offset - topic_size : offset]).decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("topic is not valid UTF-8") from None
    (envelope_size,) = _U32.unpack_from(data, offset)
    if envelope_size > MAX_ENVELOPE_SIZE:
        raise _malformed(f"envelope of {envelope_size} bytes (at most {MAX_ENVELOPE_SIZE})")
    offset += 4 + envelope_size
    if size < offset:
        raise _malformed("truncated in the envelope")
    envelope = bytes(data[offset - envelope_size : offset])
    return MailHeader(topic, sequence_number, envelope), offset


def read_mail_header(data: bytes, max_size: int = DEFAULT_MAX_MAIL_SIZE) -> MailHeader:
    """Parse the plaintext part of a mail without decrypting it (what a host can see).

    Nothing here is authenticated until the mail is opened by its recipient.
    """
    return _parse_header(data, max_size)[0]


def open_mail(
    recipient: Curve25519PrivateKey, data: bytes, max_size: int = DEFAULT_MAX_MAIL_SIZE
) -> EnclaveMail:
    """Decrypt and authenticate a mail sealed for ``recipient``.

    Raises :class:`MailFormatError` for malformed bytes and :class:`MailDecryptionError` for
    mail sealed to another key or altered in transit.
    """
    header, offset = _parse_header(data, max_size)
    view = memoryview(data)
    prologue = bytes(view[:offset])
    if len(data) < offset + 2:
        raise _malformed("truncated before the handshake")
    (handshake_size,) = _U16.unpack_from(data, offset)
    offset += 2
    if handshake_size < _HANDSHAKE_SIZE:
        raise _malformed(f"handshake of {handshake_size} bytes is too short")
    if len(data) < offset + handshake_size:
        raise _malformed("truncated in the handshake")
    message = bytes(view[offset : offset + handshake_size])
    offset += handshake_size
    result = read_handshake(NOISE_X_AESGCM_SHA256, prologue, _static_secrets_of(recipient), message)

    payload = result.payload
    body_size, padded_size, private_size = _PAYLOAD.unpack_from(payload)
    if _PAYLOAD.size + private_size != len(payload):
        raise MailFormatError("malformed mail payload: private header length is inconsistent")
    if body_size > padded_size:
        raise MailFormatError("malformed mail payload: body longer than its padded size")
    if len(data) - offset != _body_wire_size(padded_size):
        raise MailFormatError(
            f"mail body is {len(data) - offset} bytes but its authenticated size says "
            f"{_body_wire_size(padded_size)}: the mail was truncated or extended in transit"
        )

    if padded_size <= CHUNK_PLAINTEXT_SIZE:  # one chunk (or none): decrypted to its own bytes
        body = result.cipher.decrypt(b"", bytes(view[offset:])) if padded_size else b""
        if body_size < padded_size:
            body = body[:body_size]
    else:
        output = _output(padded_size)
        with output.getbuffer() as out:
            decrypt_into = result.cipher.decrypt_into
            for start in range(0, padded_size, CHUNK_PLAINTEXT_SIZE):
                size = min(CHUNK_PLAINTEXT_SIZE, padded_size - start)
                chunk = view[offset : offset + size + TAG_LEN]
                decrypt_into(b"", chunk, out[start : start + size])
                offset += size + TAG_LEN
        output.truncate(body_size)
        body = output.getvalue()
    return EnclaveMail(
        body=body,
        envelope=header.envelope,
        topic=header.topic,
        sequence_number=header.sequence_number,
        authenticated_sender=Curve25519PublicKey(result.remote_static),
        private_header=payload[_PAYLOAD.size :],
    )
