"""What bidders and the auctioneer share: a client kept in an identity file, and the commands.

Each run of ``bidder.py`` or ``auctioneer.py`` is a separate process. It opens its client from
the identity file (``EnclaveClient.open``) and talks to the web host through a fresh
``WebTransport``; the client saves itself to the file as it goes, so the next run continues the
same conversation: same key, same request counters, same acknowledgements. The file holds the
client's private key; it is written atomically and readable by its owner only.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from auction_enclave import COMMAND_TOPIC, RESULT_TOPIC

from sanctorum import ClientStateError, EnclaveClient, WebTransport


@contextlib.contextmanager
def session(url: str, identity: Path, constraint: str | None = None) -> Iterator[EnclaveClient]:
    """A started client for the host at ``url``, kept in ``identity``: created there if the file
    does not exist (``constraint`` needed), restored if it does. The client saves itself to the
    file before every delivery and after every call, so a run killed at any moment leaves a
    state the next run goes on from."""
    try:
        client = EnclaveClient.open(identity, constraint)
    except ClientStateError as error:
        raise SystemExit(str(error)) from None
    with WebTransport(url) as transport:
        client.start(transport)  # checks the attestation against the constraint
        yield client


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
