"""A party to the intersection: each run is one process, its client kept in IDENTITY_FILE.

    python party.py URL IDENTITY_FILE submit ITEM... [--constraint C]   # C needed on first use
    python party.py URL IDENTITY_FILE result [--wait SECONDS]

Prints ``waiting`` or ``shared: ITEM, ...`` (``shared: -`` for none); ``refused: WHY`` exits
with status 3, no result within the wait with status 4.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from psi_enclave import COMMAND_TOPIC, RESULT_TOPIC

from sanctorum import ClientStateError, EnclaveClient, SanctorumError, WebTransport

REFUSED = 3
NO_RESULT = 4


def _command(client: EnclaveClient, message: dict[str, Any]) -> dict[str, Any]:
    reply = client.send_mail(json.dumps(message).encode(), topic=COMMAND_TOPIC)
    if reply is None:
        raise RuntimeError("the enclave did not answer")
    answer: dict[str, Any] = json.loads(reply.body)
    return answer


def _show(answer: dict[str, Any]) -> int:
    if "shared" in answer:
        print("shared: " + (", ".join(answer["shared"]) or "-"))
        return 0
    if answer.get("waiting"):
        print("waiting")
        return 0
    print(f"refused: {answer.get('refused') or answer.get('error')}")
    return REFUSED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Take part in a private set intersection.")
    parser.add_argument("url", help="the web host, for example http://localhost:8080")
    parser.add_argument("identity", type=Path, help="the file this party's client is kept in")
    parser.add_argument("--constraint", help="what the enclave must be (needed on first use)")
    actions = parser.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit", help="submit this party's items, once")
    submit.add_argument("items", nargs="*")
    result = actions.add_parser("result", help="wait for the shared items")
    result.add_argument("--wait", type=float, default=30.0, help="seconds to wait (30)")
    arguments = parser.parse_args(argv)
    try:
        client = EnclaveClient.open(arguments.identity, arguments.constraint)
    except ClientStateError as error:
        raise SystemExit(str(error)) from None
    try:
        with WebTransport(arguments.url) as transport:
            client.start(transport)  # checks the enclave's attestation first
            if arguments.action == "submit":
                return _show(_command(client, {"submit": arguments.items}))
            deadline = time.monotonic() + arguments.wait
            while time.monotonic() < deadline:
                while (mail := client.poll_mail()) is not None:
                    if mail.topic == RESULT_TOPIC:
                        return _show(json.loads(mail.body))
                answer = _command(client, {"result": True})
                if "waiting" not in answer:
                    return _show(answer)
                time.sleep(0.2)
            print(f"no result within {arguments.wait} s")
            return NO_RESULT
    except SanctorumError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
