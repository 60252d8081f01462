"""Fetching collateral from a (local, fake) PCCS: the result verifies, and is cached."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sanctorum.attestation.collateral import CollateralError, CollateralFetcher, raw_json_member
from sanctorum.attestation.dcap import encode_dcap_evidence, verify_dcap_evidence
from tests.conftest import vector_file
from tests.pccs import RECORDED, FakePccs

QUOTE = vector_file("dcap/sgx_quote_v3.bin").read_bytes()
VALID_AT = datetime.fromtimestamp(1750416971, UTC)


def test_fetched_collateral_matches_and_verifies(pccs: str) -> None:
    collateral = CollateralFetcher(pccs, clock=lambda: VALID_AT).collateral_for(QUOTE)
    assert collateral == RECORDED
    claims = verify_dcap_evidence(encode_dcap_evidence(QUOTE, collateral), VALID_AT)
    assert claims.security.tcb_status == "ConfigurationAndSWHardeningNeeded"


def test_collateral_is_cached_until_its_next_update(pccs: str) -> None:
    now = [VALID_AT]
    fetcher = CollateralFetcher(pccs, clock=lambda: now[0])
    fetcher.collateral_for(QUOTE)
    fetcher.collateral_for(QUOTE)
    assert len(FakePccs.requests) == 4  # one round of four requests
    now[0] = VALID_AT + timedelta(days=40)  # past the TCB info's nextUpdate
    fetcher.collateral_for(QUOTE)
    assert len(FakePccs.requests) == 8


def test_collateral_is_refetched_after_max_age(pccs: str) -> None:
    """Reusing a set for its whole 30 days would make a host's attestations look up to 30 days
    old to EXPIRE:; by default a set is reused for a day."""
    now = [VALID_AT]
    fetcher = CollateralFetcher(pccs, clock=lambda: now[0])
    fetcher.collateral_for(QUOTE)
    now[0] = VALID_AT + timedelta(hours=23)
    fetcher.collateral_for(QUOTE)
    assert len(FakePccs.requests) == 4
    now[0] = VALID_AT + timedelta(hours=24, seconds=1)  # the TCB info is valid for 29 more days
    fetcher.collateral_for(QUOTE)
    assert len(FakePccs.requests) == 8
    uncached = CollateralFetcher(pccs, clock=lambda: VALID_AT, max_age=timedelta(0))
    uncached.collateral_for(QUOTE)
    uncached.collateral_for(QUOTE)
    assert len(FakePccs.requests) == 16
    with pytest.raises(CollateralError, match="max_age must not be negative"):
        CollateralFetcher(pccs, max_age=timedelta(seconds=-1))


def test_failures_are_collateral_errors(pccs: str) -> None:
    FakePccs.broken = True
    with pytest.raises(CollateralError, match="answered 503"):
        CollateralFetcher(pccs).collateral_for(QUOTE)
    with pytest.raises(CollateralError, match="cannot read the platform"):
        CollateralFetcher(pccs).collateral_for(b"not a quote")
    with pytest.raises(CollateralError, match="cannot reach"):
        CollateralFetcher("http://127.0.0.1:9").collateral_for(QUOTE)


def test_raw_member_keeps_the_signed_bytes() -> None:
    text = '{"a": 1, "tcbInfo": {"x": "}{\\"", "y": {"z": 2}} , "signature": "00"}'
    assert raw_json_member(text, "tcbInfo") == '{"x": "}{\\"", "y": {"z": 2}}'
    with pytest.raises(CollateralError):
        raw_json_member(text, "missing")


def test_each_request_is_reported_to_the_progress_callback(pccs: str) -> None:
    steps: list[str] = []
    fetcher = CollateralFetcher(pccs, clock=lambda: VALID_AT, progress=steps.append)
    fetcher.collateral_for(QUOTE)
    fetcher.collateral_for(QUOTE)  # cached: nothing is fetched, nothing reported
    assert steps == [
        f"fetching the DCAP collateral: {what}"
        for what in ("PCK CRL", "TCB info", "QE identity", "root CA CRL")
    ]
    assert len(FakePccs.requests) == len(steps)
