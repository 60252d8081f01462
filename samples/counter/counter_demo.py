"""A value that survives an enclave restart.

Run with ``python samples/counter/counter_demo.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from sanctorum import EnclaveClient, EnclaveHost, InProcessTransport
from sanctorum.build import build

PROJECT = Path(__file__).parent


def count_once(client: EnclaveClient) -> int:
    reply = client.send_mail(b"+1")
    if reply is None:
        raise RuntimeError("the enclave did not reply")
    return int(reply.body)


def main() -> int:
    with tempfile.TemporaryDirectory() as output:
        built = build(PROJECT, Path(output))
        constraint = f"C:{built.code_hash} SEC:INSECURE"
        with EnclaveHost.load(built.path).start() as host:
            client = EnclaveClient(constraint)
            client.start(InProcessTransport(host))
            counts = [count_once(client) for _ in range(3)]
            print(f"before the restart the enclave counted {counts}")
            sealed = host.sealed_state
        print(f"the host keeps {len(sealed or b'')} bytes of sealed state it cannot read")
        with EnclaveHost.load(built.path).start(sealed_state=sealed) as host:
            client.start(InProcessTransport(host))  # new enclave instance: attest again
            after = count_once(client)
            print(f"after the restart the next count is {after}")
    return 0 if counts == [1, 2, 3] and after == 4 else 1


if __name__ == "__main__":
    sys.exit(main())
