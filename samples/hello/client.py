"""The hello client: verifies the enclave, then has it reverse some strings."""

from __future__ import annotations

from collections.abc import Iterable

from sanctorum import EnclaveClient, EnclaveConstraint
from sanctorum.client import EnclaveTransport


def reverse_remotely(
    transport: EnclaveTransport, constraint: EnclaveConstraint, texts: Iterable[str]
) -> list[str]:
    """Send each text to the enclave and return the replies, in order."""
    client = EnclaveClient(constraint)
    client.start(transport)
    replies = []
    for text in texts:
        reply = client.send_mail(text.encode("utf-8"))
        if reply is None:
            raise RuntimeError("the enclave did not reply")
        replies.append(reply.body.decode("utf-8"))
    return replies
