"""End-to-end demo: host the hello enclave, verify its attestation, exchange mail.

Run with ``make demo``.
"""

from __future__ import annotations

import sys

from client import reverse_remotely
from host import start_host

from sanctorum import EnclaveConstraint, InProcessTransport


def main() -> int:
    print("1/4 loading the hello enclave (mock mode) …")
    with start_host() as host:
        info = host.enclave_instance_info
        print(f"    code hash   {info.code_hash}")
        print(f"    signer hash {info.signer_hash}")
        print(f"    security    {info.security_info.summary.name}: {info.security_info.reason}")

        constraint = EnclaveConstraint.parse(f"C:{info.code_hash} SEC:INSECURE")
        print(f"2/4 client constraint: {constraint}")

        print("3/4 client verifies the attestation and sends mail …")
        texts = ["hello, enclave", "Sanctorum", "stressed"]
        replies = reverse_remotely(InProcessTransport(host), constraint, texts)
        for text, reply in zip(texts, replies, strict=True):
            print(f"    {text!r:>20} -> {reply!r}")
        if replies != [text[::-1] for text in texts]:
            print("FAILED: unexpected replies", file=sys.stderr)
            return 1
    print("4/4 done: every reply was verified as coming from the attested enclave")
    return 0


if __name__ == "__main__":
    sys.exit(main())
