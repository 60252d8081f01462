"""The counter enclave: counts how often each client has written, across restarts."""

from __future__ import annotations

from sanctorum import Enclave, EnclaveMail


class CounterEnclave(Enclave):
    """Each mail adds one to its sender's count (kept in the persistent map) and replies with
    the new count. The host may ask how many clients there are, nothing more."""

    def receive_from_untrusted_host(self, data: bytes) -> bytes:
        if data != b"clients":
            raise ValueError("the host may only ask for b'clients'")
        return str(len(self.persistent_map)).encode()

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        key = mail.authenticated_sender.encoded.hex()
        count = int(self.persistent_map.get(key, b"0")) + 1
        self.persistent_map[key] = str(count).encode()
        self.post_mail(self.post_office(mail).encrypt_mail(str(count).encode()), routing_hint)
