"""A worker: signs messages with a secret it gets from the vault enclave, never showing it.

The secret arrives as mail on ``RELEASE_TOPIC``: ``{"secret": ..., "owner": KEY, "vault":
ATTESTATION}``. The worker takes it only if the attestation verifies, inside this enclave,
against ``S:<this worker's signer> PROD:7 SEC:<this worker's own level>`` and is the attestation
of the very instance that sent the mail; and it takes one secret only, never replacing it. It
keeps the secret in memory: after a restart the owner releases it again.

Anyone may send ``{"sign": TEXT}`` on ``SIGN_TOPIC`` and gets ``{"hmac": HEX, "owner": KEY}``,
HMAC-SHA256 of TEXT under the secret of the owner KEY (so a user who knows whose secret it must
be can check), or ``{"waiting": ...}`` while the worker has no secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from sanctorum import Enclave, EnclaveMail

SIGN_TOPIC = "sign"
RELEASE_TOPIC = "vault-release"
VAULT_PRODUCT_ID = 7


class WorkerEnclave(Enclave):
    def __init__(self) -> None:
        self._secret: bytes | None = None
        self._owner = ""

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        if mail.topic == RELEASE_TOPIC:
            self._take_secret(mail)  # raises for anything but the vault's; nothing to answer
            return
        answer = self._answer(mail)
        self.post_mail(
            self.post_office(mail).encrypt_mail(json.dumps(answer).encode()), routing_hint
        )

    def _take_secret(self, mail: EnclaveMail) -> None:
        body = json.loads(mail.body)
        vault = self.verify_enclave(base64.b64decode(body["vault"]), self._vault_constraint())
        if mail.authenticated_sender != vault.encryption_key:
            raise PermissionError("the secret's mail was not sent by the vault it names")
        if self._secret is not None:
            # Another instance of the vault's code may be the host's own, with a secret of its
            # choosing: the first secret stays.
            raise PermissionError("this worker holds a secret already")
        self._secret, self._owner = str(body["secret"]).encode(), str(body["owner"])

    def _answer(self, mail: EnclaveMail) -> dict[str, Any]:
        try:
            command = json.loads(mail.body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            command = None
        if not isinstance(command, dict) or set(command) != {"sign"}:
            return {"error": 'a command is {"sign": TEXT}'}
        if not isinstance(command["sign"], str):
            return {"error": "TEXT is a string"}
        if self._secret is None:
            return {"waiting": "the vault has not released the secret to this worker yet"}
        text = command["sign"].encode()
        return {
            "hmac": hmac.new(self._secret, text, hashlib.sha256).hexdigest(),
            "owner": self._owner,
        }

    def _vault_constraint(self) -> str:
        """The vault's code signed by this worker's own signer, at least as secure as this
        worker (see the vault's ``_worker_constraint``)."""
        own = self.enclave_instance_info
        level = own.security_info.summary.name
        return f"S:{own.signer_hash} PROD:{VAULT_PRODUCT_ID} SEC:{level}"
