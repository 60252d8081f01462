"""The fields the enclave runtime hides inside each reply it seals (DESIGN §7, §9).

Rollback detection: every mail an enclave with persistent state sends to a client carries the id
of the commit that will record it, and the id of the last commit the enclave believes it told
that client about. A client that last heard of another commit is talking to an enclave that was
restarted from older state.
"""

from __future__ import annotations

from dataclasses import dataclass

from sanctorum.common.errors import MailFormatError

COMMIT_ID_SIZE = 16
_VERSION = 1
_SIZE = 1 + COMMIT_ID_SIZE + 1 + COMMIT_ID_SIZE


@dataclass(frozen=True)
class CommitHeader:
    commit_id: bytes
    """The commit this mail is part of."""
    last_told: bytes | None
    """The last commit the enclave told this client about before this mail (None: none)."""

    def encode(self) -> bytes:
        previous = self.last_told
        return (
            bytes([_VERSION])
            + self.commit_id
            + (b"\x01" + previous if previous is not None else bytes(1 + COMMIT_ID_SIZE))
        )

    @classmethod
    def decode(cls, data: bytes) -> CommitHeader | None:
        """The header in a mail's private header, or None if the enclave sent none."""
        if not data:
            return None
        if len(data) != _SIZE or data[0] != _VERSION or data[17] not in (0, 1):
            raise MailFormatError("the mail's private header is malformed")
        previous = data[18:] if data[17] else None
        return cls(data[1:17], previous)
