"""A client's side of the KDS: the public key a cluster's instances share, checked.

A client of a cluster (one enclave service behind several hosts) seals its requests to the
public key the KDS derives for a key spec, instead of one instance's key: every instance the KDS
gives the private key to, because it meets the spec's policy, can open them.
"""

from __future__ import annotations

import json
from datetime import datetime

import httpx

from sanctorum.attestation.constraint import EnclaveConstraint
from sanctorum.common.errors import InvalidKeyError, KdsError
from sanctorum.common.keys import Ed25519PublicKey
from sanctorum.kds.protocol import verify_public_response
from sanctorum.kds.spec import KeySpec
from sanctorum.mail.post_office import ClusterKey

_MAX_ANSWER_SIZE = 4 << 20  # a /public answer is a few KB (a DCAP attestation ~20 KB)


def cluster_key_from_response(
    document: object,
    spec: KeySpec,
    kds_constraint: EnclaveConstraint | str,
    *,
    cluster_key: Ed25519PublicKey | str | bytes | None = None,
    verification_time: datetime | None = None,
) -> ClusterKey:
    """The :class:`ClusterKey` in a ``/public`` answer (decoded JSON), once the KDS's
    attestation meets ``kds_constraint`` and its signature covers this spec (and, with
    ``cluster_key`` — 64 hex digits as ``sanctorum kds serve`` logs it, 32 raw bytes, or an
    Ed25519PublicKey — the answer comes from that KDS cluster); :class:`KdsError` if not."""
    if isinstance(kds_constraint, str):
        kds_constraint = EnclaveConstraint.parse(kds_constraint)
    if isinstance(cluster_key, (str, bytes)):
        cluster_key = _cluster_key(cluster_key)
    public_key = verify_public_response(
        document, spec, kds_constraint, verification_time, cluster_key=cluster_key
    )
    return ClusterKey(public_key, spec.canonical)


def fetch_cluster_key(
    url: str,
    spec: KeySpec,
    kds_constraint: EnclaveConstraint | str,
    *,
    cluster_key: Ed25519PublicKey | str | bytes | None = None,
    timeout: float = 30.0,
) -> ClusterKey:
    """Ask the KDS at ``url`` for the public key of ``spec`` and check the answer (see
    :func:`cluster_key_from_response`). Use the spec's policy as the client's constraint: it
    names the enclaves that can read what is sealed to the key.

    Raises :class:`KdsError` if the KDS cannot be reached, refuses, or cannot be trusted."""
    if url.rstrip("/").endswith(("/public", "/private")):
        raise KdsError(f"{url} names a request: give the KDS's base URL, without /public")
    body = bytearray()
    try:
        with httpx.stream(
            "POST", url.rstrip("/") + "/public", json=spec.to_json(), timeout=timeout
        ) as response:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > _MAX_ANSWER_SIZE:
                    raise KdsError(
                        f"the KDS at {url} answered over {_MAX_ANSWER_SIZE} bytes: not a KDS"
                    )
    except httpx.HTTPError as error:
        raise KdsError(
            f"could not reach the KDS at {url} ({type(error).__name__}: {error}); check that "
            "it runs there"
        ) from None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        document = None
    if response.status_code != httpx.codes.OK:
        reason = document.get("reason") if isinstance(document, dict) else None
        raise KdsError(
            f"the KDS at {url} refused the public key of {spec.name!r} "
            f"({response.status_code}): {reason or bytes(body[:200])!r}"
        )
    return cluster_key_from_response(document, spec, kds_constraint, cluster_key=cluster_key)


def _cluster_key(value: str | bytes) -> Ed25519PublicKey:
    try:
        raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else value
        return Ed25519PublicKey(raw)
    except (ValueError, InvalidKeyError):
        raise KdsError(
            "cluster_key is the KDS cluster's key: 64 hex digits, as sanctorum kds serve logs "
            f"it (or 32 raw bytes), not {value!r:.80}"
        ) from None
