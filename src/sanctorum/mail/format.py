"""The Mail wire format (sans-IO): sealing bytes and opening them.

Layout, all integers big-endian::

    "SNCM"  protocol id                 4 bytes   ┐
    version                             1 byte    │ plaintext, authenticated:
    flags                               1 byte    │ the Noise prologue, so the
    sequence number                     8 bytes   │ host cannot change them
    topic            (u16 length) UTF-8           │ unnoticed
    envelope         (u32 length) bytes           │
    key spec         (u32 length) bytes, only     │
                     with flag 0x01               ┘
    handshake        (u16 length) Noise X message: e, encrypted s, encrypted
                                  payload = body length (u64), padded length (u64),
                                  private header (u16 length + bytes)
    body chunks      the padded body in Noise transport messages of at most 65535
                     bytes each (65519 plaintext + 16-byte tag), every one but the
                     last full size

The sender's static key is inside the handshake, so only the recipient learns who sent the mail;
the private header carries fields the runtime adds that the host must not see.

A mail sealed to a key a KDS derives (flag 0x01) names that key's spec, so the host can fetch the
key for its enclave: any enclave the KDS gives the key to can open it (docs/kds.md, clusters).
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
_CHUNK_WIRE_SIZE = MAX_MESSAGE_LEN
MAX_TOPIC_SIZE = 256
MAX_ENVELOPE_SIZE = 1 << 20
MAX_PRIVATE_HEADER_SIZE = 4096
MAX_KEY_SPEC_SIZE = 1 << 17
KEY_SPEC_FLAG = 0x01
"""Set in the flags byte (offset 5) when the mail names the KDS key spec it is sealed to."""
DEFAULT_MAX_MAIL_SIZE = 64 << 20
"""Mails above this size are refused unless the caller raises the limit."""

_KNOWN_FLAGS = KEY_SPEC_FLAG
_ZERO_CHUNK = memoryview(bytes(CHUNK_PLAINTEXT_SIZE))


class _StaticSecrets:
    """The static-static DH cache of each private key, kept as long as the key object lives.

    The key used last is checked first, by identity: a process mostly seals and opens with one
    key, and the WeakKeyDictionary lookup hashes the key in Python (~0.15 µs a mail).
    """

    def __init__(self) -> None:
        self._caches: weakref.WeakKeyDictionary[Curve25519PrivateKey, StaticSecretCache] = (
            weakref.WeakKeyDictionary()
        )
        self._last: tuple[weakref.ref[Curve25519PrivateKey], StaticSecretCache] | None = None

    def of(self, key: Curve25519PrivateKey) -> StaticSecretCache:
        last = self._last  # one read: another thread may replace it (never with a wrong pair)
        if last is not None and last[0]() is key:
            return last[1]
        cache = self._caches.get(key)
        if cache is None:
            cache = self._caches.setdefault(key, StaticSecretCache(key.crypto_key))
        self._last = (weakref.ref(key, self._forget), cache)
        return cache

    def _forget(self, dead: weakref.ref[Curve25519PrivateKey]) -> None:
        """Drop the last key's cache with the key, as the dictionary drops the others'."""
        last = self._last
        if last is not None and last[0] is dead:
            self._last = None

    def clear(self) -> None:
        """Forget every remembered secret (the bench's first-mail case)."""
        self._caches.clear()
        self._last = None


_static_secrets = _StaticSecrets()


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
    key_spec: bytes | None = None
    """For mail sealed to a key a KDS derives, that key's spec (canonical bytes, see
    :meth:`sanctorum.kds.spec.KeySpec.decode`); None for mail sealed to this recipient's own
    key."""


@dataclass(frozen=True)
class MailHeader:
    """What the host can read of a mail without its key: for routing and sequencing."""

    topic: str
    sequence_number: int
    envelope: bytes
    key_spec: bytes | None = None
    """The KDS key spec the mail is sealed to (canonical bytes), if it is."""


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
    topic: str,
    envelope_size: int,
    padded_size: int,
    private_header_size: int = 0,
    key_spec_size: int | None = None,
) -> int:
    """The exact size of a sealed mail, known before sealing it."""
    head = _PREFIX.size + 2 + len(topic.encode("utf-8")) + 4 + envelope_size
    if key_spec_size is not None:
        head += 4 + key_spec_size
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
    key_spec: bytes | None = None,
    ephemeral: x25519.X25519PrivateKey | None = None,
) -> bytes:
    """Encrypt ``body`` as one self-contained mail from ``sender`` to ``recipient``.

    ``key_spec`` names the KDS key spec ``recipient`` is the public key of: it travels in the
    authenticated header, for the host to fetch the key for its enclave."""
    topic_bytes = _encode_topic(topic)
    if not 0 <= sequence_number < 2**64:
        raise ValueError(f"sequence number out of range: {sequence_number}")
    if len(envelope) > MAX_ENVELOPE_SIZE:
        raise ValueError(f"an envelope is at most {MAX_ENVELOPE_SIZE} bytes")
    if len(private_header) > MAX_PRIVATE_HEADER_SIZE:
        raise ValueError(f"a private header is at most {MAX_PRIVATE_HEADER_SIZE} bytes")
    body_size = len(body)
    padded_size = max(padded_size, body_size)

    parts = [
        _PREFIX.pack(MAGIC, VERSION, 0 if key_spec is None else KEY_SPEC_FLAG, sequence_number),
        _U16.pack(len(topic_bytes)),
        topic_bytes,
        _U32.pack(len(envelope)),
        envelope,
    ]
    if key_spec is not None:
        if not 0 < len(key_spec) <= MAX_KEY_SPEC_SIZE:
            raise ValueError(f"a key spec is 1 to {MAX_KEY_SPEC_SIZE} bytes")
        parts += (_U32.pack(len(key_spec)), key_spec)
    prologue = b"".join(parts)
    payload = _PAYLOAD.pack(body_size, padded_size, len(private_header)) + private_header
    handshake = write_handshake(
        NOISE_X_AESGCM_SHA256,
        prologue,
        _static_secrets.of(sender),
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
        # Straight into the output: no per-chunk copies. The lists of slices live only for the
        # call, so no view of the buffer is left to make getvalue() copy.
        handshake.cipher.encrypt_all_into(
            _plaintext_chunks(body, padded_size), _slices(out[head_size:], _CHUNK_WIRE_SIZE)
        )
    return output.getvalue()


def _slices(buffer: memoryview, size: int) -> list[memoryview]:
    """``buffer`` cut into consecutive slices of ``size`` bytes, the last one possibly shorter."""
    return [buffer[start : start + size] for start in range(0, len(buffer), size)]


def _plaintext_chunks(body: bytes, padded_size: int) -> list[bytes | memoryview]:
    """The chunks of ``body`` padded with zeros to ``padded_size``: views of the body and of a
    zero chunk, and one copy only, of the chunk that straddles the end of the body."""
    body_size = len(body)
    plaintext = memoryview(body)
    whole = body_size - body_size % CHUNK_PLAINTEXT_SIZE  # where the last whole chunk ends
    chunks: list[bytes | memoryview] = [
        plaintext[start : start + CHUNK_PLAINTEXT_SIZE]
        for start in range(0, whole, CHUNK_PLAINTEXT_SIZE)
    ]
    padding_from = whole
    if whole < body_size:
        padding_from = min(whole + CHUNK_PLAINTEXT_SIZE, padded_size)
        tail = plaintext[whole:]
        chunks.append(
            tail if padding_from == body_size else bytes(tail) + bytes(padding_from - body_size)
        )
    chunks += [
        _ZERO_CHUNK[: min(CHUNK_PLAINTEXT_SIZE, padded_size - start)]
        for start in range(padding_from, padded_size, CHUNK_PLAINTEXT_SIZE)
    ]
    return chunks


def _malformed(problem: str) -> MailFormatError:
    return MailFormatError(f"malformed mail: {problem}")


def _parse_header(data: bytes, max_size: int) -> tuple[str, int, bytes, bytes | None, int]:
    """Topic, sequence number, envelope, key spec and where the prologue ends. Plain struct
    reads and no MailHeader: this is on the hot path."""
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
    key_spec = None
    if flags:  # KEY_SPEC_FLAG, the only one known
        if size < offset + 4:
            raise _malformed("truncated before the key spec")
        (key_spec_size,) = _U32.unpack_from(data, offset)
        if not 0 < key_spec_size <= MAX_KEY_SPEC_SIZE:
            raise _malformed(f"key spec of {key_spec_size} bytes (1 to {MAX_KEY_SPEC_SIZE})")
        offset += 4 + key_spec_size
        if size < offset:
            raise _malformed("truncated in the key spec")
        key_spec = bytes(data[offset - key_spec_size : offset])
    return topic, sequence_number, envelope, key_spec, offset


def read_mail_header(data: bytes, max_size: int = DEFAULT_MAX_MAIL_SIZE) -> MailHeader:
    """Parse the plaintext part of a mail without decrypting it (what a host can see).

    Nothing here is authenticated until the mail is opened by its recipient.
    """
    return MailHeader(*_parse_header(data, max_size)[:4])


def open_mail(
    recipient: Curve25519PrivateKey, data: bytes, max_size: int = DEFAULT_MAX_MAIL_SIZE
) -> EnclaveMail:
    """Decrypt and authenticate a mail sealed for ``recipient``.

    Raises :class:`MailFormatError` for malformed bytes and :class:`MailDecryptionError` for
    mail sealed to another key or altered in transit.
    """
    topic, sequence_number, envelope, key_spec, offset = _parse_header(data, max_size)
    size = len(data)
    prologue = bytes(data[:offset])  # no copy beyond the slice's when data is bytes
    if size < offset + 2:
        raise _malformed("truncated before the handshake")
    (handshake_size,) = _U16.unpack_from(data, offset)
    offset += 2
    if handshake_size < _HANDSHAKE_SIZE:
        raise _malformed(f"handshake of {handshake_size} bytes is too short")
    if size < offset + handshake_size:
        raise _malformed("truncated in the handshake")
    message = bytes(data[offset : offset + handshake_size])
    offset += handshake_size
    result = read_handshake(NOISE_X_AESGCM_SHA256, prologue, _static_secrets.of(recipient), message)

    payload = result.payload
    body_size, padded_size, private_size = _PAYLOAD.unpack_from(payload)
    if _PAYLOAD.size + private_size != len(payload):
        raise MailFormatError("malformed mail payload: private header length is inconsistent")
    if body_size > padded_size:
        raise MailFormatError("malformed mail payload: body longer than its padded size")
    if size - offset != _body_wire_size(padded_size):
        raise MailFormatError(
            f"mail body is {size - offset} bytes but its authenticated size says "
            f"{_body_wire_size(padded_size)}: the mail was truncated or extended in transit"
        )

    view = memoryview(data)  # the body is decrypted from where it lies, not from a copy
    if padded_size <= CHUNK_PLAINTEXT_SIZE:  # one chunk (or none): decrypted to its own bytes
        body = result.cipher.decrypt(b"", view[offset:]) if padded_size else b""
        if body_size < padded_size:
            body = body[:body_size]
    else:
        output = _output(padded_size)
        with output.getbuffer() as out:  # the slices live only for the call, as in seal_mail
            result.cipher.decrypt_all_into(
                _slices(view[offset:], _CHUNK_WIRE_SIZE), _slices(out, CHUNK_PLAINTEXT_SIZE)
            )
        output.truncate(body_size)
        body = output.getvalue()
    return EnclaveMail(  # positional: ~0.2 µs less than by keyword
        body,
        envelope,
        topic,
        sequence_number,
        Curve25519PublicKey(result.remote_static),
        payload[_PAYLOAD.size :],
        key_spec,
    )
