"""The ledger: a test enclave with a persistent map, for the hostile-host tests (issue 9).

Every request body is a unique token. The enclave counts, in its persistent map, how often it
applied each token, and answers ``ans:TOKEN`` so a test can tell which request an answer
belongs to. Host calls:

- ``dump``: the counts, as JSON ``{token: count}``;
- ``push ID``: mails ``push:ID`` on topic ``push`` to every client it has applied a request of
  (enclave-initiated mail, as an auction's result);
- ``note``: asks the host (``call_untrusted_host``) for a value and stores it; an answer that
  starts with ``fail`` makes the call raise after it stored the value (nothing may commit).

A request whose token starts with ``reject`` raises in the handler after it counted the token,
so nothing of it may commit.
"""

from __future__ import annotations

import json

from sanctorum import Enclave, EnclaveMail
from sanctorum.common import Curve25519PublicKey

_COUNT = "count:"
_CLIENT = "client:"


class Ledger(Enclave):
    persistent_map_size = 1 << 20

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        state = self.persistent_map
        token = mail.body.decode()
        key = _COUNT + token
        state[key] = str(int(state.get(key, b"0")) + 1).encode()
        state[_CLIENT + mail.authenticated_sender.encoded.hex()] = (routing_hint or "").encode()
        if token.startswith("reject"):
            raise ValueError(f"the ledger rejects {token}")
        self.post_mail(self.post_office(mail).encrypt_mail(b"ans:" + mail.body), routing_hint)

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        command, _, argument = data.partition(b" ")
        state = self.persistent_map
        if command == b"dump":
            counts = {
                key[len(_COUNT) :]: int(value)
                for key, value in state.items()
                if key.startswith(_COUNT)
            }
            return json.dumps(counts, sort_keys=True).encode()
        if command == b"push":
            clients = sorted(key for key in state if key.startswith(_CLIENT))
            for key in clients:
                client = Curve25519PublicKey(bytes.fromhex(key[len(_CLIENT) :]))
                office = self.post_office(client, "push")
                self.post_mail(office.encrypt_mail(b"push:" + argument), state[key].decode())
            return str(len(clients)).encode()
        if command == b"note":
            answer = self.call_untrusted_host(b"note?") or b""
            state["note"] = answer
            if answer.startswith(b"fail"):
                raise RuntimeError("the host's note says fail")
            return answer
        raise ValueError(f"unknown command {command!r}")
