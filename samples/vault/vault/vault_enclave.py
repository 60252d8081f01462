"""A vault: keeps one secret for its owner, and hands it only to worker enclaves, which this
enclave checks itself are the worker's code signed by the same key as the vault.

The owner sends JSON commands as mail on ``OWNER_TOPIC``:

``{"deposit": SECRET}``
    The first sender to deposit becomes the owner; the secret is kept in the persistent map.
    The answer, ``{"deposited": true, "owner": KEY}``, gives the owner's key (hex) as the
    worker will name it.
``{"release_to": ATTESTATION}``
    ATTESTATION is a worker enclave's attestation (base64 of the bytes its host serves at
    ``GET /attestation``). If it verifies against ``S:<this vault's signer> PROD:8
    SEC:<this vault's own level>``, the secret is mailed to that instance alone on
    ``RELEASE_TOPIC``, with the owner's key and this vault's own attestation, routed
    ``WORKER_ROUTE`` (a courier carries it to the worker's host), and the
    answer is ``{"released_to": KEY}``, the worker instance's encryption key.
``{"audit": true}``
    ``{"released_to": [KEY, ...]}``: every worker instance that was sent the secret.

Only the owner is answered anything but a refusal; the host sees none of it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from sanctorum import Enclave, EnclaveMail, InvalidEnclaveError

OWNER_TOPIC = "vault"
RELEASE_TOPIC = "vault-release"
WORKER_ROUTE = "to-worker"
WORKER_PRODUCT_ID = 8
_OWNER, _SECRET, _RELEASED = "owner", "secret", "released"


class VaultEnclave(Enclave):
    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        answer = self._answer(mail)
        self.post_mail(
            self.post_office(mail).encrypt_mail(json.dumps(answer).encode()), routing_hint
        )

    def _answer(self, mail: EnclaveMail) -> dict[str, Any]:
        try:
            command = json.loads(mail.body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            command = None
        if not isinstance(command, dict) or len(command) != 1:
            return {
                "error": 'a command is {"deposit": ...}, {"release_to": ...} or {"audit": true}'
            }
        me = mail.authenticated_sender.encoded.hex()
        owner = self.persistent_map.get(_OWNER)
        if owner is None:
            secret = command.get("deposit")
            if not isinstance(secret, str) or not 0 < len(secret) <= 4096:
                return {"refused": "the vault is empty: deposit a secret of 1 to 4096 characters"}
            self.persistent_map[_OWNER] = me.encode()
            self.persistent_map[_SECRET] = secret.encode()
            self.persistent_map[_RELEASED] = b"[]"
            return {"deposited": True, "owner": me}
        if owner.decode() != me:
            return {"refused": "only the vault's owner may use it"}
        released: list[str] = json.loads(self.persistent_map[_RELEASED])
        if command == {"audit": True}:
            return {"released_to": released}
        if "release_to" not in command:
            return {"refused": "the vault holds a secret already"}
        try:
            attestation = base64.b64decode(command["release_to"], validate=True)
            worker = self.verify_enclave(attestation, self._worker_constraint())
        except (TypeError, ValueError):  # binascii.Error is a ValueError
            return {"error": "release_to is a worker's attestation, in base64"}
        except InvalidEnclaveError as error:
            return {"refused": f"not a worker this vault trusts: {error}"}
        own = base64.b64encode(self.enclave_instance_info.serialize()).decode()
        secret = self.persistent_map[_SECRET].decode()
        body = json.dumps({"secret": secret, "owner": owner.decode(), "vault": own})
        office = self.post_office(worker, RELEASE_TOPIC)
        self.post_mail(office.encrypt_mail(body.encode()), WORKER_ROUTE)
        key = worker.encryption_key.encoded.hex()
        if key not in released:
            self.persistent_map[_RELEASED] = json.dumps([*released, key]).encode()
        return {"released_to": key}

    def _worker_constraint(self) -> str:
        """The worker's code signed by this vault's own signer, at least as secure as this
        vault: SECURE or STALE (a pending TCB update) asks as much of the worker; INSECURE
        (mock and simulation) accepts insecure workers only."""
        own = self.enclave_instance_info
        level = own.security_info.summary.name
        return f"S:{own.signer_hash} PROD:{WORKER_PRODUCT_ID} SEC:{level}"
