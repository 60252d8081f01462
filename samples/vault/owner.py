"""The vault's owner: each run is one process, its client kept in IDENTITY_FILE.

    python owner.py VAULT_URL IDENTITY_FILE deposit SECRET [--constraint C]
    python owner.py VAULT_URL IDENTITY_FILE release WORKER_URL --worker-constraint C
    python owner.py VAULT_URL IDENTITY_FILE audit

``release`` fetches the worker's attestation from its host, checks it against the worker
constraint here, and asks the vault to release the secret to that instance (the vault checks it
again, inside itself). Prints the vault's answer as JSON; a refusal exits with status 3.
(``--constraint``, the vault's, is needed on first use.)
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

from sanctorum import (
    ClientStateError,
    EnclaveClient,
    EnclaveConstraint,
    EnclaveInstanceInfo,
    SanctorumError,
    WebTransport,
)

OWNER_TOPIC = "vault"
REFUSED = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Deposit a secret; release it to a worker.")
    parser.add_argument("url", help="the vault's web host, for example http://localhost:8080")
    parser.add_argument("identity", type=Path, help="the file the owner's client is kept in")
    parser.add_argument("--constraint", help="what the vault must be (needed on first use)")
    actions = parser.add_subparsers(dest="action", required=True)
    deposit = actions.add_parser("deposit", help="put the secret in the vault (once)")
    deposit.add_argument("secret")
    release = actions.add_parser("release", help="have the vault send it to a worker")
    release.add_argument("worker_url", help="the worker's web host")
    release.add_argument("--worker-constraint", required=True, help="what the worker must be")
    actions.add_parser("audit", help="which worker instances were sent the secret")
    arguments = parser.parse_args(argv)
    try:
        client = EnclaveClient.open(arguments.identity, arguments.constraint)
    except ClientStateError as error:
        raise SystemExit(str(error)) from None
    try:
        if arguments.action == "deposit":
            command: dict[str, object] = {"deposit": arguments.secret}
        elif arguments.action == "release":
            with WebTransport(arguments.worker_url) as worker_host:
                attestation = worker_host.get_attestation()
            constraint = EnclaveConstraint.parse(arguments.worker_constraint)
            constraint.check(EnclaveInstanceInfo.deserialize(attestation))  # the owner's check
            command = {"release_to": base64.b64encode(attestation).decode()}
        else:
            command = {"audit": True}
        with WebTransport(arguments.url) as transport:
            client.start(transport)  # checks the vault's attestation first
            reply = client.send_mail(json.dumps(command).encode(), topic=OWNER_TOPIC)
    except SanctorumError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if reply is None:
        print("error: the vault did not answer", file=sys.stderr)
        return 1
    answer = json.loads(reply.body)
    print(json.dumps(answer, sort_keys=True))
    return REFUSED if "refused" in answer or "error" in answer else 0


if __name__ == "__main__":
    sys.exit(main())
