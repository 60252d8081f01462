"""EnclaveInstanceInfo: what a client downloads from the untrusted host, and re-verifies."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sanctorum.attestation import dcap as _dcap  # noqa: F401  (registers its verifier)
from sanctorum.attestation import mock as _mock  # noqa: F401  (registers its verifier)
from sanctorum.attestation import simulated as _simulated  # noqa: F401  (registers its verifier)
from sanctorum.attestation.collateral import CollateralFetcher
from sanctorum.attestation.dcap import (
    DCAP_EVIDENCE_TYPE,
    decode_dcap_evidence,
    encode_dcap_evidence,
)
from sanctorum.attestation.evidence import Attested, EvidenceClaims, verify_evidence
from sanctorum.common.codec import Reader, Writer
from sanctorum.common.errors import InvalidEnclaveError, SanctorumError
from sanctorum.common.keys import Curve25519PrivateKey, Curve25519PublicKey, Ed25519PublicKey
from sanctorum.mail.policy import MinSizePolicy
from sanctorum.mail.post_office import PostOffice

_MAGIC = b"SNCI"
_VERSION = 1
MAX_EVIDENCE_SIZE = 1 << 20
MAX_SERIALIZED_SIZE = MAX_EVIDENCE_SIZE + 4096


def key_binding(signing_key: Ed25519PublicKey, encryption_key: Curve25519PublicKey) -> bytes:
    """The report data that binds an enclave's two keys to its evidence (DESIGN §5)."""
    return hashlib.sha512(signing_key.encoded + encryption_key.encoded).digest()


def with_collateral(
    evidence_type: str, evidence: bytes, collateral: str | dict[str, str] | CollateralFetcher | None
) -> bytes:
    """DCAP ``evidence`` with ``collateral`` in place of what the host shipped (other evidence,
    or no collateral given: as it is)."""
    if collateral is None or evidence_type != DCAP_EVIDENCE_TYPE:
        return evidence
    quote, _ = decode_dcap_evidence(evidence)
    if isinstance(collateral, CollateralFetcher):
        try:
            collateral = collateral.collateral_for(quote)
        except SanctorumError as error:
            raise InvalidEnclaveError(f"cannot get fresh collateral: {error}") from None
    return encode_dcap_evidence(quote, collateral)


class EnclaveInstanceInfo(Attested):
    """A verified description of one running enclave instance.

    Every property is derived from attestation evidence that was verified when this object was
    made; the enclave's data signing key and Mail encryption key are bound to that evidence.
    Get one from :meth:`deserialize` (clients) or from ``EnclaveHost.enclave_instance_info``.
    """

    __slots__ = ("_claims", "_encryption_key", "_evidence", "_evidence_type", "_signing_key")

    def __init__(
        self,
        signing_key: Ed25519PublicKey,
        encryption_key: Curve25519PublicKey,
        evidence_type: str,
        evidence: bytes,
        *,
        verification_time: datetime | None = None,
    ) -> None:
        """Verify ``evidence`` (at ``verification_time``, default now) and its binding to the
        two keys.

        Raises :class:`InvalidEnclaveError` if the evidence does not verify or was made for
        other keys.
        """
        if len(evidence) > MAX_EVIDENCE_SIZE:
            raise InvalidEnclaveError(
                f"attestation evidence of {len(evidence)} bytes is over the limit of "
                f"{MAX_EVIDENCE_SIZE} bytes"
            )
        claims = verify_evidence(evidence_type, evidence, verification_time)
        if claims.report_data != key_binding(signing_key, encryption_key):
            raise InvalidEnclaveError(
                "key binding mismatch: the evidence's report data is not SHA-512 of this "
                "instance's signing and encryption keys, so the keys were not made by the "
                "attested enclave"
            )
        self._signing_key = signing_key
        self._encryption_key = encryption_key
        self._evidence_type = evidence_type
        self._evidence = bytes(evidence)
        self._claims: EvidenceClaims = claims

    @property
    def data_signing_key(self) -> Ed25519PublicKey:
        """The enclave's Ed25519 key for data it signs; see :meth:`verifier`."""
        return self._signing_key

    @property
    def encryption_key(self) -> Curve25519PublicKey:
        """The enclave's X25519 Mail key; new at every enclave start."""
        return self._encryption_key

    def verifier(self) -> Ed25519PublicKey:
        """The key to check data the enclave signed: ``verifier().verify(signature, data)``."""
        return self._signing_key

    def create_post_office(
        self,
        sender_private_key: Curve25519PrivateKey,
        topic: str = "default",
        min_size_policy: MinSizePolicy | None = None,
    ) -> PostOffice:
        """A :class:`PostOffice` that seals mail to this enclave instance."""
        return PostOffice(sender_private_key, self._encryption_key, topic, min_size_policy)

    def serialize(self) -> bytes:
        """Canonical, versioned bytes; :meth:`deserialize` re-verifies them."""
        return (
            Writer()
            .raw(_MAGIC)
            .u8(_VERSION)
            .raw(self._signing_key.encoded)
            .raw(self._encryption_key.encoded)
            .text16(self._evidence_type)
            .bytes32(self._evidence)
            .getvalue()
        )

    @classmethod
    def deserialize(
        cls,
        data: bytes,
        *,
        verification_time: datetime | None = None,
        collateral: str | dict[str, str] | CollateralFetcher | None = None,
    ) -> EnclaveInstanceInfo:
        """Parse and fully re-verify bytes from :meth:`serialize`, at ``verification_time``
        (default now; recorded hardware evidence is checked at the time it was valid).

        For DCAP evidence, ``collateral`` replaces the collateral the host shipped: your own
        (JSON text or dict), or a :class:`CollateralFetcher` to fetch it fresh.

        Raises :class:`InvalidEnclaveError` for anything malformed, truncated, oversized or
        unverifiable, and never trusts a field the evidence does not back.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidEnclaveError(f"an EnclaveInstanceInfo is bytes, not {type(data).__name__}")
        if len(data) > MAX_SERIALIZED_SIZE:
            raise InvalidEnclaveError(
                f"EnclaveInstanceInfo of {len(data)} bytes is over the limit of "
                f"{MAX_SERIALIZED_SIZE} bytes"
            )
        reader = Reader(data, error=InvalidEnclaveError, what="EnclaveInstanceInfo")
        magic = reader.raw(len(_MAGIC), "magic")
        if magic != _MAGIC:
            raise reader.fail(f"does not start with {_MAGIC!r}: not an EnclaveInstanceInfo")
        version = reader.u8("version")
        if version != _VERSION:
            raise reader.fail(
                f"version {version} is not supported (this library reads version {_VERSION})"
            )
        signing_raw = reader.raw(32, "signing key")
        encryption_raw = reader.raw(32, "encryption key")
        evidence_type = reader.text16("evidence type", 64)
        evidence = reader.bytes32("evidence", MAX_EVIDENCE_SIZE)
        reader.expect_end()
        evidence = with_collateral(evidence_type, evidence, collateral)
        try:
            signing_key = Ed25519PublicKey(signing_raw)
            encryption_key = Curve25519PublicKey(encryption_raw)
        except ValueError as error:
            raise InvalidEnclaveError(f"malformed EnclaveInstanceInfo: {error}") from None
        return cls(
            signing_key,
            encryption_key,
            evidence_type,
            evidence,
            verification_time=verification_time,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EnclaveInstanceInfo):
            return NotImplemented
        return self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash(self.serialize())

    def __repr__(self) -> str:
        return (
            f"EnclaveInstanceInfo(mode={self.enclave_mode.value}, "
            f"security={self.security_info.summary.name}, code_hash={self.code_hash}, "
            f"signer_hash={self.signer_hash}, product_id={self.product_id}, "
            f"revocation_level={self.revocation_level})"
        )
