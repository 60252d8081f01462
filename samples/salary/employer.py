"""An employer in the benchmark: each run is one process, its client kept in IDENTITY_FILE.

    python employer.py URL IDENTITY_FILE submit SALARY... --employers N [--constraint C]
    python employer.py URL IDENTITY_FILE result [--wait SECONDS]

Prints ``waiting K`` or the result as JSON; ``refused: WHY`` exits with status 3, no result
within the wait with status 4. (``--constraint`` is needed on first use.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from salary_enclave import COMMAND_TOPIC, RESULT_TOPIC

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
    if "waiting" in answer:
        print(f"waiting {answer['waiting']}")
    elif "median" in answer:
        print(json.dumps(answer, sort_keys=True))
    else:
        print(f"refused: {answer.get('refused') or answer.get('error')}")
        return REFUSED
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Take part in the salary benchmark.")
    parser.add_argument("url", help="the web host, for example http://localhost:8080")
    parser.add_argument("identity", type=Path, help="the file this employer's client is kept in")
    parser.add_argument("--constraint", help="what the enclave must be (needed on first use)")
    actions = parser.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit", help="submit this employer's salaries, once")
    submit.add_argument("salaries", nargs="+", type=int)
    submit.add_argument("--employers", type=int, required=True, help="how many take part")
    result = actions.add_parser("result", help="wait for the benchmark's result")
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
                message = {"submit": arguments.salaries, "employers": arguments.employers}
                return _show(_command(client, message))
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
