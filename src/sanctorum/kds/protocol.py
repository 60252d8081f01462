"""The KDS's two requests, as JSON documents (sans-IO): parsing, answers, and the checks a
requester makes of an answer.

``POST /public {name, masterKeyType, policyConstraint}`` →
``{publicKey, signature, kdsAttestationReport}``: the X25519 public key of the spec's key, signed
by the KDS's data signing key over ``PUBLIC_KEY_CONTEXT | canonical spec | public key``, and the
KDS's serialized ``EnclaveInstanceInfo``. Anyone may ask.

``POST /private {appAttestationReport, name, masterKeyType, policyConstraint}`` →
``{kdsAttestationReport, encryptedPrivateKey}``: the spec's key as a mail the KDS enclave sealed
to the requester's attested encryption key, with the canonical spec as its envelope. Only an
enclave whose attestation meets the spec's policy is answered.

Binary fields are standard base64. Errors are ``{"reason": ...}`` with the status of the
:class:`KdsRequestError` raised (400: malformed; 403: the requester may not have the key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sanctorum.attestation.constraint import EnclaveConstraint
from sanctorum.attestation.instance_info import EnclaveInstanceInfo
from sanctorum.common.errors import (
    InvalidEnclaveError,
    InvalidKeyError,
    InvalidSignatureError,
    KdsError,
    KdsRequestError,
    KeySpecError,
    MailError,
    SanctorumError,
)
from sanctorum.common.keys import Curve25519PrivateKey, Curve25519PublicKey, Ed25519PublicKey
from sanctorum.common.mode import EnclaveMode
from sanctorum.kds.spec import KEY_SIZE, KeySpec, MasterKeyType
from sanctorum.mail.format import open_mail

PUBLIC_KEY_CONTEXT = b"sanctorum-kds-public-key\x00"
CLUSTER_CONTEXT = b"sanctorum-kds-cluster-answer\x00"
MAX_ATTESTATION_SIZE = 1 << 20  # base64 characters: a DCAP quote with collateral is ~20 KB


@dataclass(frozen=True)
class PrivateKeyRequest:
    """A parsed ``/private`` request: who asks (verified), and for which spec."""

    requester: EnclaveInstanceInfo
    spec: KeySpec


class KdsKey(NamedTuple):
    """A key a requester took from a ``/private`` answer, and the KDS that gave it."""

    key: bytes
    kds: EnclaveInstanceInfo
    """The KDS's verified attestation (it met the requester's KDS constraint)."""


def parse_public_request(document: object) -> KeySpec:
    """The spec a ``/public`` request asks for; :class:`KdsRequestError` (400) if malformed."""
    try:
        return KeySpec.from_json(document)
    except KeySpecError as error:
        raise KdsRequestError(400, str(error)) from None


def parse_private_request(
    document: object, verification_time: datetime | None = None
) -> PrivateKeyRequest:
    """The verified requester and spec of a ``/private`` request; :class:`KdsRequestError`:
    400 if it is malformed or the attestation does not verify."""
    spec = parse_public_request(document)
    assert isinstance(document, dict)
    report = _decode(document.get("appAttestationReport"), "appAttestationReport")
    try:
        requester = EnclaveInstanceInfo.deserialize(report, verification_time=verification_time)
    except SanctorumError as error:
        raise KdsRequestError(400, f"appAttestationReport does not verify: {error}") from None
    return PrivateKeyRequest(requester, spec)


def check_entitled(request: PrivateKeyRequest, now: datetime | None = None) -> None:
    """That the requester may have the spec's key; :class:`KdsRequestError` (403) if not."""
    if (
        request.spec.master_key_type is MasterKeyType.DEVELOPMENT
        and request.requester.enclave_mode is EnclaveMode.RELEASE
    ):
        raise KdsRequestError(
            403,
            "a release-mode enclave is never given a key of the development master key type "
            "(the KDS may run where its memory is readable): use the cluster type",
        )
    try:
        request.spec.policy().check(request.requester, now)
    except InvalidEnclaveError as error:
        raise KdsRequestError(
            403, f"the requester does not meet the key's policy constraint: {error}"
        ) from None


def public_key_signed_data(spec: KeySpec, public_key: bytes) -> bytes:
    """What the KDS signs in a ``/public`` answer."""
    return PUBLIC_KEY_CONTEXT + spec.canonical + public_key


def cluster_signed_data(spec: KeySpec, payload: bytes) -> bytes:
    """What the KDS's cluster key signs in an answer: the spec and the answer's key (the public
    key, or the sealed private key, which names its requester)."""
    return CLUSTER_CONTEXT + spec.canonical + hashlib.sha256(payload).digest()


def public_response(
    public_key: bytes, signature: bytes, kds_attestation: bytes, cluster: tuple[bytes, bytes]
) -> dict[str, str]:
    """``cluster``: the cluster key (raw Ed25519) and its signature of this answer."""
    return {
        "publicKey": _encode(public_key),
        "signature": _encode(signature),
        "kdsAttestationReport": _encode(kds_attestation),
        "clusterKey": cluster[0].hex(),
        "clusterSignature": _encode(cluster[1]),
    }


def private_response(
    kds_attestation: bytes, encrypted_private_key: bytes, cluster: tuple[bytes, bytes]
) -> dict[str, str]:
    return {
        "kdsAttestationReport": _encode(kds_attestation),
        "encryptedPrivateKey": _encode(encrypted_private_key),
        "clusterKey": cluster[0].hex(),
        "clusterSignature": _encode(cluster[1]),
    }


def error_response(error: KdsRequestError) -> dict[str, str]:
    return {"reason": error.reason}


# -- between the REST front and the KDS enclave -------------------------------------------------
# The front carries bytes only, parsing and encoding nothing: the request's path, a newline and
# its body as received; the enclave's answer is the status in three digits, then the body.


def front_request(path: str, body: bytes) -> bytes:
    """What the front passes the KDS enclave for a request."""
    return path.encode("ascii") + b"\n" + body


def split_front_request(data: bytes) -> tuple[str, bytes]:
    """The path and body of :func:`front_request`'s bytes ("" for a path that is none)."""
    path, _, body = data.partition(b"\n")
    return path.decode("ascii", "replace"), body


def front_answer(status: int, document: object) -> bytes:
    """What the KDS enclave answers the front: the status, then the JSON body."""
    return b"%03d" % status + json.dumps(document).encode()


def split_front_answer(data: bytes) -> tuple[int, bytes]:
    """The status and JSON body of :func:`front_answer`'s bytes (500 if they are not that)."""
    if len(data) < 3 or not data[:3].isdigit():
        return 500, b'{"reason": "the KDS enclave gave no answer"}'
    return int(data[:3]), data[3:]


# -- the requester's side --------------------------------------------------------------------


def verify_public_response(
    document: object,
    spec: KeySpec,
    kds_constraint: EnclaveConstraint,
    verification_time: datetime | None = None,
    cluster_key: Ed25519PublicKey | None = None,
) -> Curve25519PublicKey:
    """The spec's public key from a ``/public`` answer, after checking that the KDS meets
    ``kds_constraint`` and signed it for this spec (and, with ``cluster_key``, that the answer
    comes from that KDS cluster); :class:`KdsError` if not."""
    kds = _attested_kds(document, kds_constraint, verification_time)
    assert isinstance(document, dict)
    public_key = _decode(document.get("publicKey"), "publicKey", KdsError)
    signature = _decode(document.get("signature"), "signature", KdsError)
    _check_cluster(document, spec, public_key, cluster_key, "the cluster_key given")
    try:
        kds.verifier().verify(signature, public_key_signed_data(spec, public_key))
        return Curve25519PublicKey(public_key)
    except (InvalidSignatureError, ValueError):
        raise KdsError(
            "the KDS's answer is not signed by the attested KDS for this key spec: it was "
            "altered, or answers another spec"
        ) from None


def open_private_response(
    document: object,
    spec: KeySpec,
    kds_constraint: EnclaveConstraint,
    requester_key: Curve25519PrivateKey,
    verification_time: datetime | None = None,
    cluster_key: Ed25519PublicKey | None = None,
) -> KdsKey:
    """The spec's key from a ``/private`` answer, opened with the requester's encryption key,
    after checking that the KDS meets ``kds_constraint``, that the mail comes from the KDS's
    attested key, that it is for this spec, and with ``cluster_key`` that it comes from that
    KDS cluster (not another KDS of the same code); :class:`KdsError` if not."""
    kds = _attested_kds(document, kds_constraint, verification_time)
    assert isinstance(document, dict)
    sealed = _decode(document.get("encryptedPrivateKey"), "encryptedPrivateKey", KdsError)
    _check_cluster(document, spec, sealed, cluster_key)
    try:
        mail = open_mail(requester_key, sealed)
    except MailError as error:
        raise KdsError(
            f"the KDS's answer does not open with this enclave's key ({error}): it was "
            "altered, or answers another request"
        ) from None
    if mail.authenticated_sender != kds.encryption_key:
        raise KdsError("the KDS's answer was not sealed by the attested KDS")
    if mail.envelope != spec.canonical:
        raise KdsError("the KDS's answer is for another key spec than the one asked for")
    if len(mail.body) != KEY_SIZE:
        raise KdsError(f"the KDS's answer holds {len(mail.body)} bytes, not a {KEY_SIZE}-byte key")
    return KdsKey(mail.body, kds)


def answer_cluster_key(document: dict[Any, Any], spec: KeySpec) -> Ed25519PublicKey:
    """The cluster key a ``/private`` answer names, once its signature of the answer checks
    out; :class:`KdsError` if not."""
    named = document.get("clusterKey")
    try:
        cluster_key = Ed25519PublicKey(bytes.fromhex(named if isinstance(named, str) else ""))
    except (ValueError, InvalidKeyError):
        raise KdsError("the KDS's answer is malformed: clusterKey is not 64 hex digits") from None
    sealed = _decode(document.get("encryptedPrivateKey"), "encryptedPrivateKey", KdsError)
    _check_cluster(document, spec, sealed, cluster_key)
    return cluster_key


_PINNED_BY_ENCLAVE = (
    "[kds].cluster_key, or else that of the first KDS that gave this instance a key; in tests, "
    "--enclave-kds-url names your KDS"
)


def _check_cluster(
    document: dict[Any, Any],
    spec: KeySpec,
    payload: bytes,
    cluster_key: Ed25519PublicKey | None,
    pinned_by: str = _PINNED_BY_ENCLAVE,
) -> None:
    if cluster_key is None:
        return
    signature = _decode(document.get("clusterSignature"), "clusterSignature", KdsError)
    try:
        cluster_key.verify(signature, cluster_signed_data(spec, payload))
    except InvalidSignatureError:
        raise KdsError(
            f"the KDS's answer is not signed by the pinned KDS cluster key ({pinned_by}): it "
            "comes from another KDS, perhaps one the host runs, or was altered"
        ) from None


def _attested_kds(
    document: object, constraint: EnclaveConstraint, verification_time: datetime | None
) -> EnclaveInstanceInfo:
    if not isinstance(document, dict):
        raise KdsError("the KDS's answer is not a JSON object")
    report = _decode(document.get("kdsAttestationReport"), "kdsAttestationReport", KdsError)
    try:
        kds = EnclaveInstanceInfo.deserialize(report, verification_time=verification_time)
        constraint.check(kds)
    except SanctorumError as error:
        raise KdsError(
            f"the KDS is not one this requester trusts (it fails the KDS constraint): {error}"
        ) from None
    return kds


def _encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode(
    value: object, field: str, error: type[KdsError] | None = None
) -> bytes:  # 400 for requests, a plain KdsError for answers
    problem = None
    if not isinstance(value, str):
        problem = f"{field} is a base64 string, not " + (
            "missing" if value is None else type(value).__name__
        )
    elif len(value) > MAX_ATTESTATION_SIZE:
        problem = f"{field} is over {MAX_ATTESTATION_SIZE} characters"
    else:
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            problem = f"{field} is not valid base64"
    if error is None:
        raise KdsRequestError(400, problem)
    raise error(f"the KDS's answer is malformed: {problem}")
