"""EnclaveConstraint: which enclaves a client trusts (DESIGN §6).

One-line form, space separated::

    C:<hash>            acceptable code hash (repeatable)
    S:<hash>            acceptable signer hash (repeatable; needs PROD:)
    PROD:<n>            product id, 0-65535
    REVOKE:<n>          minimum revocation level, 0-65534
    SEC:<level>         minimum security: SECURE (default), STALE or INSECURE
    EXPIRE:<duration>   maximum age of the attestation, ISO-8601 (P1D, PT12H, P1W, P1DT30M, …)
    TCBEVAL:<n>         minimum TCB evaluation data number of SGX DCAP collateral

SECURE accepts SECURE only, STALE accepts SECURE or STALE, and INSECURE accepts INSECURE only,
so a development client cannot be pointed at a production enclave by mistake.

For SGX DCAP evidence, ``EXPIRE:`` counts from the issue date of the oldest collateral item Intel
reissues continuously (TCB info, QE identity, PCK CRL), since the host chooses the collateral
and a quote carries no time of its own. ``TCBEVAL:`` needs the lower of the TCB info's and QE
identity's ``tcbEvaluationDataNumber`` to be at least ``n`` (Intel raises it at each TCB
recovery); evidence without collateral (mock, simulation) has none and fails it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sanctorum.common.errors import InvalidConstraintError, InvalidEnclaveError, InvalidKeyError
from sanctorum.common.hashes import SHA256Hash
from sanctorum.common.mode import SecuritySummary

if TYPE_CHECKING:
    from sanctorum.attestation.evidence import Attested

MAX_CONSTRAINT_LENGTH = 64 * 1024

# Days, hours, minutes and seconds only: years and months have no fixed length.
_DURATION = re.compile(
    r"P(?:(?P<weeks>\d{1,12})W|(?:(?P<days>\d{1,12})D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d{1,12})H)?(?:(?P<minutes>\d{1,12})M)?(?:(?P<seconds>\d{1,12})S)?)?)",
    re.ASCII,
)
_MAX_DURATION = timedelta(days=100 * 366)
_MAX_TCB_EVALUATION = 2**32 - 1  # a u32 in Intel's collateral


def parse_duration(text: str) -> timedelta:
    """Parse an ISO-8601 duration of weeks, or of days, hours, minutes and seconds."""
    match = _DURATION.fullmatch(text)
    if match is None or text == "P":
        raise InvalidConstraintError(
            f"EXPIRE:{text} is not an ISO-8601 duration of weeks, days, hours, minutes and "
            "seconds (examples: P7D, PT12H, P1DT30M, P2W); years and months are not allowed"
        )
    parts = {name: int(value) for name, value in match.groupdict().items() if value}
    try:
        duration = timedelta(**parts)
    except OverflowError:
        duration = _MAX_DURATION * 2
    if duration <= timedelta(0) or duration > _MAX_DURATION:
        raise InvalidConstraintError(f"EXPIRE:{text} must be more than zero and under 100 years")
    return duration


def format_duration(duration: timedelta) -> str:
    """The canonical ISO-8601 form of a whole-second duration (inverse of parse)."""
    seconds = int(duration.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = "P" + (f"{days}D" if days else "")
    time_part = "".join(
        f"{value}{unit}" for value, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if value
    )
    return text + ("T" + time_part if time_part else "")


@dataclass(frozen=True)
class EnclaveConstraint:
    """The rules an :class:`EnclaveInstanceInfo` (or an ``AttestationQuote``) must meet for a
    client to trust it."""

    acceptable_code_hashes: frozenset[SHA256Hash] = field(default_factory=frozenset)
    acceptable_signers: frozenset[SHA256Hash] = field(default_factory=frozenset)
    product_id: int | None = None
    minimum_revocation_level: int | None = None
    minimum_security_level: SecuritySummary = SecuritySummary.SECURE
    max_attestation_age: timedelta | None = None
    minimum_tcb_evaluation_data_number: int | None = None
    """``TCBEVAL:``: the lowest TCB evaluation data number of SGX DCAP collateral accepted."""

    def __post_init__(self) -> None:
        if not self.acceptable_code_hashes and not self.acceptable_signers:
            raise InvalidConstraintError(
                "a constraint needs at least one acceptable code hash (C:) or signer (S:)"
            )
        if self.acceptable_signers and self.product_id is None:
            raise InvalidConstraintError(
                "a signer constraint (S:) needs a product id (PROD:): one signer may sign "
                "several products"
            )
        if self.product_id is not None and not 0 <= self.product_id <= 65535:
            raise InvalidConstraintError(f"PROD must be from 0 to 65535, not {self.product_id}")
        level = self.minimum_revocation_level
        if level is not None and not 0 <= level <= 65534:
            raise InvalidConstraintError(f"REVOKE must be from 0 to 65534, not {level}")
        age = self.max_attestation_age
        if age is not None and (age <= timedelta(0) or age % timedelta(seconds=1)):
            raise InvalidConstraintError("EXPIRE must be a positive whole number of seconds")
        evaluation = self.minimum_tcb_evaluation_data_number
        if evaluation is not None and not 0 <= evaluation <= _MAX_TCB_EVALUATION:
            raise InvalidConstraintError(
                f"TCBEVAL must be from 0 to {_MAX_TCB_EVALUATION}, not {evaluation}"
            )

    @classmethod
    def parse(cls, text: str) -> EnclaveConstraint:
        """Parse the one-line form; :class:`InvalidConstraintError` says which term is wrong."""
        if not isinstance(text, str):
            raise InvalidConstraintError(f"a constraint is a string, not {type(text).__name__}")
        if len(text) > MAX_CONSTRAINT_LENGTH:
            raise InvalidConstraintError(
                f"a constraint string is at most {MAX_CONSTRAINT_LENGTH} characters"
            )
        codes: set[SHA256Hash] = set()
        signers: set[SHA256Hash] = set()
        single: dict[str, str] = {}
        for term in text.split():
            key, separator, value = term.partition(":")
            key = key.upper()
            if not separator or not value:
                raise InvalidConstraintError(f"constraint term {term[:80]!r} is not KEY:VALUE")
            if key in ("C", "S"):
                try:
                    (codes if key == "C" else signers).add(SHA256Hash.parse(value))
                except InvalidKeyError as error:
                    raise InvalidConstraintError(f"{key}: {error}") from None
            elif key in ("PROD", "REVOKE", "SEC", "EXPIRE", "TCBEVAL"):
                if key in single:
                    raise InvalidConstraintError(f"{key}: appears more than once")
                single[key] = value
            else:
                raise InvalidConstraintError(
                    f"unknown constraint term {key[:20]!r}: use C, S, PROD, REVOKE, SEC, EXPIRE "
                    "or TCBEVAL"
                )
        return cls(
            acceptable_code_hashes=frozenset(codes),
            acceptable_signers=frozenset(signers),
            product_id=_parse_int("PROD", single.get("PROD")),
            minimum_revocation_level=_parse_int("REVOKE", single.get("REVOKE")),
            minimum_security_level=_parse_security(single.get("SEC", "SECURE")),
            max_attestation_age=(parse_duration(single["EXPIRE"]) if "EXPIRE" in single else None),
            minimum_tcb_evaluation_data_number=_parse_int(
                "TCBEVAL", single.get("TCBEVAL"), digits=10
            ),
        )

    def format(self) -> str:
        """The canonical one-line form; ``parse(format())`` gives an equal constraint."""
        terms = [f"C:{code}" for code in sorted(self.acceptable_code_hashes, key=str)]
        terms += [f"S:{signer}" for signer in sorted(self.acceptable_signers, key=str)]
        if self.product_id is not None:
            terms.append(f"PROD:{self.product_id}")
        if self.minimum_revocation_level is not None:
            terms.append(f"REVOKE:{self.minimum_revocation_level}")
        terms.append(f"SEC:{self.minimum_security_level.name}")
        if self.max_attestation_age is not None:
            terms.append(f"EXPIRE:{format_duration(self.max_attestation_age)}")
        if self.minimum_tcb_evaluation_data_number is not None:
            terms.append(f"TCBEVAL:{self.minimum_tcb_evaluation_data_number}")
        return " ".join(terms)

    def __str__(self) -> str:
        return self.format()

    @staticmethod
    def _accepts(required: SecuritySummary, actual: SecuritySummary) -> bool:
        if required is SecuritySummary.INSECURE:
            return actual is SecuritySummary.INSECURE
        return actual >= required

    def check(self, info: Attested, now: datetime | None = None) -> None:
        """Raise :class:`InvalidEnclaveError` naming the first rule ``info`` fails."""
        code_ok = info.code_hash in self.acceptable_code_hashes
        signer_ok = info.signer_hash in self.acceptable_signers
        if not code_ok and not signer_ok:
            accepted = [f"C:{code}" for code in self.acceptable_code_hashes]
            accepted += [f"S:{signer}" for signer in self.acceptable_signers]
            raise InvalidEnclaveError(
                f"enclave fails the constraint: its code hash {info.code_hash} and signer "
                f"{info.signer_hash} match none of {', '.join(sorted(accepted))}"
            )
        if self.product_id is not None and self.product_id != info.product_id:
            raise InvalidEnclaveError(
                f"enclave fails PROD:{self.product_id}: its product id is {info.product_id}"
            )
        level = self.minimum_revocation_level
        if level is not None and info.revocation_level < level:
            raise InvalidEnclaveError(
                f"enclave fails REVOKE:{level}: its revocation level is {info.revocation_level}"
            )
        summary = info.security_info.summary
        required = self.minimum_security_level
        if not self._accepts(required, summary):
            if required is SecuritySummary.INSECURE:
                hint = (
                    " (SEC:INSECURE accepts only insecure enclaves, so development clients are "
                    "never pointed at production by mistake)"
                )
            elif summary is SecuritySummary.INSECURE:
                hint = (
                    f" (SEC:{required.name} is also what a constraint without a SEC: term asks "
                    "for). To accept an insecure enclave on purpose — mock or simulation mode, "
                    "for development — add SEC:INSECURE to the constraint"
                )
            else:
                hint = ""
            raise InvalidEnclaveError(
                f"enclave fails SEC:{required.name}: it is {summary.name} "
                f"({info.security_info.reason}){hint}"
            )
        if self.max_attestation_age is not None:
            self._check_age(info, self.max_attestation_age, now or datetime.now(UTC))
        if self.minimum_tcb_evaluation_data_number is not None:
            self._check_tcb_evaluation(info, self.minimum_tcb_evaluation_data_number)

    @staticmethod
    def _check_age(info: Attested, limit: timedelta, now: datetime) -> None:
        security = info.security_info
        age = now - security.timestamp
        if age <= limit:
            return
        term = f"EXPIRE:{format_duration(limit)}"
        if security.collateral is None:
            raise InvalidEnclaveError(
                f"enclave fails {term}: its attestation is {age} old; ask the host to refresh it"
            )
        item, issued = security.collateral.oldest_reissued_item
        raise InvalidEnclaveError(
            f"enclave fails {term}: its oldest DCAP collateral, the {item} issued "
            f"{issued.isoformat()}, is {age} old; ask the host to refresh its collateral, or "
            "fetch it fresh yourself (EnclaveInstanceInfo.deserialize(..., "
            "collateral=CollateralFetcher(...)))"
        )

    @staticmethod
    def _check_tcb_evaluation(info: Attested, minimum: int) -> None:
        collateral = info.security_info.collateral
        if collateral is None:
            raise InvalidEnclaveError(
                f"enclave fails TCBEVAL:{minimum}: its {info.enclave_mode.value}-mode attestation "
                f"({info.evidence_type} evidence) has no TCB evaluation data number: only SGX "
                "DCAP collateral carries one; drop TCBEVAL: for development enclaves"
            )
        number = collateral.tcb_evaluation_data_number
        if number < minimum:
            raise InvalidEnclaveError(
                f"enclave fails TCBEVAL:{minimum}: its collateral's TCB evaluation data number "
                f"is {number} (TCB info {collateral.tcb_info_evaluation_data_number}, QE "
                f"identity {collateral.qe_identity_evaluation_data_number}); ask the host to "
                "refresh its collateral, or fetch it fresh yourself"
            )


def _parse_int(key: str, value: str | None, digits: int = 6) -> int | None:
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > digits:
        raise InvalidConstraintError(f"{key}:{value[:20]} is not a whole number")
    return int(value)


def _parse_security(value: str) -> SecuritySummary:
    try:
        return SecuritySummary[value.upper()]
    except KeyError:
        raise InvalidConstraintError(
            f"SEC:{value[:20]} is not a security level: use SECURE, STALE or INSECURE"
        ) from None
