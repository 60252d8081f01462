"""The KDS enclave: master keys made inside it and kept in its sealed persistent map, and the
answers to the requests its REST front passes in.

The front calls ``receive_from_untrusted_host`` with the request's path and body as it got them
(:func:`~sanctorum.kds.protocol.front_request`) and sends back the status and body the enclave
answers (:func:`~sanctorum.kds.protocol.front_answer`): the enclave parses the request and
decides every answer, the front only carries bytes (sanctorum.kds.protocol says what each
holds).
"""

from __future__ import annotations

import json
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sanctorum.common.errors import KdsRequestError
from sanctorum.common.keys import Curve25519PrivateKey, Ed25519PrivateKey
from sanctorum.enclave.base import Enclave
from sanctorum.enclave.sealing import SealingPolicy
from sanctorum.kds.protocol import (
    check_entitled,
    cluster_signed_data,
    error_response,
    front_answer,
    parse_private_request,
    parse_public_request,
    private_response,
    public_key_signed_data,
    public_response,
    split_front_request,
)
from sanctorum.kds.spec import MASTER_KEY_SIZE, KeySpec, MasterKeyType, derive_spec_key

MAX_REQUEST_SIZE = 2 << 20
_MASTER_KEY = "master-key/"
_MASTER_PURPOSE = b"sanctorum-kds-master-keys"
_CLUSTER_IDENTITY = b"sanctorum-kds-cluster-identity"
_TOPIC = "sanctorum-kds-private-key"


class KdsEnclave(Enclave):
    """Derives keys for key specs from master keys that never leave it (docs/kds.md)."""

    persistent_map_size = 1 << 16

    def on_startup(self) -> None:
        # The map is sealed under the signer policy, which every enclave of the KDS's signer
        # can derive; the master keys inside it are sealed again to this exact code.
        self._master_keys = AESGCM(self.sealing_key(SealingPolicy.CODE_HASH, _MASTER_PURPOSE))
        for kind in MasterKeyType:  # made once, at the first start; sealed from then on
            name = _MASTER_KEY + kind.value
            if name not in self.persistent_map:
                nonce = secrets.token_bytes(12)
                key = secrets.token_bytes(MASTER_KEY_SIZE)
                self.persistent_map[name] = nonce + self._master_keys.encrypt(
                    nonce, key, name.encode()
                )
        # It names the cluster master key, not merely this code: enclaves pin it.
        seed = HKDF(hashes.SHA256(), 32, None, _CLUSTER_IDENTITY).derive(
            self._master_key(MasterKeyType.CLUSTER)
        )
        self._cluster_key = Ed25519PrivateKey(seed)
        self._attested: tuple[object, bytes] = (None, b"")

    def receive_from_untrusted_host(self, data: bytes) -> bytes:
        try:
            status, body = 200, self._answer(data)
        except KdsRequestError as error:
            status, body = error.status, error_response(error)
        return front_answer(status, body)

    def _answer(self, data: bytes) -> dict[str, str]:
        if len(data) > MAX_REQUEST_SIZE:
            raise KdsRequestError(400, f"the request is over {MAX_REQUEST_SIZE} bytes")
        path, raw = split_front_request(data)
        if path not in ("/public", "/private"):
            raise KdsRequestError(400, f"unknown request {path!r}: /public or /private")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise KdsRequestError(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise KdsRequestError(400, "the body is a JSON object")
        info = self.enclave_instance_info
        if info is not self._attested[0]:  # serialized once per attestation, not per request
            self._attested = (info, info.serialize())
        attestation = self._attested[1]
        if path == "/public":
            spec = parse_public_request(body)
            public_key = Curve25519PrivateKey(self._key(spec)).public_key.encoded
            signature = self.sign(public_key_signed_data(spec, public_key))
            return public_response(
                public_key, signature, attestation, self._cluster_signature(spec, public_key)
            )
        parsed = parse_private_request(body)
        check_entitled(parsed)
        # Not a cached post office: requesters are endless and never write back.
        sealed = self.runtime.seal_once(
            parsed.requester.encryption_key, _TOPIC, self._key(parsed.spec), parsed.spec.canonical
        )
        return private_response(attestation, sealed, self._cluster_signature(parsed.spec, sealed))

    def _cluster_signature(self, spec: KeySpec, payload: bytes) -> tuple[bytes, bytes]:
        """The cluster key and its signature of an answer: enclaves pin the cluster key
        ([kds].cluster_key) to refuse another KDS of the same code."""
        key = self._cluster_key
        return key.public_key.encoded, key.sign(cluster_signed_data(spec, payload))

    def _key(self, spec: KeySpec) -> bytes:
        return derive_spec_key(self._master_key(spec.master_key_type), spec)

    def _master_key(self, kind: MasterKeyType) -> bytes:
        name = _MASTER_KEY + kind.value
        sealed = self.persistent_map[name]
        return self._master_keys.decrypt(sealed[:12], sealed[12:], name.encode())
