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
enclave restarted from older state (rollback detection). It also names the state's lineage (a
random id made with the state): a client of a cluster, whose instances each have their own
state, checks each lineage's commits apart.

Encoding: version (1 byte), flags (1 byte), then the fields the flags name, in this order::

    request   number u64 | nonce (16)        flag 0x01
    answers   number u64 | nonce (16)        flag 0x02
    commit    commit id (16)                 flag 0x04
    last told commit id (16)                 flag 0x08 (only with commit)
    lineage   lineage id (16)                flag 0x10 (only with commit)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sanctorum.common.errors import MailFormatError

COMMIT_ID_SIZE = 16
NONCE_SIZE = 16
_VERSION = 2
_REQUEST, _ANSWERS, _COMMIT, _LAST_TOLD, _LINEAGE = 0x01, 0x02, 0x04, 0x08, 0x10


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
    lineage: bytes | None = None
    """The lineage of the state the commit belongs to (with ``commit_id`` only)."""

    def encode(self) -> bytes:
        flags = (
            (_REQUEST if self.request is not None else 0)
            | (_ANSWERS if self.answers is not None else 0)
            | (_COMMIT if self.commit_id is not None else 0)
            | (_LAST_TOLD if self.commit_id is not None and self.last_told is not None else 0)
            | (_LINEAGE if self.commit_id is not None and self.lineage is not None else 0)
        )
        values: list[object] = [_VERSION, flags]
        for request_id in (self.request, self.answers):
            if request_id is not None:
                values += (request_id.number, request_id.nonce)
        if self.commit_id is not None:
            values.append(self.commit_id)
            if self.last_told is not None:
                values.append(self.last_told)
            if self.lineage is not None:
                values.append(self.lineage)
        return _LAYOUTS[flags].pack(*values)

    @classmethod
    def decode(cls, data: bytes) -> ConversationHeader:
        """The header in a mail's private header (empty data: no fields)."""
        if not data:
            return _EMPTY
        if len(data) < 2 or data[0] != _VERSION:
            raise MailFormatError("the mail's private header is malformed or of another version")
        layout = _LAYOUTS.get(data[1])
        if layout is None:
            raise MailFormatError("the mail's private header has unknown or inconsistent flags")
        if len(data) != layout.size:
            raise MailFormatError("the mail's private header has the wrong length")
        flags = data[1]
        values = iter(layout.unpack(data)[2:])
        request = RequestId(next(values), next(values)) if flags & _REQUEST else None
        answers = RequestId(next(values), next(values)) if flags & _ANSWERS else None
        commit_id = next(values) if flags & _COMMIT else None
        last_told = next(values) if flags & _LAST_TOLD else None
        lineage = next(values) if flags & _LINEAGE else None
        return cls(request, answers, commit_id, last_told, lineage)


def _layout(flags: int) -> struct.Struct:
    fields = ">BB"
    fields += f"Q{NONCE_SIZE}s" * ((flags & _REQUEST > 0) + (flags & _ANSWERS > 0))
    fields += f"{COMMIT_ID_SIZE}s" * (
        (flags & _COMMIT > 0) + (flags & _LAST_TOLD > 0) + (flags & _LINEAGE > 0)
    )
    return struct.Struct(fields)


# One struct per valid combination of flags: every header is read and written in one step.
_LAYOUTS = {
    flags: _layout(flags)
    for flags in range(32)
    if flags & _COMMIT or not flags & (_LAST_TOLD | _LINEAGE)
}

_EMPTY = ConversationHeader()
