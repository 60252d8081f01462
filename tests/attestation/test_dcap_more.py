"""More recorded DCAP sets: each must be refused, for the reason the set was kept for."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sanctorum.attestation.collateral import raw_json_member
from sanctorum.attestation.dcap import encode_dcap_evidence, verify_dcap_evidence
from sanctorum.common import InvalidEnclaveError

MORE = Path(__file__).resolve().parents[1] / "data" / "dcap-more"


def _collateral(
    folder: Path,
    *,
    tcb_info: str,
    qe_identity: str,
    tcb_chain: list[str] | str,
    pck_chain: list[str] | str,
    pck_crl: str,
    root_crl: str,
) -> str:
    """Assemble loose collateral files into the layout dcap-qvl reads (chains as PEM file
    names, or as PEM text)."""

    def chain(value: list[str] | str) -> str:
        if isinstance(value, str):
            return value
        return "".join((folder / name).read_text() for name in value)

    tcb_text = (folder / tcb_info).read_text()
    identity_text = (folder / qe_identity).read_text()
    tcb_signing_chain = chain(tcb_chain)
    return json.dumps(
        {
            "pck_crl_issuer_chain": chain(pck_chain),
            "root_ca_crl": (folder / root_crl).read_bytes().hex(),
            "pck_crl": (folder / pck_crl).read_bytes().hex(),
            "tcb_info_issuer_chain": tcb_signing_chain,
            "tcb_info": raw_json_member(tcb_text, "tcbInfo"),
            "tcb_info_signature": json.loads(tcb_text)["signature"],
            "qe_identity_issuer_chain": tcb_signing_chain,
            "qe_identity": raw_json_member(identity_text, "enclaveIdentity"),
            "qe_identity_signature": json.loads(identity_text)["signature"],
        }
    )


MOBILECOIN = MORE / "mobilecoin"
MOBILECOIN_COLLATERAL = _collateral(
    MOBILECOIN,
    tcb_info="fmspc_00906ED50000_2023_07_12.json",
    qe_identity="qe_identity.json",
    tcb_chain=["tcb_signer.pem", "root_ca.pem"],
    pck_chain=["processor_ca.pem", "root_ca.pem"],
    pck_crl="processor_crl.der",
    root_crl="root_crl.der",
)


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        ("2023-07-12T20:48:25Z", "Crl"),  # the set's own test time: its processor CRL expired
        ("2023-05-01T00:00:00Z", "TCB|Tcb"),  # CRL still valid: TCB info not issued yet
    ],
)
def test_mobilecoin_set_has_no_instant_where_all_collateral_is_valid(
    when: str, reason: str
) -> None:
    evidence = encode_dcap_evidence(
        (MOBILECOIN / "hw_quote.dat").read_bytes(), MOBILECOIN_COLLATERAL
    )
    at = datetime.fromisoformat(when.replace("Z", "+00:00")).astimezone(UTC)
    with pytest.raises(InvalidEnclaveError, match=f"(?s)verification failed.*({reason})"):
        verify_dcap_evidence(evidence, at)


def test_synthetic_quote_signed_by_a_test_root_is_refused() -> None:
    folder = MORE / "intel-qvl"
    collateral = _collateral(
        folder,
        tcb_info="tcbInfo.json",
        qe_identity="qeIdentity.json",
        tcb_chain=["tcbSignChain.pem"],
        pck_chain=["pckSignChain.pem"],
        pck_crl="intermediateCaCrl.der",
        root_crl="rootCaCrl.der",
    )
    evidence = encode_dcap_evidence((folder / "quote.dat").read_bytes(), collateral)
    # Its root CRL is not signed by the production Intel root that dcap-qvl pins.
    with pytest.raises(InvalidEnclaveError, match=r"(?s)verification failed.*root CA"):
        verify_dcap_evidence(evidence, datetime(2024, 1, 1, tzinfo=UTC))


AUTOMATA = MORE / "automata"


def _der_as_pem(name: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    certificate = x509.load_der_x509_certificate((AUTOMATA / name).read_bytes())
    return certificate.public_bytes(Encoding.PEM).decode()


def _automata_evidence() -> bytes:
    collateral = _collateral(
        AUTOMATA,
        tcb_info="0825_sgx_tcbinfov3_00606a000000.json",
        qe_identity="0825_sgx_qeidentity_v4.json",
        tcb_chain=_der_as_pem("signingDer.der") + _der_as_pem("rootCaDer.der"),
        pck_chain=_der_as_pem("platformDer.der") + _der_as_pem("rootCaDer.der"),
        pck_crl="0825_platform_crl.der",
        root_crl="rootCrlDer.der",
    )
    return encode_dcap_evidence((AUTOMATA / "quotev3.bin").read_bytes(), collateral)


def test_another_platform_verifies_as_stale() -> None:
    """automata's SGX v3 quote (FMSPC 00606A000000, Platform CA chain) at 2025-08-15."""
    claims = verify_dcap_evidence(_automata_evidence(), datetime.fromtimestamp(1755236700, UTC))
    assert claims.security.tcb_status == "SWHardeningNeeded"
    assert claims.security.advisory_ids == ("INTEL-SA-00615",)
    assert str(claims.code_hash).startswith("A4F45C39")
    assert claims.security.summary.name == "STALE"


def test_collateral_not_yet_valid_is_refused() -> None:
    with pytest.raises(InvalidEnclaveError, match="verification failed"):
        verify_dcap_evidence(_automata_evidence(), datetime.fromtimestamp(1749095100, UTC))
