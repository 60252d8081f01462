"""Someone who has the worker sign a text with the vault's secret, never seeing the secret.

    python user.py WORKER_URL IDENTITY_FILE sign TEXT [--owner KEY] [--constraint C]

Prints the HMAC-SHA256 (hex) and the key of the owner whose secret signed it; with ``--owner``,
a signature under anyone else's secret is refused (status 3). Exits with status 4 while the
worker has no secret yet. (``--constraint``, the worker's, is needed on first use.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sanctorum import ClientStateError, EnclaveClient, SanctorumError, WebTransport

SIGN_TOPIC = "sign"
OTHER_OWNER = 3
NO_SECRET = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Have the worker sign a text.")
    parser.add_argument("url", help="the worker's web host")
    parser.add_argument("identity", type=Path, help="the file this user's client is kept in")
    parser.add_argument("--constraint", help="what the worker must be (needed on first use)")
    actions = parser.add_subparsers(dest="action", required=True)
    sign = actions.add_parser("sign", help="HMAC-SHA256 of TEXT under the vault's secret")
    sign.add_argument("text")
    sign.add_argument("--owner", help="the owner's key (hex), as the vault gave it at deposit")
    arguments = parser.parse_args(argv)
    try:
        client = EnclaveClient.open(arguments.identity, arguments.constraint)
    except ClientStateError as error:
        raise SystemExit(str(error)) from None
    try:
        with WebTransport(arguments.url) as transport:
            client.start(transport)
            message = json.dumps({"sign": arguments.text}).encode()
            reply = client.send_mail(message, topic=SIGN_TOPIC)
    except SanctorumError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    answer = json.loads(reply.body) if reply is not None else {"error": "no answer"}
    if "hmac" in answer:
        if arguments.owner is not None and answer["owner"] != arguments.owner.lower():
            print(f"refused: signed with the secret of another owner, {answer['owner']}")
            return OTHER_OWNER
        print(f"{answer['hmac']} owner {answer['owner']}")
        return 0
    print(f"{'waiting' if 'waiting' in answer else 'error'}: {next(iter(answer.values()))}")
    return NO_SECRET if "waiting" in answer else 1


if __name__ == "__main__":
    sys.exit(main())
