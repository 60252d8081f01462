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
    """Keep ``blob`` (the enclave's sealed persistent state) and hand it back at the next start.

    Persist it in the same transaction as the mail posted by the same call. Keep the blob with
    the highest ``commit_number``: calls made from several threads can return, and reach your
    code, in another order than the enclave committed them, and an older blob than the newest
    one does not go with the enclave's filesystem file.
    """

    blob: bytes
    commit_number: int
    """Counts the enclave's commits (across restarts): higher is newer."""


MailCommand = PostMail | StoreSealedState
"""Every kind of mail command."""
