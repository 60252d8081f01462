"""Fetching DCAP collateral from a PCCS or Intel PCS, cached for a day at most.

The host ships the collateral inside the enclave's attestation, so a client verifies offline
with nothing but the Intel root it pins; a client may also fetch fresh collateral itself
(``EnclaveInstanceInfo.deserialize(data, collateral=CollateralFetcher(...))``), so the host
cannot choose how old it is. Nothing here is trusted: every piece is signed by Intel and checked
by the verifier.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import unquote

from sanctorum.common.errors import SanctorumError
from sanctorum.common.progress import ProgressCallback, no_progress

if TYPE_CHECKING:  # httpx loads only when collateral is fetched: clients stay light
    import httpx

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
DEFAULT_MAX_AGE = timedelta(hours=24)


class CollateralError(SanctorumError):
    """Collateral could not be fetched or is malformed."""


def raw_json_member(text: str, name: str) -> str:
    """The exact text of the object ``name`` in a JSON document: signatures cover those bytes."""
    key = f'"{name}"'
    start = text.find(key)
    if start < 0:
        raise CollateralError(f"the response has no {name!r}")
    start = text.index("{", start + len(key))
    depth, in_string, escaped = 0, False, False
    for position in range(start, len(text)):
        char = text[position]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start : position + 1]
    raise CollateralError(f"the response's {name!r} object is not closed")


def _next_update(document: str) -> datetime:
    value = json.loads(document)["nextUpdate"]
    return datetime.fromisoformat(str(value))


class CollateralFetcher:
    """Gets the collateral for a quote's platform, through ``httpx``, cached per FMSPC and CA
    for ``max_age`` after fetching, or until the TCB info or QE identity says it must be
    refreshed if that comes first.

    Intel reissues TCB info, QE identity and PCK CRL often, each valid for 30 days; keeping a
    set for its whole validity would make the attestations a host hands out look up to 30 days
    old to clients whose constraint says ``EXPIRE:``. ``max_age`` bounds that (zero: no cache).
    ``progress`` is told each request as it is made (see :mod:`sanctorum.common.progress`).
    """

    def __init__(
        self,
        base_url: str = INTEL_PCS_URL,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_age: timedelta = DEFAULT_MAX_AGE,
        progress: ProgressCallback | None = None,
    ) -> None:
        import httpx

        if max_age < timedelta(0):
            raise CollateralError(f"max_age must not be negative, not {max_age}")
        self._max_age = max_age
        self._base = base_url.rstrip("/") + "/sgx/certification/v4"
        self._http = http or httpx.Client(timeout=30)
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[datetime, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._progress = progress or no_progress

    def collateral_for(self, quote: bytes) -> dict[str, str]:
        """The collateral JSON object (as ``dcap_qvl.QuoteCollateralV3.from_json`` reads)."""
        try:
            import dcap_qvl

            parsed = dcap_qvl.parse_quote(quote)
            fmspc, ca = str(parsed.fmspc()), str(parsed.ca())
        except Exception as error:
            raise CollateralError(
                f"cannot read the platform (FMSPC) from the quote: {error}"
            ) from None
        key = (fmspc, ca)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and self._clock() < cached[0]:
                return cached[1]
        fetched_at = self._clock()
        collateral = self._fetch(fmspc, ca)
        expires = min(
            _next_update(collateral["tcb_info"]),
            _next_update(collateral["qe_identity"]),
            fetched_at + self._max_age,
        )
        with self._lock:
            self._cache[key] = (expires, collateral)
        return collateral

    def _get(self, what: str, path: str, **params: str) -> httpx.Response:
        import httpx

        self._progress(f"fetching the DCAP collateral: {what}")
        try:
            response = self._http.get(self._base + path, params=params)
        except httpx.HTTPError as error:
            raise CollateralError(f"cannot reach {self._base}{path}: {error}") from None
        if response.status_code != 200:
            raise CollateralError(f"{self._base}{path} answered {response.status_code}")
        return response

    @staticmethod
    def _chain(response: httpx.Response, *names: str) -> str:
        for name in names:
            value = response.headers.get(name)
            if value:
                return unquote(value)
        raise CollateralError(f"the response lacks the {names[0]} header")

    def _fetch(self, fmspc: str, ca: str) -> dict[str, str]:
        pck_crl = self._get("PCK CRL", "/pckcrl", ca=ca, encoding="der")
        tcb = self._get("TCB info", "/tcb", fmspc=fmspc)
        identity = self._get("QE identity", "/qe/identity")
        root_crl = self._get("root CA CRL", "/rootcacrl")
        tcb_text, identity_text = tcb.text, identity.text
        try:
            tcb_signature = str(json.loads(tcb_text)["signature"])
            identity_signature = str(json.loads(identity_text)["signature"])
        except (ValueError, KeyError) as error:
            raise CollateralError(f"malformed TCB info or QE identity: {error!r}") from None
        return {
            "pck_crl_issuer_chain": self._chain(pck_crl, "SGX-PCK-CRL-Issuer-Chain"),
            "root_ca_crl": _crl_hex(root_crl.content),
            "pck_crl": _crl_hex(pck_crl.content),
            "tcb_info_issuer_chain": self._chain(
                tcb, "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"
            ),
            "tcb_info": raw_json_member(tcb_text, "tcbInfo"),
            "tcb_info_signature": tcb_signature,
            "qe_identity_issuer_chain": self._chain(identity, "SGX-Enclave-Identity-Issuer-Chain"),
            "qe_identity": raw_json_member(identity_text, "enclaveIdentity"),
            "qe_identity_signature": identity_signature,
        }


def _crl_hex(body: bytes) -> str:
    """CRLs come as DER (v4) or as hex text (some PCCS versions); dcap-qvl wants hex."""
    text = body.strip()
    try:
        decoded = text.decode("ascii")
        bytes.fromhex(decoded)
        return decoded.lower()
    except ValueError:
        return body.hex()
