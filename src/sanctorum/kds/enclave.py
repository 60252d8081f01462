"""The KDS enclave: master keys made inside it and kept in its sealed persistent map, and the
answers to the requests its REST front passes in.

The front calls ``receive_from_untrusted_host`` with ``{"path": "/public" | "/private",
"body": <the request's JSON>}`` and sends back ``{"status": ..., "body": ...}``: the enclave
decides every answer, the front only carries it (sanctorum.kds.protocol says what each holds).
"""

from __future__ import annotations

import json
import secrets

from sanctorum.common.errors import KdsRequestError
from sanctorum.common.keys import Curve25519PrivateKey
from sanctorum.enclave.base import Enclave
from sanctorum.kds.protocol import (
    check_entitled,
    error_response,
    parse_private_request,
    parse_public_request,
    private_response,
    public_key_signed_data,
    public_response,
)
from sanctorum.kds.spec import MASTER_KEY_SIZE, KeySpec, MasterKeyType, derive_spec_key

MAX_REQUEST_SIZE = 2 << 20
_MASTER_KEY = "master-key/"
_TOPIC = "sanctorum-kds-private-key"


class KdsEnclave(Enclave):
    """Derives keys for key specs from master keys that never leave it (docs/kds.md)."""

    persistent_map_size = 1 << 16

    def on_startup(self) -> None:
        for kind in MasterKeyType:  # made once, at the first start; sealed from then on
            if _MASTER_KEY + kind.value not in self.persistent_map:
                self.persistent_map[_MASTER_KEY + kind.value] = secrets.token_bytes(MASTER_KEY_SIZE)

    def receive_from_untrusted_host(self, data: bytes) -> bytes:
        try:
            status, body = 200, self._answer(data)
        except KdsRequestError as error:
            status, body = error.status, error_response(error)
        return json.dumps({"status": status, "body": body}).encode()

    def _answer(self, data: bytes) -> dict[str, str]:
        if len(data) > MAX_REQUEST_SIZE:
            raise KdsRequestError(400, f"the request is over {MAX_REQUEST_SIZE} bytes")
        try:
            request = json.loads(data)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise KdsRequestError(400, "the request is not JSON") from None
        path = request.get("path") if isinstance(request, dict) else None
        body = request.get("body") if isinstance(request, dict) else None
        attestation = self.enclave_instance_info.serialize()
        if path == "/public":
            spec = parse_public_request(body)
            public_key = Curve25519PrivateKey(self._key(spec)).public_key.encoded
            signature = self.sign(public_key_signed_data(spec, public_key))
            return public_response(public_key, signature, attestation)
        if path == "/private":
            parsed = parse_private_request(body)
            check_entitled(parsed)
            office = self.post_office(parsed.requester.encryption_key, _TOPIC)
            sealed = office.encrypt_mail(self._key(parsed.spec), parsed.spec.canonical)
            return private_response(attestation, sealed)
        raise KdsRequestError(400, f"unknown request {path!r}: /public or /private")

    def _key(self, spec: KeySpec) -> bytes:
        return derive_spec_key(self.persistent_map[_MASTER_KEY + spec.master_key_type.value], spec)
