"""A party pooling training rows: each run is one process, its client kept in IDENTITY_FILE.

    python contributor.py URL IDENTITY_FILE train ROWS.csv --parties N [--constraint C]
    python contributor.py URL IDENTITY_FILE predict ROWS.csv
    python contributor.py URL IDENTITY_FILE status [--wait SECONDS]

A CSV file holds one row per line, numbers only (a first line that is not numbers is taken as
a header); to train, its last column is the label, 0 or 1. ``train`` prints ``waiting K`` or
``trained SUMMARY``; ``predict`` prints one probability per row; ``status --wait`` waits until
the model is trained. ``refused: WHY`` exits with status 3, no model within the wait with status
4. (``--constraint`` is needed on first use.)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

from ml_enclave import COMMAND_TOPIC, TRAINED_TOPIC

from sanctorum import ClientStateError, EnclaveClient, SanctorumError, WebTransport

REFUSED = 3
NOT_TRAINED = 4


def read_rows(path: Path) -> list[list[float]]:
    """The CSV file's rows as numbers, a header line skipped."""
    with path.open(newline="") as file:
        lines = [line for line in csv.reader(file) if line]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append([float(cell) for cell in line])
        except ValueError:
            if number == 1:
                continue  # a header
            raise SystemExit(f"{path}:{number}: not a row of numbers: {line}") from None
    return rows


def _command(client: EnclaveClient, message: dict[str, Any]) -> dict[str, Any]:
    reply = client.send_mail(json.dumps(message).encode(), topic=COMMAND_TOPIC)
    if reply is None:
        raise RuntimeError("the enclave did not answer")
    answer: dict[str, Any] = json.loads(reply.body)
    return answer


def _show(answer: dict[str, Any]) -> int:
    if "waiting" in answer:
        print(f"waiting {answer['waiting']}")
    elif "trained" in answer:
        print(f"trained {json.dumps(answer['trained'], sort_keys=True)}")
    elif "probabilities" in answer:
        print("\n".join(f"{p:.6f}" for p in answer["probabilities"]))
    else:
        print(f"refused: {answer.get('refused') or answer.get('error')}")
        return REFUSED
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pool training rows; ask for predictions.")
    parser.add_argument("url", help="the web host, for example http://localhost:8080")
    parser.add_argument("identity", type=Path, help="the file this party's client is kept in")
    parser.add_argument("--constraint", help="what the enclave must be (needed on first use)")
    actions = parser.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="submit this party's labelled rows, once")
    train.add_argument("rows", type=Path, help="CSV: features, then the label (0 or 1)")
    train.add_argument("--parties", type=int, required=True, help="how many take part")
    predict = actions.add_parser("predict", help="probabilities that each row's label is 1")
    predict.add_argument("rows", type=Path, help="CSV: features")
    status = actions.add_parser("status", help="whether the model is trained")
    status.add_argument("--wait", type=float, default=0.0, help="seconds to wait for it (0)")
    arguments = parser.parse_args(argv)
    try:
        client = EnclaveClient.open(arguments.identity, arguments.constraint)
    except ClientStateError as error:
        raise SystemExit(str(error)) from None
    try:
        with WebTransport(arguments.url) as transport:
            client.start(transport)  # checks the enclave's attestation first
            if arguments.action == "train":
                rows = read_rows(arguments.rows)
                data = {"rows": [row[:-1] for row in rows], "labels": [int(r[-1]) for r in rows]}
                return _show(_command(client, {"train": data, "parties": arguments.parties}))
            if arguments.action == "predict":
                return _show(_command(client, {"predict": read_rows(arguments.rows)}))
            deadline = time.monotonic() + arguments.wait
            while True:
                while (mail := client.poll_mail()) is not None:
                    if mail.topic == TRAINED_TOPIC:
                        return _show(json.loads(mail.body))
                answer = _command(client, {"status": True})
                if "waiting" not in answer or time.monotonic() >= deadline:
                    code = _show(answer)
                    return NOT_TRAINED if "waiting" in answer else code
                time.sleep(0.2)
    except SanctorumError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
