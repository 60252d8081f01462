"""Enclave modes and the security summary a client sees."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class EnclaveMode(enum.Enum):
    """Where an enclave runs (DESIGN §3). Only RELEASE can be secure."""

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
class EnclaveSecurityInfo:
    """The security assessment derived from an enclave's attestation evidence."""

    summary: SecuritySummary
    reason: str
    timestamp: datetime
    """When the evidence was produced (timezone-aware, UTC)."""
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = field(default=())
