"""End-to-end demo: build the hello enclave, run it in simulation mode, verify it, send mail.

Run with ``make demo``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from client import reverse_remotely
from host import build_enclave, start_host

from sanctorum import EnclaveConstraint, InProcessTransport


def main() -> int:
    with tempfile.TemporaryDirectory() as output:
        print("1/4 building the hello enclave bundle …")
        built = build_enclave(Path(output))
        print(f"    {built.path.name}: code hash {built.code_hash}")
        print(f"    {' ' * len(built.path.name)}  signer hash {built.signer_hash}")

        print("2/4 starting it in simulation mode (a separate enclave process) …")
        with start_host(built.path) as host:
            info = host.enclave_instance_info
            summary = info.security_info
            print(f"    attested: {info.enclave_mode.value}, {summary.summary.name}")

            # The client trusts the hash printed by the build, not what the host says.
            constraint = EnclaveConstraint.parse(f"C:{built.code_hash} SEC:INSECURE")
            print(f"3/4 client checks the attestation against {constraint}")
            texts = ["hello, enclave", "Sanctorum", "stressed"]
            replies = reverse_remotely(InProcessTransport(host), constraint, texts)
            for text, reply in zip(texts, replies, strict=True):
                print(f"    sent {text!r:>18}  got back {reply!r}")
            if replies != [text[::-1] for text in texts]:
                print("FAILED: unexpected replies", file=sys.stderr)
                return 1
    print("4/4 done: every reply was decrypted and authenticated as coming from the enclave")
    return 0


if __name__ == "__main__":
    sys.exit(main())
