"""Mail commands: what an enclave asks its host to do after each call (DESIGN §8)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PostMail:
    """Deliver ``mail`` (already encrypted) to whoever ``routing_hint`` names."""

    mail: bytes
    routing_hint: str | None


MailCommand = PostMail
"""Every kind of mail command; persistence adds "store sealed state" later."""
