"""AttestationQuote: evidence over 64 bytes an enclave chose (``create_attestation_quote``).

An enclave vouches for data of its own — a hash of a result, a key of another protocol — with
the platform's evidence, which a third party verifies with the same verifiers (mock, simulated,
DCAP) and checks against an :class:`EnclaveConstraint`, as it does an
:class:`EnclaveInstanceInfo`.

The evidence's report data is not the 64 bytes themselves but SHA-512 of a domain string and
them: otherwise an enclave that quoted data a host chose could be made to quote the key binding
of keys the host holds, and the host could pass off an EnclaveInstanceInfo of its own keys.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sanctorum.attestation.collateral import CollateralFetcher
from sanctorum.attestation.evidence import REPORT_DATA_SIZE, Attested, verify_evidence
from sanctorum.attestation.instance_info import MAX_EVIDENCE_SIZE, with_collateral
from sanctorum.common.codec import Reader, Writer
from sanctorum.common.errors import InvalidEnclaveError

_MAGIC = b"SNCQ"
_VERSION = 1
_DOMAIN = b"sanctorum-attestation-quote\x00"


def quote_report_data(report_data: bytes) -> bytes:
    """What the evidence of a quote over ``report_data`` carries as its report data."""
    if len(report_data) != REPORT_DATA_SIZE:
        raise ValueError(f"report data is {REPORT_DATA_SIZE} bytes, not {len(report_data)}")
    return hashlib.sha512(_DOMAIN + report_data).digest()


def encode_quote(report_data: bytes, evidence_type: str, evidence: bytes) -> bytes:
    """The serialized quote (the enclave's side: it makes, it does not verify)."""
    return (
        Writer()
        .raw(_MAGIC)
        .u8(_VERSION)
        .raw(report_data)
        .text16(evidence_type)
        .bytes32(evidence)
        .getvalue()
    )


class AttestationQuote(Attested):
    """Verified evidence that an enclave vouched for :attr:`report_data`.

    Its properties are those of :class:`EnclaveInstanceInfo` that come from the evidence, so
    ``EnclaveConstraint.check(quote)`` works the same. Get one from :meth:`deserialize`.
    """

    __slots__ = ("_claims", "_evidence", "_evidence_type", "_report_data")

    def __init__(
        self,
        report_data: bytes,
        evidence_type: str,
        evidence: bytes,
        *,
        verification_time: datetime | None = None,
    ) -> None:
        """Verify ``evidence`` (at ``verification_time``, default now) and that it was made over
        ``report_data``; :class:`InvalidEnclaveError` if not."""
        if len(report_data) != REPORT_DATA_SIZE:
            raise InvalidEnclaveError(f"a quote's report data is {REPORT_DATA_SIZE} bytes")
        if len(evidence) > MAX_EVIDENCE_SIZE:
            raise InvalidEnclaveError(f"quote evidence is over {MAX_EVIDENCE_SIZE} bytes")
        claims = verify_evidence(evidence_type, evidence, verification_time)
        if claims.report_data != quote_report_data(report_data):
            raise InvalidEnclaveError(
                "the quote's evidence was not made over its report data: it was altered, or is "
                "the evidence of something else (an EnclaveInstanceInfo, another quote)"
            )
        self._report_data = bytes(report_data)
        self._evidence_type = evidence_type
        self._evidence = bytes(evidence)
        self._claims = claims

    @property
    def report_data(self) -> bytes:
        """The 64 bytes the enclave vouched for."""
        return self._report_data

    def serialize(self) -> bytes:
        """Canonical, versioned bytes; :meth:`deserialize` verifies them again."""
        return encode_quote(self._report_data, self._evidence_type, self._evidence)

    @classmethod
    def deserialize(
        cls,
        data: bytes,
        *,
        verification_time: datetime | None = None,
        collateral: str | dict[str, str] | CollateralFetcher | None = None,
    ) -> AttestationQuote:
        """Parse and verify bytes from :meth:`serialize` (``collateral`` as for
        :meth:`EnclaveInstanceInfo.deserialize`); :class:`InvalidEnclaveError` for anything
        malformed, oversized or unverifiable."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidEnclaveError(f"an AttestationQuote is bytes, not {type(data).__name__}")
        reader = Reader(data, error=InvalidEnclaveError, what="AttestationQuote")
        if reader.raw(len(_MAGIC), "magic") != _MAGIC:
            raise reader.fail(f"does not start with {_MAGIC!r}: not an AttestationQuote")
        version = reader.u8("version")
        if version != _VERSION:
            raise reader.fail(f"version {version} is not supported (this library reads {_VERSION})")
        report_data = reader.raw(REPORT_DATA_SIZE, "report data")
        evidence_type = reader.text16("evidence type", 64)
        evidence = reader.bytes32("evidence", MAX_EVIDENCE_SIZE)
        reader.expect_end()
        evidence = with_collateral(evidence_type, evidence, collateral)
        return cls(report_data, evidence_type, evidence, verification_time=verification_time)
