"""An enclave's persistence key from a KDS (enclave side, sans-IO but for ``fetch``).

At start, before its sealed state opens, an enclave whose ``enclave.toml`` has a ``[kds]`` table
asks the KDS (through its host, which carries the request) for the key of its persistence spec,
and seals its state with keys derived from that key instead of the platform's: the state then
opens on any machine whose enclave the KDS gives the key to.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

from sanctorum.attestation.constraint import EnclaveConstraint
from sanctorum.attestation.instance_info import EnclaveInstanceInfo
from sanctorum.common.bundle import KdsConfig, kds_policy
from sanctorum.common.errors import InvalidConstraintError, InvalidKeyError, KdsError, KeySpecError
from sanctorum.common.hashes import SHA256Hash
from sanctorum.common.keys import Curve25519PrivateKey, Ed25519PublicKey
from sanctorum.kds.protocol import open_private_response
from sanctorum.kds.spec import KeySpec, MasterKeyType

PERSISTENCE_KEY_NAME = "sanctorum-persistence"
KDS_REQUEST = b"sanctorum:kds-private\0"
"""Prefixes the enclave's key request to its host while it loads (its body: the /private
request)."""

KdsFetch = Callable[[bytes], bytes]
"""Carries a ``/private`` request body (JSON) to the KDS and brings its answer back (JSON)."""

KeySource = Callable[[EnclaveInstanceInfo, Curve25519PrivateKey], bytes]
"""Gives an enclave instance (its attestation and encryption key) its persistence key."""


def persistence_spec(
    config: KdsConfig, code_hash: SHA256Hash, signer_hash: SHA256Hash, product_id: int
) -> KeySpec:
    """The spec of the key that seals this enclave's persistent state."""
    policy = kds_policy(config, str(code_hash), str(signer_hash), product_id)
    try:
        return KeySpec(PERSISTENCE_KEY_NAME, MasterKeyType.parse(config.master_key_type), policy)
    except KeySpecError as error:
        raise KdsError(f"enclave.toml [kds]: {error}") from None


def kds_key_source(config: KdsConfig, fetch: KdsFetch) -> KeySource:
    """A :data:`KeySource` asking the KDS through ``fetch`` and checking its answer against
    ``config`` (the KDS constraint, the spec): :class:`KdsError` if it cannot be trusted."""
    try:
        constraint = EnclaveConstraint.parse(config.constraint)
    except InvalidConstraintError as error:
        raise KdsError(f"enclave.toml [kds].constraint: {error}") from None
    try:
        cluster_key = (
            Ed25519PublicKey(bytes.fromhex(config.cluster_key)) if config.cluster_key else None
        )
    except InvalidKeyError as error:
        raise KdsError(f"enclave.toml [kds].cluster_key: {error}") from None

    def source(info: EnclaveInstanceInfo, key: Curve25519PrivateKey) -> bytes:
        spec = persistence_spec(config, info.code_hash, info.signer_hash, info.product_id)
        request = {
            **spec.to_json(),
            "appAttestationReport": base64.b64encode(info.serialize()).decode(),
        }
        answer = fetch(json.dumps(request).encode())
        try:
            document = json.loads(answer)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise KdsError("the KDS's answer is not JSON") from None
        if isinstance(document, dict) and isinstance(document.get("reason"), str):
            raise KdsError(
                f"the KDS refused this enclave its persistence key: {document['reason']}"
            )
        return open_private_response(document, spec, constraint, key, cluster_key=cluster_key)

    return source
