"""Fetching collateral from a (local, fake) PCCS: the result verifies, and is cached."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, quote, urlparse

import pytest

from sanctorum.attestation.dcap import encode_dcap_evidence, verify_dcap_evidence
from sanctorum.host.collateral import CollateralError, CollateralFetcher, raw_json_member
from tests.conftest import vector_file

QUOTE = vector_file("dcap/sgx_quote_v3.bin").read_bytes()
RECORDED: dict[str, str] = json.loads(vector_file("dcap/sgx_quote_v3.collateral.json").read_text())
VALID_AT = datetime.fromtimestamp(1750416971, UTC)


class FakePccs(BaseHTTPRequestHandler):
    """Answers the four PCCS v4 requests with the recorded collateral, as Intel's PCS does."""

    requests: ClassVar[list[str]] = []
    broken = False

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        FakePccs.requests.append(url.path)
        prefix = "/sgx/certification/v4"
        routes = {
            f"{prefix}/pckcrl": (
                bytes.fromhex(RECORDED["pck_crl"]),
                {"SGX-PCK-CRL-Issuer-Chain": quote(RECORDED["pck_crl_issuer_chain"])},
            ),
            f"{prefix}/tcb": (
                (
                    '{"tcbInfo":'
                    + RECORDED["tcb_info"]
                    + ',"signature":"'
                    + RECORDED["tcb_info_signature"]
                    + '"}'
                ).encode(),
                {"TCB-Info-Issuer-Chain": quote(RECORDED["tcb_info_issuer_chain"])},
            ),
            f"{prefix}/qe/identity": (
                (
                    '{"enclaveIdentity":'
                    + RECORDED["qe_identity"]
                    + ',"signature":"'
                    + RECORDED["qe_identity_signature"]
                    + '"}'
                ).encode(),
                {"SGX-Enclave-Identity-Issuer-Chain": quote(RECORDED["qe_identity_issuer_chain"])},
            ),
            f"{prefix}/rootcacrl": (bytes.fromhex(RECORDED["root_ca_crl"]), {}),
        }
        if url.path.endswith("/tcb") and query.get("fmspc") != ["00A067110000"]:
            self.send_error(404)
            return
        if FakePccs.broken or url.path not in routes:
            self.send_error(503 if FakePccs.broken else 404)
            return
        body, headers = routes[url.path]
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def pccs() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePccs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakePccs.requests, FakePccs.broken = [], False
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


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
