"""EnclaveConstraint: the one-line DSL and every rule of DESIGN §6."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanctorum.attestation import (
    EnclaveConstraint,
    EnclaveInstanceInfo,
    MockConfiguration,
)
from sanctorum.attestation.constraint import format_duration, parse_duration
from sanctorum.common import (
    InvalidConstraintError,
    InvalidEnclaveError,
    SecuritySummary,
    SHA256Hash,
)
from tests.conftest import mock_instance_info

CODE = SHA256Hash.of(b"code")
SIGNER = SHA256Hash.of(b"signer")


def _info() -> EnclaveInstanceInfo:
    config = MockConfiguration(code_hash=CODE, signer_hash=SIGNER, product_id=5, revocation_level=2)
    return mock_instance_info(config)


INFO = _info()


def test_parse_every_term() -> None:
    constraint = EnclaveConstraint.parse(
        f"C:{CODE} c:{SHA256Hash.of(b'2')} S:{SIGNER} PROD:5 REVOKE:2 SEC:stale EXPIRE:P1DT2H "
        "tcbeval:17"
    )
    assert constraint.acceptable_code_hashes == {CODE, SHA256Hash.of(b"2")}
    assert constraint.acceptable_signers == {SIGNER}
    assert constraint.product_id == 5
    assert constraint.minimum_revocation_level == 2
    assert constraint.minimum_security_level is SecuritySummary.STALE
    assert constraint.max_attestation_age == timedelta(days=1, hours=2)
    assert constraint.minimum_tcb_evaluation_data_number == 17


def test_default_security_is_secure() -> None:
    assert EnclaveConstraint.parse(f"C:{CODE}").minimum_security_level is SecuritySummary.SECURE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "at least one"),
        ("SEC:INSECURE", "at least one"),
        (f"S:{SIGNER}", "needs a product id"),
        (f"C:{CODE} PROD:65537", "PROD must be from 0 to 65535"),
        (f"C:{CODE} PROD:65536", "PROD must be"),
        (f"C:{CODE} REVOKE:65535", "REVOKE must be"),
        (f"C:{CODE} PROD:x", "not a whole number"),
        (f"C:{CODE} PROD:-1", "not a whole number"),
        (f"C:{CODE} SEC:MAYBE", "not a security level"),
        (f"C:{CODE} EXPIRE:P1Y", "years and months"),
        (f"C:{CODE} EXPIRE:P", "ISO-8601"),
        (f"C:{CODE} EXPIRE:PT", "ISO-8601"),
        (f"C:{CODE} EXPIRE:P0D", "more than zero"),
        (f"C:{CODE} EXPIRE:P999999999999W", "under 100 years"),
        (f"C:{CODE} EXPIRE:PT1.5S", "ISO-8601"),
        ("C:1234", "64 hex digits"),
        (f"C:{CODE} BOGUS:1", "unknown constraint term 'BOGUS'"),
        (f"C:{CODE} PROD:1 PROD:2", "more than once"),
        (f"C:{CODE} TCBEVAL:1 TCBEVAL:2", "TCBEVAL: appears more than once"),
        (f"C:{CODE} TCBEVAL:x", "TCBEVAL:x is not a whole number"),
        (f"C:{CODE} TCBEVAL:-1", "not a whole number"),
        (f"C:{CODE} TCBEVAL:+1", "not a whole number"),
        (f"C:{CODE} TCBEVAL:1.5", "not a whole number"),
        (f"C:{CODE} TCBEVAL:\u0661", "not a whole number"),  # Arabic-Indic one
        (f"C:{CODE} TCBEVAL:12345678901", "not a whole number"),
        (f"C:{CODE} TCBEVAL:4294967296", "TCBEVAL must be from 0 to 4294967295"),
        (f"C{CODE}", "KEY:VALUE"),
        ("C:", "KEY:VALUE"),
    ],
)
def test_parse_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidConstraintError, match=message):
        EnclaveConstraint.parse(text)


def test_code_hash_accepts_and_rejects() -> None:
    EnclaveConstraint.parse(f"C:{CODE} SEC:INSECURE").check(INFO)
    with pytest.raises(InvalidEnclaveError, match="match none of"):
        EnclaveConstraint.parse(f"C:{SHA256Hash.of(b'other')} SEC:INSECURE").check(INFO)


def test_signer_needs_matching_product() -> None:
    EnclaveConstraint.parse(f"S:{SIGNER} PROD:5 SEC:INSECURE").check(INFO)
    with pytest.raises(InvalidEnclaveError, match="fails PROD:6: its product id is 5"):
        EnclaveConstraint.parse(f"S:{SIGNER} PROD:6 SEC:INSECURE").check(INFO)
    with pytest.raises(InvalidEnclaveError, match="match none of"):
        EnclaveConstraint.parse(f"S:{CODE} PROD:5 SEC:INSECURE").check(INFO)


def test_product_is_checked_with_code_hash_too() -> None:
    with pytest.raises(InvalidEnclaveError, match="PROD:9"):
        EnclaveConstraint.parse(f"C:{CODE} PROD:9 SEC:INSECURE").check(INFO)


def test_revocation_level_is_a_minimum() -> None:
    EnclaveConstraint.parse(f"C:{CODE} REVOKE:2 SEC:INSECURE").check(INFO)
    with pytest.raises(InvalidEnclaveError, match="fails REVOKE:3: its revocation level is 2"):
        EnclaveConstraint.parse(f"C:{CODE} REVOKE:3 SEC:INSECURE").check(INFO)


@pytest.mark.parametrize("level", ["SECURE", "STALE"])
def test_insecure_enclave_fails_secure_and_stale(level: str) -> None:
    with pytest.raises(InvalidEnclaveError, match=f"fails SEC:{level}: it is INSECURE"):
        EnclaveConstraint.parse(f"C:{CODE} SEC:{level}").check(INFO)


def test_a_constraint_without_sec_says_how_to_accept_an_insecure_enclave() -> None:
    """A newcomer pastes C:… alone and meets SEC:SECURE they never wrote: the message says it is
    the default and how to accept a development enclave on purpose."""
    with pytest.raises(InvalidEnclaveError) as refused:
        EnclaveConstraint.parse(f"C:{CODE}").check(INFO)
    message = str(refused.value)
    assert "fails SEC:SECURE" in message
    assert "without a SEC: term" in message
    assert "add SEC:INSECURE to the constraint" in message


def test_security_level_table() -> None:
    """SECURE accepts SECURE; STALE accepts SECURE and STALE; INSECURE accepts INSECURE only."""
    accepts = EnclaveConstraint._accepts
    S, T, I = SecuritySummary.SECURE, SecuritySummary.STALE, SecuritySummary.INSECURE  # noqa: E741,N806
    assert {level for level in SecuritySummary if accepts(S, level)} == {S}
    assert {level for level in SecuritySummary if accepts(T, level)} == {S, T}
    assert {level for level in SecuritySummary if accepts(I, level)} == {I}


def test_expiry_uses_the_attestation_time() -> None:
    constraint = EnclaveConstraint.parse(f"C:{CODE} SEC:INSECURE EXPIRE:PT1H")
    stamp = INFO.security_info.timestamp
    constraint.check(INFO, now=stamp + timedelta(minutes=59))
    with pytest.raises(InvalidEnclaveError, match="fails EXPIRE:PT1H"):
        constraint.check(INFO, now=stamp + timedelta(hours=1, seconds=1))
    constraint.check(INFO)  # fresh


def test_durations() -> None:
    assert parse_duration("P2W") == timedelta(weeks=2)
    assert parse_duration("PT90M") == timedelta(minutes=90)
    assert parse_duration("P1DT1H1M1S") == timedelta(days=1, hours=1, minutes=1, seconds=1)
    assert format_duration(timedelta(days=1, seconds=61)) == "P1DT1M1S"
    assert format_duration(timedelta(hours=5)) == "PT5H"


def test_format_is_canonical() -> None:
    text = f"SEC:stale C:{str(CODE).lower()} EXPIRE:P1W"
    assert EnclaveConstraint.parse(text).format() == f"C:{CODE} SEC:STALE EXPIRE:P7D"
    text = f"TCBEVAL:017 C:{CODE}"
    assert EnclaveConstraint.parse(text).format() == f"C:{CODE} SEC:SECURE TCBEVAL:17"


_hashes = st.binary(min_size=32, max_size=32).map(SHA256Hash)


@st.composite
def _constraints(draw: st.DrawFn) -> EnclaveConstraint:
    codes = draw(st.frozensets(_hashes, max_size=3))
    signers = draw(st.frozensets(_hashes, min_size=0 if codes else 1, max_size=3))
    product = draw(st.integers(0, 65535)) if signers else draw(st.none() | st.integers(0, 65535))
    return EnclaveConstraint(
        acceptable_code_hashes=codes,
        acceptable_signers=signers,
        product_id=product,
        minimum_revocation_level=draw(st.none() | st.integers(0, 65534)),
        minimum_security_level=draw(st.sampled_from(SecuritySummary)),
        max_attestation_age=draw(
            st.none() | st.integers(1, 10**9).map(lambda s: timedelta(seconds=s))
        ),
        minimum_tcb_evaluation_data_number=draw(st.none() | st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=200, deadline=None)
@given(_constraints())
def test_parse_format_parse_is_identity(constraint: EnclaveConstraint) -> None:
    text = constraint.format()
    assert EnclaveConstraint.parse(text) == constraint
    assert EnclaveConstraint.parse(text).format() == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text_raises_only_constraint_errors(text: str) -> None:
    with contextlib.suppress(InvalidConstraintError):
        EnclaveConstraint.parse(text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["C:", "S:", "PROD:", "REVOKE:", "SEC:", "EXPIRE:", "TCBEVAL:", "X:", ""]
        ).flatmap(
            lambda key: st.text(alphabet="0123456789ABCDEFPTWDHMSY.-", max_size=70).map(
                lambda value: key + value
            )
        ),
        max_size=6,
    )
)
def test_term_soup_raises_only_constraint_errors(terms: list[str]) -> None:
    with contextlib.suppress(InvalidConstraintError):  # anything else fails the test
        EnclaveConstraint.parse(" ".join(terms))


def test_time_now_is_timezone_aware() -> None:
    assert INFO.security_info.timestamp.tzinfo is UTC
    assert datetime.now(UTC) >= INFO.security_info.timestamp


def _info_with_summary(summary: SecuritySummary) -> EnclaveInstanceInfo:
    """An instance whose (test-only) evidence type claims ``summary``."""
    from dataclasses import replace

    from sanctorum.attestation.evidence import register_verifier, verify_evidence
    from sanctorum.common import EnclaveSecurityInfo

    def verify(evidence: bytes, at: object) -> object:
        claims = verify_evidence("mock", evidence)
        security = EnclaveSecurityInfo(summary, f"test {summary.name}", claims.security.timestamp)
        return replace(claims, security=security)

    register_verifier(f"test-{summary.name}", verify)  # type: ignore[arg-type]
    return EnclaveInstanceInfo(
        INFO.data_signing_key, INFO.encryption_key, f"test-{summary.name}", INFO.evidence
    )


@pytest.mark.parametrize(
    ("required", "actual", "accepted"),
    [
        ("SECURE", SecuritySummary.SECURE, True),
        ("SECURE", SecuritySummary.STALE, False),
        ("STALE", SecuritySummary.SECURE, True),
        ("STALE", SecuritySummary.STALE, True),
        ("INSECURE", SecuritySummary.SECURE, False),
        ("INSECURE", SecuritySummary.STALE, False),
        ("INSECURE", SecuritySummary.INSECURE, True),
    ],
)
def test_security_levels_end_to_end(required: str, actual: SecuritySummary, accepted: bool) -> None:
    constraint = EnclaveConstraint.parse(f"C:{CODE} SEC:{required}")
    info = _info_with_summary(actual)
    if accepted:
        constraint.check(info)
    else:
        with pytest.raises(InvalidEnclaveError, match=f"fails SEC:{required}: it is {actual.name}"):
            constraint.check(info)
