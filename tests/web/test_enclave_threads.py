"""The web host's delivery threads: two at first, more while calls are slow and queue (a
thread-safe enclave then takes mail side by side), back to two once calls are quick again."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sanctorum import Enclave, EnclaveMail, EnclaveMode
from sanctorum.web.service import EnclaveService
from tests.web.conftest import serve, web_client

MAILS = 8
DELAY = 0.3


class SlowMail(Enclave):
    """Answers each mail after ``DELAY`` seconds, side by side (thread-safe)."""

    thread_safe = True

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        if mail.body == b"slow":
            time.sleep(DELAY)
        self.post_mail(self.post_office(mail).encrypt_mail(mail.body), routing_hint)


def _delivery_threads(before: set[int | None]) -> int:
    """Delivery threads alive now that were not before (earlier apps' idle threads aside)."""
    return sum(
        thread.name == "enclave-call" and thread.ident not in before
        for thread in threading.enumerate()
    )


def test_slow_calls_get_more_threads_and_quick_ones_give_them_back(tmp_path: Path) -> None:
    before = {thread.ident for thread in threading.enumerate()}
    service = EnclaveService(SlowMail, EnclaveMode.MOCK, tmp_path / "state")
    service.start()
    host = serve(service)
    clients = []
    try:
        clients = [web_client(host.url) for _ in range(MAILS)]
        replies: list[bytes] = []
        started = time.monotonic()
        senders = [
            threading.Thread(target=lambda c=client: replies.append(c.send_mail(b"slow").body))
            for client, _ in clients
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(30)
        elapsed = time.monotonic() - started
        assert replies == [b"slow"] * MAILS
        # Two threads alone would take MAILS / 2 * DELAY = 1.2 s; more threads start while
        # the slow calls queue.
        assert elapsed < MAILS / 2 * DELAY * 0.8, elapsed
        grown = _delivery_threads(before)
        assert grown > 2
        for client, _ in clients:  # quick calls: the extra threads end
            client.send_mail(b"quick")
        deadline = time.monotonic() + 5
        while _delivery_threads(before) > 2 and time.monotonic() < deadline:
            clients[0][0].send_mail(b"quick")
        assert _delivery_threads(before) <= 2
    finally:
        for _, transport in clients:
            transport.close()
        host.stop()
