"""Enclave modes and the security summary a client sees."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class EnclaveMode(enum.Enum):
    """Where an enclave runs. Only RELEASE can be secure."""

    MOCK = "mock"
    SIMULATION = "simulation"
    DEBUG = "debug"
    RELEASE = "release"

    @classmethod
    def parse(cls, value: str | EnclaveMode) -> EnclaveMode:
        """Accept an :class:`EnclaveMode` or its name in any case."""
        if isinstance(value, EnclaveMode):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            names = ", ".join(mode.value for mode in cls)
            raise ValueError(f"unknown enclave mode {value!r}: use one of {names}") from None


class SecuritySummary(enum.IntEnum):
    """How far a client can trust an enclave; higher is better."""

    INSECURE = 0
    STALE = 1
    SECURE = 2


@dataclass(frozen=True)
class CollateralInfo:
    """What an SGX DCAP assessment rests on: when Intel issued each piece of the collateral the
    quote was verified with, and the TCB evaluation data numbers it carries.

    Every value comes from Intel-signed data that the verifier checked. The host picks the
    collateral it ships, so these dates say how old that choice is.
    """

    tcb_info_issued: datetime
    qe_identity_issued: datetime
    pck_crl_issued: datetime
    root_ca_crl_issued: datetime
    tcb_info_evaluation_data_number: int
    qe_identity_evaluation_data_number: int

    def issue_dates(self) -> dict[str, datetime]:
        """Each item's issue date by name (a CRL's ``thisUpdate``, a JSON's ``issueDate``)."""
        return {
            "TCB info": self.tcb_info_issued,
            "QE identity": self.qe_identity_issued,
            "PCK CRL": self.pck_crl_issued,
            "root CA CRL": self.root_ca_crl_issued,
        }

    @property
    def oldest_issue_date(self) -> datetime:
        """The issue date of the oldest item, the root CA CRL included."""
        return min(self.issue_dates().values())

    @property
    def oldest_reissued_item(self) -> tuple[str, datetime]:
        """Name and issue date of the oldest item Intel reissues continuously (TCB info, QE
        identity, PCK CRL): what ``EXPIRE:`` counts from.

        The root CA CRL is left out: Intel issues it about once a year, so counting from it
        would refuse every honest attestation for any ``EXPIRE:`` under a year.
        """
        dates = self.issue_dates()
        del dates["root CA CRL"]
        name = min(dates, key=lambda item: dates[item])
        return name, dates[name]

    @property
    def tcb_evaluation_data_number(self) -> int:
        """The lower of the TCB info's and the QE identity's numbers: collateral is only as
        current as its older part. Intel raises the number at each TCB recovery."""
        return min(self.tcb_info_evaluation_data_number, self.qe_identity_evaluation_data_number)


@dataclass(frozen=True)
class EnclaveSecurityInfo:
    """The security assessment derived from an enclave's attestation evidence."""

    summary: SecuritySummary
    reason: str
    timestamp: datetime
    """How fresh the evidence is (timezone-aware, UTC); ``EXPIRE:`` counts from it. Mock and
    simulated evidence: when it was produced. SGX DCAP (a quote carries no time of its own):
    the issue date of the oldest collateral item Intel reissues continuously, see
    :attr:`CollateralInfo.oldest_reissued_item`."""
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = field(default=())
    collateral: CollateralInfo | None = None
    """For SGX DCAP evidence, the collateral's dates and TCB evaluation data numbers; None for
    evidence without collateral (mock, simulation)."""
