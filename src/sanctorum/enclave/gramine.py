"""The enclave side of SGX under Gramine: quotes and sealing keys from ``/dev/attestation``.

Inside an SGX enclave, Gramine exposes the hardware through pseudo-files: write 64 bytes of
report data to ``user_report_data``, read the DCAP quote from ``quote`` (at most 8,192 bytes,
only when ``attestation_type`` is ``dcap``), and read 16-byte sealing keys from
``keys/_sgx_mrenclave`` and ``keys/_sgx_mrsigner``. The directory is a parameter, so tests run
this code against a fake one and check exactly what it writes and reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sanctorum.attestation.dcap import DCAP_EVIDENCE_TYPE, encode_dcap_evidence
from sanctorum.attestation.evidence import REPORT_DATA_SIZE
from sanctorum.common.errors import EnclaveLoadError
from sanctorum.enclave.sealing import SealingPolicy

ATTESTATION_DIR = Path("/dev/attestation")
MAX_QUOTE_SIZE = 8192
_SEALING_KEY_FILES = {
    SealingPolicy.CODE_HASH: "_sgx_mrenclave",
    SealingPolicy.SIGNER: "_sgx_mrsigner",
}

CollateralSource = Callable[[bytes], "dict[str, Any] | str"]


class GramineAttestation:
    """Evidence provider and platform secret for an enclave running under ``gramine-sgx``.

    ``collateral_for`` returns the DCAP collateral for a quote; the host fetches it (the
    enclave trusts it no more than clients do: clients verify it against Intel's root).
    """

    evidence_type = DCAP_EVIDENCE_TYPE

    def __init__(self, collateral_for: CollateralSource, directory: Path = ATTESTATION_DIR) -> None:
        self._collateral_for = collateral_for
        self._directory = directory
        kind_file = directory / "attestation_type"
        try:
            kind = kind_file.read_text().strip()
        except OSError as error:
            raise EnclaveLoadError(
                f"{kind_file} cannot be read ({error}): this process is not an SGX enclave "
                "under Gramine"
            ) from None
        if kind != "dcap":
            raise EnclaveLoadError(
                f"Gramine's attestation type is {kind!r}, not 'dcap': set "
                'sgx.remote_attestation = "dcap" in the manifest'
            )

    def produce(self, report_data: bytes) -> bytes:
        """A DCAP quote over ``report_data``, with its collateral."""
        if len(report_data) != REPORT_DATA_SIZE:
            raise ValueError(f"report data is {REPORT_DATA_SIZE} bytes")
        (self._directory / "user_report_data").write_bytes(report_data)
        quote = (self._directory / "quote").read_bytes()
        if not quote or len(quote) > MAX_QUOTE_SIZE:
            raise EnclaveLoadError(f"Gramine returned a quote of {len(quote)} bytes")
        return encode_dcap_evidence(quote, self._collateral_for(quote))

    def platform_secret(self, policy: SealingPolicy) -> bytes:
        """The CPU's sealing key for ``policy`` (16 bytes, from Gramine)."""
        path = self._directory / "keys" / _SEALING_KEY_FILES[policy]
        key = path.read_bytes()
        if len(key) != 16:
            raise EnclaveLoadError(f"{path} holds {len(key)} bytes, not a 16-byte sealing key")
        return key


COLLATERAL_REQUEST = b"sanctorum:collateral\0"


class GramineChildPlatform:
    """The enclave process inside SGX: runs the bundle Gramine measured, attests with DCAP."""

    modes: tuple[str, ...] = ("debug", "release")

    def __init__(self, bundle_path: Path, directory: Path = ATTESTATION_DIR) -> None:
        self._bundle_path = bundle_path
        self._directory = directory

    def bundle_bytes(self, sent: bytes) -> bytes:
        # The trusted file SGX measured into MRENCLAVE, not what the host sent.
        return self._bundle_path.read_bytes()

    def attestation(
        self, bundle: object, call_host: Callable[[bytes], bytes | None]
    ) -> tuple[GramineAttestation, Callable[[SealingPolicy], bytes]]:
        def collateral_for(quote: bytes) -> str:
            answer = call_host(COLLATERAL_REQUEST + quote)
            if not answer:
                raise EnclaveLoadError("the host sent no DCAP collateral for the quote")
            return answer.decode("utf-8", "replace")

        gramine = GramineAttestation(collateral_for, self._directory)
        return gramine, gramine.platform_secret


def main(argv: list[str]) -> int:
    """``python -m sanctorum.enclave.gramine BUNDLE``: the entry point the manifest runs."""
    import os
    import socket
    import sys

    from sanctorum.enclave.child import EnclaveServer

    address = os.environ.get("SANCTORUM_HOST_ADDRESS", "")
    host, _, port = address.rpartition(":")
    if len(argv) != 2 or not port.isdigit():
        print(
            "usage: SANCTORUM_HOST_ADDRESS=host:port python -m sanctorum.enclave.gramine BUNDLE",
            file=sys.stderr,
        )
        return 2
    directory = Path(os.environ.get("SANCTORUM_ATTESTATION_DIR", str(ATTESTATION_DIR)))
    with socket.create_connection((host, int(port))) as connection:
        EnclaveServer(connection, GramineChildPlatform(Path(argv[1]), directory)).serve()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv))
