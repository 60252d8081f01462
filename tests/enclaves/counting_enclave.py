"""An enclave whose answers show whether each client's mail was applied once, in order: it
counts each sender's mail in its persistent map and answers ``BODY #COUNT``."""

from __future__ import annotations

from sanctorum import Enclave, EnclaveMail


class Counter(Enclave):
    persistent_map_size = 1 << 20

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        sender = mail.authenticated_sender.encoded.hex()
        count = int(self.persistent_map.get(sender, b"0")) + 1
        self.persistent_map[sender] = str(count).encode()
        answer = mail.body + b" #" + str(count).encode()
        self.post_mail(self.post_office(mail).encrypt_mail(answer), routing_hint)
