"""The fields Sanctorum hides inside a mail's encryption (DESIGN §7, §7a, §9).

A client's **request** names itself: a per-topic request number the client persists and a
random nonce, both kept when the request is resent (to the same or a restarted enclave). An
enclave with a persistent map records the last request it applied per (client, topic) in the
same commit as the request's effects, so a resend is answered from that record instead of being
applied again.

The enclave's **answer** to a request names the request it answers, so a client accepts it only
as the answer to that request. Every mail an enclave with persistent state seals to a client
also carries the id of the commit that records it and the id of the last commit the enclave
believes it told that client about: a client that last heard of another commit is talking to an
enclave restarted from older state (rollback detection).

Encoding: version (1 byte), flags (1 byte), then the fields the flags name, in this order::

    request   number u64 | nonce (16)        flag 0x01
    answers   number u64 | nonce (16)        flag 0x02
    commit    commit id (16)                 flag 0x04
    last told commit id (16)                 flag 0x08 (only with commit)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sanctorum.common.errors import MailFormatError

COMMIT_ID_SIZE = 16
NONCE_SIZE = 16
_VERSION = 2
_REQUEST, _ANSWERS, _COMMIT, _LAST_TOLD = 0x01, 0x02, 0x04, 0x08
_ID = struct.Struct(f">Q{NONCE_SIZE}s")
_REQUEST_ONLY = struct.Struct(f">BBQ{NONCE_SIZE}s")
_REQUEST_ONLY_PREFIX = bytes([_VERSION, _REQUEST])


@dataclass(frozen=True)
class RequestId:
    """Which request a mail is, stable across resends: (per-topic number, random nonce)."""

    number: int
    nonce: bytes


@dataclass(frozen=True)
class ConversationHeader:
    request: RequestId | None = None
    """Set on a client's request."""
    answers: RequestId | None = None
    """Set on the enclave's answer to a request."""
    commit_id: bytes | None = None
    """The commit this mail is part of (enclaves with persistent state)."""
    last_told: bytes | None = None
    """The last commit the enclave told this client about before this mail (None: none)."""

    def encode(self) -> bytes:
        if self.answers is None and self.commit_id is None and self.request is not None:
            return _REQUEST_ONLY.pack(_VERSION, _REQUEST, self.request.number, self.request.nonce)
        flags = 0
        parts = [b""]
        for flag, value in ((_REQUEST, self.request), (_ANSWERS, self.answers)):
            if value is not None:
                flags |= flag
                parts.append(_ID.pack(value.number, value.nonce))
        if self.commit_id is not None:
            flags |= _COMMIT
            parts.append(self.commit_id)
            if self.last_told is not None:
                flags |= _LAST_TOLD
                parts.append(self.last_told)
        parts[0] = bytes([_VERSION, flags])
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> ConversationHeader:
        """The header in a mail's private header (empty data: no fields)."""
        if not data:
            return _EMPTY
        if len(data) == _REQUEST_ONLY.size and data[:2] == _REQUEST_ONLY_PREFIX:
            # The shape of every client request: on each delivery, so read in one step.
            number, nonce = _ID.unpack_from(data, 2)
            return cls(request=RequestId(number, nonce))
        if len(data) < 2 or data[0] != _VERSION:
            raise MailFormatError("the mail's private header is malformed or of another version")
        flags = data[1]
        if flags & ~0x0F or (flags & _LAST_TOLD and not flags & _COMMIT):
            raise MailFormatError("the mail's private header has unknown or inconsistent flags")
        offset = 2
        ids: list[RequestId | None] = []
        for flag in (_REQUEST, _ANSWERS):
            if flags & flag:
                if len(data) < offset + _ID.size:
                    raise MailFormatError("the mail's private header is truncated")
                number, nonce = _ID.unpack_from(data, offset)
                ids.append(RequestId(number, nonce))
                offset += _ID.size
            else:
                ids.append(None)
        commits: list[bytes | None] = []
        for flag in (_COMMIT, _LAST_TOLD):
            if flags & flag:
                commits.append(bytes(data[offset : offset + COMMIT_ID_SIZE]))
                offset += COMMIT_ID_SIZE
            else:
                commits.append(None)
        if offset != len(data):
            raise MailFormatError("the mail's private header has the wrong length")
        return cls(ids[0], ids[1], commits[0], commits[1])


_EMPTY = ConversationHeader()
