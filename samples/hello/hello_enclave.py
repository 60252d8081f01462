"""The hello enclave: reverses the strings clients send it."""

from __future__ import annotations

from sanctorum import Enclave, EnclaveMail


class ReverseEnclave(Enclave):
    """Replies to every mail with its body reversed; tells its host how many mails came."""

    def on_startup(self) -> None:
        self.mails_received = 0

    def receive_from_untrusted_host(self, data: bytes) -> bytes:
        # The host is untrusted: it may learn how many mails arrived, nothing of their content.
        if data == b"mails":
            return str(self.mails_received).encode()
        return data[::-1]

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        self.mails_received += 1
        text = mail.body.decode("utf-8", errors="replace")
        reply = self.post_office(mail).encrypt_mail(text[::-1].encode("utf-8"))
        self.post_mail(reply, routing_hint)
