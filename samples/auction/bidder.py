"""A bidder: each run is one process with the client saved in IDENTITY_FILE.

    python bidder.py URL IDENTITY_FILE bid AMOUNT [--constraint C]   # C needed on first use
    python bidder.py URL IDENTITY_FILE result [--wait SECONDS]

``bid`` prints ``accepted AMOUNT (N bids)`` or ``refused: WHY`` (exit status 3). ``result``
waits for the enclave's notice and prints ``winner KEY price AMOUNT`` (exit status 4 if none
came in time).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from auction_client import command, describe, session, wait_for_result

from sanctorum import SanctorumError

REFUSED = 3
NO_RESULT = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Take part in the sealed-bid auction.")
    parser.add_argument("url", help="the web host, for example http://localhost:8080")
    parser.add_argument("identity", type=Path, help="the file this bidder's client is kept in")
    parser.add_argument("--constraint", help="what the enclave must be (needed on first use)")
    actions = parser.add_subparsers(dest="action", required=True)
    bid = actions.add_parser("bid", help="place or raise a bid")
    bid.add_argument("amount", type=int)
    result = actions.add_parser("result", help="wait for the winner and the price")
    result.add_argument("--wait", type=float, default=30.0, help="seconds to wait (30)")
    arguments = parser.parse_args(argv)
    try:
        with session(arguments.url, arguments.identity, arguments.constraint) as client:
            if arguments.action == "bid":
                answer = command(client, {"bid": arguments.amount})
                if "accepted" not in answer:
                    print(f"refused: {answer.get('refused') or answer.get('error')}")
                    return REFUSED
                print(f"accepted {answer['accepted']} ({answer['bids']} bids)")
                print(f"auctioneer {answer['auctioneer']}")
                return 0
            outcome = wait_for_result(client, arguments.wait)
            if outcome is None:
                print(f"no result within {arguments.wait} s: the auction may still be open")
                return NO_RESULT
            print(describe(outcome, client))
            return 0
    except SanctorumError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
