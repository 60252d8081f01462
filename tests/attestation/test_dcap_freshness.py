"""How fresh DCAP collateral is (EXPIRE:, TCBEVAL:), and debug quotes, on recorded real sets.

The host chooses which collateral it ships. These tests check that the attestation's time is
the issue date of its oldest collateral item, not just the TCB info's, that TCBEVAL: reads the
signed evaluation numbers, that a client can replace old collateral with fresh, and that a
debug enclave's quote is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from sanctorum.attestation import EnclaveConstraint, EnclaveInstanceInfo
from sanctorum.attestation.collateral import CollateralFetcher, raw_json_member
from sanctorum.attestation.dcap import (
    collateral_info,
    encode_dcap_evidence,
    is_debug_quote,
    verify_dcap_evidence,
)
from sanctorum.attestation.evidence import EvidenceClaims, register_verifier
from sanctorum.common import Curve25519PrivateKey, Ed25519PrivateKey, InvalidEnclaveError
from sanctorum.common.mode import CollateralInfo
from tests.attestation.test_dcap import serialized_with
from tests.attestation.test_dcap_more import MOBILECOIN, MOBILECOIN_COLLATERAL
from tests.conftest import vector_file

DATA = Path(__file__).resolve().parents[1] / "data"
QUOTE = vector_file("dcap/sgx_quote_v3.bin").read_bytes()
COLLATERAL = vector_file("dcap/sgx_quote_v3.collateral.json").read_text()
VALID_AT = datetime.fromtimestamp(1750416971, UTC)  # 2025-06-20T10:56:11Z
MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
REPORT_DATA = b"Hello, world!".ljust(64, b"\0")  # the recorded quote's, not a key binding

# Another real QE identity, issued 2025-06-04 and valid to 2025-07-04 (automata's set): with
# it the recorded quote still verifies at VALID_AT, but one item is 16 days old.
OLD_QE_IDENTITY = (DATA / "dcap-more" / "automata" / "0625_identity.json").read_text()


def _with_old_qe_identity() -> str:
    collateral = json.loads(COLLATERAL)
    collateral["qe_identity"] = raw_json_member(OLD_QE_IDENTITY, "enclaveIdentity")
    collateral["qe_identity_signature"] = json.loads(OLD_QE_IDENTITY)["signature"]
    return json.dumps(collateral)


def _dates_computed_here(collateral_text: str) -> dict[str, datetime]:
    """The four issue dates, read without Sanctorum: regex on the signed JSON, CRLs by hand."""
    raw = json.loads(collateral_text)

    def issue_date(document: str) -> datetime:
        match = re.search(
            r'"issueDate"\s*:\s*"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z"', document
        )
        assert match is not None
        year, month, day, hour, minute, second = map(int, match.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)

    def crl_date(hex_text: str) -> datetime:
        return x509.load_der_x509_crl(bytes.fromhex(hex_text)).last_update_utc

    return {
        "TCB info": issue_date(raw["tcb_info"]),
        "QE identity": issue_date(raw["qe_identity"]),
        "PCK CRL": crl_date(raw["pck_crl"]),
        "root CA CRL": crl_date(raw["root_ca_crl"]),
    }


@pytest.fixture
def recorded_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the recorded quote (whose report data is not a key binding) form an instance, so the
    whole client path runs on real evidence: the binding check is tested elsewhere."""
    monkeypatch.setattr(
        "sanctorum.attestation.instance_info.key_binding", lambda signing, encryption: REPORT_DATA
    )


# -- the dates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("collateral", [COLLATERAL, _with_old_qe_identity()])
def test_every_issue_date_is_read_and_expire_counts_from_the_oldest(collateral: str) -> None:
    expected = _dates_computed_here(collateral)
    claims = verify_dcap_evidence(encode_dcap_evidence(QUOTE, collateral), VALID_AT)
    info = claims.security.collateral
    assert info is not None
    assert info.issue_dates() == expected
    assert info.oldest_issue_date == min(expected.values())
    reissued = {name: date for name, date in expected.items() if name != "root CA CRL"}
    oldest = min(reissued, key=lambda name: reissued[name])
    assert info.oldest_reissued_item == (oldest, reissued[oldest])
    assert claims.security.timestamp == reissued[oldest]


def test_on_the_recorded_set_the_oldest_item_is_not_the_tcb_info() -> None:
    """Reading only the TCB info (as before) would date this evidence 55 minutes too late."""
    security = verify_dcap_evidence(encode_dcap_evidence(QUOTE, COLLATERAL), VALID_AT).security
    assert security.collateral is not None
    assert security.collateral.tcb_info_issued == datetime(2025, 6, 19, 10, 56, 11, tzinfo=UTC)
    assert security.collateral.pck_crl_issued == datetime(2025, 6, 19, 10, 23, 18, tzinfo=UTC)
    assert security.collateral.root_ca_crl_issued == datetime(2025, 3, 20, 11, 21, 57, tzinfo=UTC)
    assert security.timestamp == datetime(2025, 6, 19, 10, 1, 18, tzinfo=UTC)  # QE identity
    assert security.collateral.oldest_reissued_item[0] == "QE identity"


def test_an_old_pck_crl_is_found_as_the_oldest_item() -> None:
    """A 2023 processor CRL in the 2025 collateral (this set no longer verifies, so the date
    reading is tested on its own, and the constraint below on the resulting claims)."""
    collateral = json.loads(COLLATERAL)
    collateral["pck_crl"] = (MOBILECOIN / "processor_crl.der").read_bytes().hex()
    info = collateral_info(json.dumps(collateral))
    crl = x509.load_der_x509_crl((MOBILECOIN / "processor_crl.der").read_bytes())
    assert (
        info.pck_crl_issued == crl.last_update_utc == datetime(2023, 4, 21, 22, 0, 36, tzinfo=UTC)
    )
    assert info.oldest_reissued_item == ("PCK CRL", crl.last_update_utc)
    assert info.oldest_issue_date == crl.last_update_utc  # older than the root CA CRL too
    assert info.tcb_info_issued == datetime(2025, 6, 19, 10, 56, 11, tzinfo=UTC)  # still fresh


def test_a_pem_crl_gives_the_same_date() -> None:
    collateral = json.loads(COLLATERAL)
    der = bytes.fromhex(collateral["pck_crl"])
    from cryptography.hazmat.primitives.serialization import Encoding

    collateral["pck_crl"] = x509.load_der_x509_crl(der).public_bytes(Encoding.PEM).hex()
    assert collateral_info(json.dumps(collateral)) == collateral_info(COLLATERAL)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop("pck_crl"), "pck_crl"),
        (lambda c: c.update(pck_crl="00ff"), "malformed collateral"),
        (lambda c: c.update(root_ca_crl="not hex"), "malformed collateral"),
        (
            lambda c: c.update(tcb_info=c["tcb_info"].replace('"issueDate"', '"issued"')),
            "issueDate",
        ),
        (lambda c: c.update(tcb_info=c["tcb_info"].replace('Z"', '"', 1)), "time zone"),
        (
            lambda c: c.update(
                qe_identity=c["qe_identity"].replace('"tcbEvaluationDataNumber":17', '"x":1')
            ),
            "tcbEvaluationDataNumber",
        ),
        (
            lambda c: c.update(
                qe_identity=c["qe_identity"].replace(
                    '"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":"17"'
                )
            ),
            "not a whole number",
        ),
    ],
)
def test_malformed_collateral_dates_are_refused(edit: object, message: str) -> None:
    collateral = json.loads(COLLATERAL)
    edit(collateral)  # type: ignore[operator]
    with pytest.raises(InvalidEnclaveError, match=message):
        collateral_info(json.dumps(collateral))


def test_a_second_collateral_member_is_refused() -> None:
    """dcap-qvl refuses duplicate members; if we read the last one we might read another CRL
    than the one it checked."""
    old_crl = (MOBILECOIN / "processor_crl.der").read_bytes().hex()
    text = COLLATERAL.rstrip().removesuffix("}") + f', "pck_crl": "{old_crl}"}}'
    assert json.loads(text)["pck_crl"] == old_crl
    with pytest.raises(InvalidEnclaveError, match="duplicate key"):
        collateral_info(text)
    with pytest.raises(InvalidEnclaveError, match="verification failed"):
        verify_dcap_evidence(encode_dcap_evidence(QUOTE, text), VALID_AT)


# -- EXPIRE: ------------------------------------------------------------------------------------


def test_expire_refuses_an_old_qe_identity_although_the_tcb_info_is_fresh(
    recorded_binding: None,
) -> None:
    """A real mixed set that verifies: fresh TCB info, QE identity 16 days old."""
    constraint = EnclaveConstraint.parse(f"C:{MRENCLAVE} SEC:STALE EXPIRE:P10D")
    fresh = EnclaveInstanceInfo.deserialize(serialized_with(COLLATERAL), verification_time=VALID_AT)
    constraint.check(fresh, now=VALID_AT)
    old = EnclaveInstanceInfo.deserialize(
        serialized_with(_with_old_qe_identity()), verification_time=VALID_AT
    )
    assert old.security_info.collateral is not None
    assert old.security_info.collateral.tcb_info_issued > VALID_AT - timedelta(days=2)
    with pytest.raises(
        InvalidEnclaveError,
        match=r"fails EXPIRE:P10D: its oldest DCAP collateral, the QE identity issued "
        r"2025-06-04T09:19:32\+00:00, is 16 days",
    ):
        constraint.check(old, now=VALID_AT)
    EnclaveConstraint.parse(f"C:{MRENCLAVE} SEC:STALE EXPIRE:P17D").check(old, now=VALID_AT)


def test_expire_refuses_an_old_pck_crl() -> None:
    """The constraint on claims whose PCK CRL is the old item (see the CRL test above)."""
    collateral = json.loads(COLLATERAL)
    collateral["pck_crl"] = (MOBILECOIN / "processor_crl.der").read_bytes().hex()
    dates = collateral_info(json.dumps(collateral))
    info = _instance_with_collateral(dates, "test-dcap-old-crl")
    constraint = EnclaveConstraint.parse(f"C:{MRENCLAVE} SEC:STALE EXPIRE:P30D")
    with pytest.raises(InvalidEnclaveError, match="the PCK CRL issued 2023-04-21T22:00:36"):
        constraint.check(info, now=VALID_AT)


def test_the_yearly_root_ca_crl_does_not_count_for_expire(recorded_binding: None) -> None:
    """Intel reissues the root CA CRL about yearly: the recorded set's is 92 days old, yet the
    set is a day old, and a two-day EXPIRE accepts it. Its date is still exposed."""
    info = EnclaveInstanceInfo.deserialize(serialized_with(COLLATERAL), verification_time=VALID_AT)
    assert info.security_info.collateral is not None
    assert VALID_AT - info.security_info.collateral.oldest_issue_date > timedelta(days=90)
    EnclaveConstraint.parse(f"C:{MRENCLAVE} SEC:STALE EXPIRE:P2D").check(info, now=VALID_AT)


def test_a_client_replaces_old_collateral_with_fresh(recorded_binding: None, pccs: str) -> None:
    """The freshness path: a host ships the 16-day-old QE identity; the client fetches its own
    collateral from a PCCS and the same constraint passes."""
    lying_host = serialized_with(_with_old_qe_identity())
    constraint = EnclaveConstraint.parse(f"C:{MRENCLAVE} SEC:STALE EXPIRE:P10D")
    shipped = EnclaveInstanceInfo.deserialize(lying_host, verification_time=VALID_AT)
    with pytest.raises(InvalidEnclaveError, match="fails EXPIRE:P10D"):
        constraint.check(shipped, now=VALID_AT)
    fetcher = CollateralFetcher(pccs, clock=lambda: VALID_AT)
    fresh = EnclaveInstanceInfo.deserialize(
        lying_host, verification_time=VALID_AT, collateral=fetcher
    )
    constraint.check(fresh, now=VALID_AT)
    assert fresh.security_info.timestamp == datetime(2025, 6, 19, 10, 1, 18, tzinfo=UTC)
    assert fresh.evidence != shipped.evidence  # the instance carries the collateral it used


def test_an_enclave_client_verifies_with_the_collateral_it_fetches_itself(
    recorded_binding: None, pccs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sanctorum import EnclaveClient

    deserialize = EnclaveInstanceInfo.deserialize.__func__  # type: ignore[attr-defined]

    def at_the_recorded_time(
        cls: type[EnclaveInstanceInfo], /, data: bytes, **options: object
    ) -> EnclaveInstanceInfo:
        options["verification_time"] = VALID_AT  # the recorded quote verifies only then
        return deserialize(cls, data, **options)  # type: ignore[no-any-return]

    monkeypatch.setattr(EnclaveInstanceInfo, "deserialize", classmethod(at_the_recorded_time))
    lying_host = serialized_with(_with_old_qe_identity())
    fresh_date = datetime(2025, 6, 19, 10, 1, 18, tzinfo=UTC)
    trusting = EnclaveClient(f"C:{MRENCLAVE} SEC:STALE")
    trusting.adopt(lying_host)
    assert trusting.enclave_instance_info.security_info.timestamp != fresh_date
    fetching = EnclaveClient(
        f"C:{MRENCLAVE} SEC:STALE", collateral=CollateralFetcher(pccs, clock=lambda: VALID_AT)
    )
    fetching.adopt(lying_host)
    assert fetching.enclave_instance_info.security_info.timestamp == fresh_date


# -- TCBEVAL: -----------------------------------------------------------------------------------


def test_tcb_evaluation_numbers_are_exposed() -> None:
    security = verify_dcap_evidence(encode_dcap_evidence(QUOTE, COLLATERAL), VALID_AT).security
    raw = json.loads(COLLATERAL)
    assert security.collateral is not None
    tcb_number = json.loads(raw["tcb_info"])["tcbEvaluationDataNumber"]
    qe_number = json.loads(raw["qe_identity"])["tcbEvaluationDataNumber"]
    assert (tcb_number, qe_number) == (17, 17)
    assert security.collateral.tcb_info_evaluation_data_number == tcb_number
    assert security.collateral.qe_identity_evaluation_data_number == qe_number
    assert security.collateral.tcb_evaluation_data_number == 17


def test_tcbeval_accepts_and_refuses_on_the_recorded_set(recorded_binding: None) -> None:
    info = EnclaveInstanceInfo.deserialize(serialized_with(COLLATERAL), verification_time=VALID_AT)
    for minimum in (0, 16, 17):
        EnclaveConstraint.parse(f"C:{MRENCLAVE} SEC:STALE TCBEVAL:{minimum}").check(info)
    with pytest.raises(
        InvalidEnclaveError,
        match=r"fails TCBEVAL:18: its collateral's TCB evaluation data number is 17 "
        r"\(TCB info 17, QE identity 17\)",
    ):
        EnclaveConstraint.parse(f"C:{MRENCLAVE} SEC:STALE TCBEVAL:18").check(info)


def test_tcbeval_uses_the_lower_of_the_two_numbers() -> None:
    dates = collateral_info(COLLATERAL)
    mixed = replace(dates, tcb_info_evaluation_data_number=19)
    info = _instance_with_collateral(mixed, "test-dcap-eval-19-17")
    EnclaveConstraint.parse(f"C:{MRENCLAVE} SEC:STALE TCBEVAL:17").check(info)
    with pytest.raises(InvalidEnclaveError, match=r"is 17 \(TCB info 19, QE identity 17\)"):
        EnclaveConstraint.parse(f"C:{MRENCLAVE} SEC:STALE TCBEVAL:18").check(info)


def test_tcbeval_refuses_evidence_without_collateral() -> None:
    from sanctorum.attestation import MockConfiguration
    from tests.conftest import mock_instance_info

    info = mock_instance_info(MockConfiguration())
    constraint = EnclaveConstraint.parse(f"C:{info.code_hash} SEC:INSECURE TCBEVAL:1")
    with pytest.raises(
        InvalidEnclaveError,
        match=r"fails TCBEVAL:1: its mock-mode attestation \(mock evidence\) has no TCB "
        "evaluation data number",
    ):
        constraint.check(info)
    EnclaveConstraint.parse(f"C:{info.code_hash} SEC:INSECURE").check(info)


def _instance_with_collateral(collateral: CollateralInfo, name: str) -> EnclaveInstanceInfo:
    """The recorded quote's claims with ``collateral`` in place of its own (test-only type)."""
    signing, encryption = Ed25519PrivateKey.generate(), Curve25519PrivateKey.generate()
    from sanctorum.attestation import key_binding

    def verify(evidence: bytes, at: datetime | None) -> EvidenceClaims:
        claims = verify_dcap_evidence(evidence, VALID_AT)
        security = replace(
            claims.security,
            collateral=collateral,
            timestamp=collateral.oldest_reissued_item[1],
        )
        binding = key_binding(signing.public_key, encryption.public_key)
        return replace(claims, security=security, report_data=binding)

    register_verifier(name, verify)
    return EnclaveInstanceInfo(
        signing.public_key, encryption.public_key, name, encode_dcap_evidence(QUOTE, COLLATERAL)
    )


# -- debug quotes -------------------------------------------------------------------------------

DEBUG_QUOTE = (MOBILECOIN / "mc-sgx_hw_quote.dat").read_bytes()  # real, DEBUG attribute set


def test_the_recorded_debug_quote_is_one() -> None:
    assert is_debug_quote(DEBUG_QUOTE)
    assert not is_debug_quote(QUOTE)
    assert not is_debug_quote(vector_file("dcap/tdx_quote_v4.bin").read_bytes())  # not SGX
    assert not is_debug_quote(b"short")


def test_a_real_debug_quote_is_refused_as_debug() -> None:
    """Without the debug refusal this set would fail for its expired CRL instead."""
    evidence = encode_dcap_evidence(DEBUG_QUOTE, MOBILECOIN_COLLATERAL)
    with pytest.raises(InvalidEnclaveError, match="debug enclave: its memory can be read") as error:
        verify_dcap_evidence(evidence, datetime(2023, 7, 12, 20, 48, 25, tzinfo=UTC))
    assert "--mode release" in str(error.value)
    with pytest.raises(InvalidEnclaveError, match="debug enclave"):
        EnclaveInstanceInfo.deserialize(
            serialized_with(MOBILECOIN_COLLATERAL, DEBUG_QUOTE),
            verification_time=datetime(2023, 7, 12, 20, 48, 25, tzinfo=UTC),
        )


def test_setting_the_debug_bit_of_a_release_quote_is_refused() -> None:
    tampered = bytearray(QUOTE)
    tampered[96] |= 0x02  # ATTRIBUTES.DEBUG in the report body
    with pytest.raises(InvalidEnclaveError, match="debug enclave"):
        verify_dcap_evidence(encode_dcap_evidence(bytes(tampered), COLLATERAL), VALID_AT)
    # The untouched quote verifies as a release enclave.
    assert verify_dcap_evidence(encode_dcap_evidence(QUOTE, COLLATERAL), VALID_AT).mode.value == (
        "release"
    )
