"""Mail commands: what an enclave asks its host to do after each call (DESIGN §8)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

HostCallback = Callable[[bytes], bytes | None]
"""Serves the enclave's ``call_untrusted_host`` during one ``call_enclave``."""


@dataclass(frozen=True)
class PostMail:
    """Deliver ``mail`` (already encrypted) to whoever ``routing_hint`` names."""

    mail: bytes
    routing_hint: str | None


@dataclass(frozen=True)
class StoreSealedState:
    """Keep ``blob`` (part of the enclave's sealed persistent state) and hand what you keep
    back at the next start.

    A **snapshot** holds the whole state: keep it and drop every blob you kept before. Any
    other blob is a **journal record** of one commit's changes: append it. Start the enclave
    with the latest snapshot followed by the records stored after it, in order
    (``EnclaveHost.sealed_state`` keeps exactly that). Persist each in the same transaction as
    the mail the same call posted. ``EnclaveHost`` passes the commands of successive commits to
    ``on_mail_commands`` in commit order, one call at a time.
    """

    blob: bytes
    commit_number: int
    """Counts the enclave's commits (across restarts): each is one more than the last."""
    snapshot: bool = True
    """True: the whole state (replace what you keep); False: a journal record (append it)."""


MailCommand = PostMail | StoreSealedState
"""Every kind of mail command."""
