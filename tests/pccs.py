"""A local fake PCCS serving the recorded collateral, as Intel's PCS answers (tests only)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, quote, urlparse

from tests.conftest import vector_file

RECORDED: dict[str, str] = json.loads(vector_file("dcap/sgx_quote_v3.collateral.json").read_text())


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


def serve_pccs() -> tuple[str, ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePccs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakePccs.requests.clear()
    FakePccs.broken = False
    return f"http://127.0.0.1:{server.server_address[1]}", server
