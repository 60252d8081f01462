"""The auctioneer: opens the auction (the first client to do so is the auctioneer) and closes
it, which sends every bidder the winner and the price.

    python auctioneer.py URL IDENTITY_FILE open --constraint C
    python auctioneer.py URL IDENTITY_FILE close

Prints ``opened by KEY`` and ``winner KEY price AMOUNT``; ``refused: WHY`` with exit status 3.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from auction_client import command, describe, session

from sanctorum import SanctorumError

REFUSED = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Open or close the sealed-bid auction.")
    parser.add_argument("url", help="the web host, for example http://localhost:8080")
    parser.add_argument("identity", type=Path, help="the file the auctioneer's client is kept in")
    parser.add_argument("--constraint", help="what the enclave must be (needed on first use)")
    parser.add_argument("action", choices=["open", "close"])
    arguments = parser.parse_args(argv)
    try:
        with session(arguments.url, arguments.identity, arguments.constraint) as client:
            answer = command(client, {arguments.action: True})
    except SanctorumError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if "refused" in answer or "error" in answer:
        print(f"refused: {answer.get('refused') or answer.get('error')}")
        return REFUSED
    if arguments.action == "open":
        print(f"opened by {answer['auctioneer']}")
    else:
        print(describe(answer, client))
    return 0


if __name__ == "__main__":
    sys.exit(main())
