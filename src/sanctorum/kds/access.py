"""What an enclave with a ``[kds]`` table takes from its KDS (enclave side, sans-IO).

- Its **persistence key**: at start, before its sealed state opens, the enclave asks the KDS
  (through its host, which carries the request) for the key of its persistence spec, and seals
  its state with keys derived from it instead of the platform's: the state then opens on any
  machine whose enclave the KDS gives the key to.
- **Mail keys**: a mail sealed to a key spec (a client's cluster post office) names the spec in
  its header; the host asks the KDS for the key on the enclave's behalf and hands the answer in
  with the mail. Every instance the KDS gives the key to can open such mail.

Either way the enclave checks the answer against its ``[kds]`` table: the KDS meets the KDS
constraint (and the pinned cluster key), the key is sealed to this instance, for this spec.
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
from sanctorum.kds.protocol import KdsKey, answer_cluster_key, open_private_response
from sanctorum.kds.spec import KeySpec, MasterKeyType

PERSISTENCE_KEY_NAME = "sanctorum-persistence"
KDS_REQUEST = b"sanctorum:kds-private\0"
"""Prefixes the enclave's key request to its host while it loads (its body: the /private
request)."""

KdsFetch = Callable[[bytes], bytes]
"""Carries a ``/private`` request body (JSON) to the KDS and brings its answer back (JSON)."""


def persistence_spec(
    config: KdsConfig, code_hash: SHA256Hash, signer_hash: SHA256Hash, product_id: int
) -> KeySpec:
    """The spec of the key that seals this enclave's persistent state."""
    policy = kds_policy(config, str(code_hash), str(signer_hash), product_id)
    try:
        return KeySpec(PERSISTENCE_KEY_NAME, MasterKeyType.parse(config.master_key_type), policy)
    except KeySpecError as error:
        raise KdsError(f"enclave.toml [kds]: {error}") from None


def private_request(spec: KeySpec, requester: EnclaveInstanceInfo) -> bytes:
    """The body of the ``/private`` request for ``spec`` on behalf of ``requester``."""
    request = {
        **spec.to_json(),
        "appAttestationReport": base64.b64encode(requester.serialize()).decode(),
    }
    return json.dumps(request).encode()


class KdsAccess:
    """An enclave's use of the KDS its ``[kds]`` table names; :class:`KdsError` if the table
    is malformed. ``fetch`` carries the persistence key request (None: the enclave asks for
    none, having no persistent state)."""

    def __init__(self, config: KdsConfig, fetch: KdsFetch | None) -> None:
        try:
            self._constraint = EnclaveConstraint.parse(config.constraint)
        except InvalidConstraintError as error:
            raise KdsError(f"enclave.toml [kds].constraint: {error}") from None
        try:
            self._cluster_key = (
                Ed25519PublicKey(bytes.fromhex(config.cluster_key)) if config.cluster_key else None
            )
        except InvalidKeyError as error:
            raise KdsError(f"enclave.toml [kds].cluster_key: {error}") from None
        self._config = config
        self._fetch = fetch

    def persistence_key(self, info: EnclaveInstanceInfo, key: Curve25519PrivateKey) -> KdsKey:
        """The key this instance's persistent state is sealed with, asked through ``fetch``;
        its KDS cluster is then the only one this instance takes keys from."""
        assert self._fetch is not None, "an enclave with persistent state has a fetch"
        spec = persistence_spec(self._config, info.code_hash, info.signer_hash, info.product_id)
        answer = self._fetch(private_request(spec, info))
        taken, cluster_key = self._open(answer, spec, key, "persistence key")
        self.pin(cluster_key)
        return taken

    def check_spec(self, key_spec: bytes) -> KeySpec:
        """The spec a mail's header names; :class:`KdsError` if it is not a valid one."""
        try:
            return KeySpec.decode(key_spec)
        except KeySpecError as error:
            raise KdsError(f"the mail's key spec is not valid: {error}") from None

    def mail_key(
        self, key_spec: bytes, answer: bytes, key: Curve25519PrivateKey
    ) -> tuple[KdsKey, Ed25519PublicKey]:
        """The key of ``key_spec`` (a mail's header) from the KDS's ``answer`` (the host
        fetched it), checked as :meth:`persistence_key` checks its own, and the KDS cluster
        that gave it: :meth:`pin` it once a mail opened with the key."""
        spec = self.check_spec(key_spec)
        return self._open(
            answer,
            spec,
            key,
            f"key for the mail's spec {spec.name!r}",
            " (the client sealed the mail to a key spec whose policy this enclave does not "
            "meet: a client of this service should make the spec's policy its constraint)",
        )

    def pin(self, cluster_key: Ed25519PublicKey) -> None:
        """Take keys from this KDS cluster only (without ``[kds].cluster_key``: the first
        cluster that gave this instance a key it used; a host cannot swap in its own KDS's
        keys later)."""
        self._cluster_key = cluster_key

    def _open(
        self, answer: bytes, spec: KeySpec, key: Curve25519PrivateKey, what: str, hint: str = ""
    ) -> tuple[KdsKey, Ed25519PublicKey]:
        try:
            document = json.loads(answer)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise KdsError("the KDS's answer is not JSON") from None
        if isinstance(document, dict) and isinstance(document.get("reason"), str):
            raise KdsError(f"the KDS refused this enclave its {what}: {document['reason']}{hint}")
        taken = open_private_response(
            document, spec, self._constraint, key, cluster_key=self._cluster_key
        )
        assert isinstance(document, dict)  # it opened
        return taken, self._cluster_key or answer_cluster_key(document, spec)
