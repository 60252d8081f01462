"""What bidders and the auctioneer share: a client kept in an identity file, and the commands.

Each run of ``bidder.py`` or ``auctioneer.py`` is a separate process. It restores its client
from the identity file (``EnclaveClient.restore``), talks to the web host through a fresh
``WebTransport``, and saves the client again (``save()``) before it exits, so the next run
continues the same conversation: same key, same request counters, same acknowledgements. The
file holds the client's private key; it is written atomically and readable by its owner only.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from auction_enclave import COMMAND_TOPIC, RESULT_TOPIC

from sanctorum import EnclaveClient, EnclaveConstraint, WebTransport


def load_client(identity: Path, constraint: str | None) -> EnclaveClient:
    """The client saved in ``identity``, or a new one for ``constraint`` if there is none."""
    try:
        data = identity.read_bytes()
    except FileNotFoundError:
        if constraint is None:
            raise SystemExit(
                f"{identity} does not exist yet: give --constraint to create it"
            ) from None
        return EnclaveClient(constraint)
    client = EnclaveClient.restore(data)
    if constraint is not None and EnclaveConstraint.parse(constraint) != client.constraint:
        raise SystemExit(f"--constraint differs from the one saved in {identity}")
    return client


def save_client(identity: Path, client: EnclaveClient) -> None:
    """Write the client to ``identity``: a temporary file beside it, then a rename, so a crash
    leaves the old state or the new one, never half of one."""
    handle, temporary = tempfile.mkstemp(dir=identity.parent, prefix=f".{identity.name}.")
    try:
        with os.fdopen(handle, "wb") as file:  # mkstemp made it 0600
            file.write(client.save())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, identity)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def session(url: str, identity: Path, constraint: str | None = None) -> Iterator[EnclaveClient]:
    """A started client for the host at ``url``, saved to ``identity`` when the block ends
    (also when it fails: a mail sent may have used a sequence number)."""
    client = load_client(identity, constraint)
    with WebTransport(url) as transport:
        client.start(transport)  # checks the attestation against the constraint
        try:
            yield client
        finally:
            save_client(identity, client)


def command(client: EnclaveClient, message: dict[str, Any]) -> dict[str, Any]:
    """Send one command to the enclave and return its answer."""
    reply = client.send_mail(json.dumps(message).encode(), topic=COMMAND_TOPIC)
    if reply is None:
        raise RuntimeError("the enclave did not answer")
    answer: dict[str, Any] = json.loads(reply.body)
    return answer


def wait_for_result(client: EnclaveClient, wait: float) -> dict[str, Any] | None:
    """The auction's result once the enclave mails it, or None after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        while (mail := client.poll_mail()) is not None:
            if mail.topic == RESULT_TOPIC:
                result: dict[str, Any] = json.loads(mail.body)
                return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def describe(result: dict[str, Any], me: EnclaveClient) -> str:
    if result["winner"] is None:
        return "no bids: nobody won"
    mine = " (you won)" if result["winner"] == me.public_key.encoded.hex() else ""
    return f"winner {result['winner']} price {result['price']}{mine}"
