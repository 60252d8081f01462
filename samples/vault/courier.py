"""Carries mail from the vault's host to the worker's: the vault addresses the secret's mail
to the worker instance and routes it ``to-worker``; this takes each such mail from the vault's
host and delivers it to the worker's. It reads nothing: the mail is sealed to the worker.

    python courier.py VAULT_URL WORKER_URL [--wait SECONDS]

Carries what is waiting, then waits up to SECONDS (default 0) for more; prints ``carried N``.
"""

from __future__ import annotations

import argparse
import sys
import time

from sanctorum import SanctorumError, WebTransport

WORKER_ROUTE = "to-worker"
FROM_VAULT = "from-vault"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Carry the vault's mail to the worker.")
    parser.add_argument("vault_url")
    parser.add_argument("worker_url")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for mail (0)")
    arguments = parser.parse_args(argv)
    carried, acknowledge = 0, None
    deadline = time.monotonic() + arguments.wait
    try:
        with (
            WebTransport(arguments.vault_url) as vault,
            WebTransport(arguments.worker_url) as worker,
        ):
            while True:
                received = vault.poll_mail(WORKER_ROUTE, acknowledge)
                if received is None:
                    acknowledge = None
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.2)
                    continue
                worker.deliver_mail(received.mail, FROM_VAULT, None)
                carried += 1
                acknowledge = received.mail_id  # taken off the vault's host at the next poll
    except SanctorumError as error:
        print(f"carried {carried}; error: {error}", file=sys.stderr)
        return 1
    print(f"carried {carried}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
