"""EnclaveHost in mock mode and the enclave runtime: calls, mail, sequence rules, lifecycle."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from sanctorum import (
    Enclave,
    EnclaveCallError,
    EnclaveHost,
    EnclaveLoadError,
    EnclaveMail,
    EnclaveStateError,
    MailDecryptionError,
    MailFormatError,
    MailGapError,
    MailReplayError,
    MockConfiguration,
    SHA256Hash,
)
from sanctorum.common import Curve25519PrivateKey, EnclaveMode
from sanctorum.host import PostMail
from sanctorum.mail import PostOffice


class Recorder(Enclave):
    """Records what reaches it; replies to mail with the body upper-cased."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.mails: list[EnclaveMail] = []

    def on_startup(self) -> None:
        self.events.append("startup")

    def on_shutdown(self) -> None:
        self.events.append("shutdown")

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        self.events.append(f"call {data!r}")
        if data == b"ask host":
            return self.call_untrusted_host(b"question")
        if data == b"nested":
            answer = self.call_untrusted_host(b"go deeper")
            return b"outer(" + (answer or b"") + b")"
        if data == b"raise":
            raise ValueError("bad input from host")
        if data == b"none":
            return None
        if data == b"post":
            office = self.post_office(Curve25519PrivateKey.generate().public_key, "notes")
            self.post_mail(office.encrypt_mail(b"note"), "hint-1")
            return b"posted"
        return data[::-1]

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        self.mails.append(mail)
        if mail.body == b"fail":
            self.post_mail(self.post_office(mail).encrypt_mail(b"never sent"), routing_hint)
            raise RuntimeError("handler failed")
        if mail.body == b"silent":
            return
        reply = self.post_office(mail).encrypt_mail(mail.body.upper(), b"reply-envelope")
        self.post_mail(reply, routing_hint)


@pytest.fixture
def host() -> Iterator[EnclaveHost]:
    with EnclaveHost.load(Recorder, mode="mock") as running:
        running.start()
        yield running


def _enclave(host: EnclaveHost) -> Recorder:
    enclave = host.mock_enclave
    assert isinstance(enclave, Recorder)
    return enclave


def _client_office(host: EnclaveHost, topic: str = "default") -> PostOffice:
    return host.enclave_instance_info.create_post_office(Curve25519PrivateKey.generate(), topic)


# -- calls ------------------------------------------------------------------------------------


def test_call_enclave_returns_the_answer(host: EnclaveHost) -> None:
    assert host.call_enclave(b"abc") == b"cba"
    assert host.call_enclave(b"none") is None
    assert _enclave(host).events == ["startup", "call b'abc'", "call b'none'"]


def test_callback_serves_call_untrusted_host(host: EnclaveHost) -> None:
    assert host.call_enclave(b"ask host", callback=lambda q: b"answer to " + q) == (
        b"answer to question"
    )


def test_nested_callbacks_reenter_the_enclave(host: EnclaveHost) -> None:
    def callback(data: bytes) -> bytes | None:
        assert data == b"go deeper"
        return host.call_enclave(b"inner")

    assert host.call_enclave(b"nested", callback=callback) == b"outer(renni)"


def test_call_untrusted_host_without_callback_is_an_error(host: EnclaveHost) -> None:
    with pytest.raises(EnclaveCallError, match="needs a host callback"):
        host.call_enclave(b"ask host")


def test_enclave_exceptions_reach_the_host_as_enclave_call_error(host: EnclaveHost) -> None:
    with pytest.raises(EnclaveCallError, match="ValueError: bad input from host") as caught:
        host.call_enclave(b"raise")
    assert isinstance(caught.value.__cause__, ValueError)
    assert host.call_enclave(b"ok") == b"ko"  # still serving


def test_calls_can_post_mail() -> None:
    commands: list[list[PostMail]] = []
    with EnclaveHost.load(Recorder).start(on_mail_commands=commands.append) as host:
        assert host.call_enclave(b"post") == b"posted"
    assert len(commands) == 1
    assert commands[0][0].routing_hint == "hint-1"


def test_non_bytes_input_is_refused(host: EnclaveHost) -> None:
    with pytest.raises(TypeError, match="must be bytes"):
        host.call_enclave("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be bytes"):
        host.deliver_mail("text")  # type: ignore[arg-type]


# -- mail -------------------------------------------------------------------------------------


def test_mail_reaches_the_enclave_decrypted_with_its_sender(host: EnclaveHost) -> None:
    office = _client_office(host, "topic-a")
    host.deliver_mail(office.encrypt_mail(b"hello", b"env"), "route")
    (mail,) = _enclave(host).mails
    assert (mail.body, mail.envelope, mail.topic, mail.sequence_number) == (
        b"hello",
        b"env",
        "topic-a",
        0,
    )
    assert mail.authenticated_sender == office.sender_public_key
    assert host.mailbox is not None
    reply = office.decrypt_mail(host.mailbox.take("route") or b"")
    assert (reply.body, reply.envelope) == (b"HELLO", b"reply-envelope")


def test_mail_commands_go_to_the_callback_with_routing_hint() -> None:
    batches: list[list[PostMail]] = []
    with EnclaveHost.load(Recorder).start(on_mail_commands=batches.append) as host:
        office = _client_office(host)
        host.deliver_mail(office.encrypt_mail(b"a"), "client-1")
        host.deliver_mail(office.encrypt_mail(b"silent"), "client-1")
        assert host.mailbox is None
    assert len(batches) == 1
    (command,) = batches[0]
    assert command.routing_hint == "client-1"
    assert office.decrypt_mail(command.mail).body == b"A"


def test_replayed_mail_is_rejected_and_state_untouched(host: EnclaveHost) -> None:
    office = _client_office(host)
    mail = office.encrypt_mail(b"bid 100")
    host.deliver_mail(mail, "r")
    with pytest.raises(MailReplayError, match="already received"):
        host.deliver_mail(mail, "r")
    assert [m.body for m in _enclave(host).mails] == [b"bid 100"]
    assert host.mailbox is not None
    assert host.mailbox.pending("r") == 1
    host.deliver_mail(office.encrypt_mail(b"next"), "r")  # the stream continues
    assert [m.sequence_number for m in _enclave(host).mails] == [0, 1]


def test_gap_is_rejected_and_state_untouched(host: EnclaveHost) -> None:
    office = _client_office(host)
    office.encrypt_mail(b"dropped by the host")
    with pytest.raises(MailGapError, match="sequence number 1 but 0 was expected"):
        host.deliver_mail(office.encrypt_mail(b"second"), "r")
    assert _enclave(host).mails == []


def test_reordering_is_rejected_until_the_order_is_restored(host: EnclaveHost) -> None:
    office = _client_office(host)
    first, second = office.encrypt_mail(b"first"), office.encrypt_mail(b"second")
    with pytest.raises(MailGapError):
        host.deliver_mail(second, "r")
    host.deliver_mail(first, "r")
    host.deliver_mail(second, "r")
    with pytest.raises(MailReplayError):
        host.deliver_mail(first, "r")
    assert [m.body for m in _enclave(host).mails] == [b"first", b"second"]


def test_sequences_are_per_sender_and_topic(host: EnclaveHost) -> None:
    sender = Curve25519PrivateKey.generate()
    info = host.enclave_instance_info
    for office in (
        info.create_post_office(sender, "a"),
        info.create_post_office(sender, "b"),
        info.create_post_office(Curve25519PrivateKey.generate(), "a"),
    ):
        host.deliver_mail(office.encrypt_mail(b"x"), None)
    assert [m.sequence_number for m in _enclave(host).mails] == [0, 0, 0]


def test_mail_for_another_enclave_key_gives_decryption_error(host: EnclaveHost) -> None:
    with EnclaveHost.load(Recorder).start() as other:
        mail = _client_office(other).encrypt_mail(b"for the other one")
    with pytest.raises(MailDecryptionError):
        host.deliver_mail(mail, "r")
    assert _enclave(host).mails == []


def test_tampered_and_garbage_mail_is_rejected(host: EnclaveHost) -> None:
    mail = bytearray(_client_office(host).encrypt_mail(b"x"))
    mail[-1] ^= 1
    with pytest.raises(MailDecryptionError):
        host.deliver_mail(bytes(mail), "r")
    with pytest.raises(MailFormatError):
        host.deliver_mail(b"garbage", "r")
    assert _enclave(host).mails == []


def test_failed_handler_posts_nothing_and_keeps_reply_numbering(host: EnclaveHost) -> None:
    office = _client_office(host)
    with pytest.raises(EnclaveCallError, match="RuntimeError: handler failed"):
        host.deliver_mail(office.encrypt_mail(b"fail"), "r")
    assert host.mailbox is not None
    assert host.mailbox.pending("r") == 0
    # The failed mail was consumed; the next reply is numbered 0, so the client accepts it.
    host.deliver_mail(office.encrypt_mail(b"ok"), "r")
    assert office.decrypt_mail(host.mailbox.take("r") or b"").body == b"OK"


# -- threads ----------------------------------------------------------------------------------


class Slow(Enclave):
    thread_safe = False

    def __init__(self) -> None:
        self.inside = 0
        self.most_inside = 0
        self.lock = threading.Lock()

    def receive_from_untrusted_host(self, data: bytes) -> bytes:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        time.sleep(0.02)
        with self.lock:
            self.inside -= 1
        return data


class SlowThreadSafe(Slow):
    thread_safe = True


@pytest.mark.parametrize(("cls", "concurrent"), [(Slow, False), (SlowThreadSafe, True)])
def test_entry_lock(cls: type[Slow], concurrent: bool) -> None:
    with EnclaveHost.load(cls).start() as host:
        threads = [threading.Thread(target=host.call_enclave, args=(b"x",)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        enclave = host.mock_enclave
        assert isinstance(enclave, Slow)
        assert (enclave.most_inside > 1) is concurrent


# -- lifecycle, configuration and attestation --------------------------------------------------


def test_lifecycle_hooks_run_once() -> None:
    host = EnclaveHost.load(Recorder)
    enclave = _enclave(host)
    assert enclave.events == []
    with pytest.raises(EnclaveStateError, match="not started"):
        host.call_enclave(b"x")
    host.start()
    with pytest.raises(EnclaveStateError, match="freshly loaded"):
        host.start()
    host.close()
    host.close()
    assert enclave.events == ["startup", "shutdown"]
    with pytest.raises(EnclaveStateError, match="closed"):
        host.call_enclave(b"x")


def test_enclave_services_need_a_running_enclave() -> None:
    with pytest.raises(EnclaveStateError, match="not running yet"):
        _ = Recorder().enclave_instance_info


def test_mock_attestation_defaults(host: EnclaveHost) -> None:
    info = host.enclave_instance_info
    assert info.code_hash == SHA256Hash.of(f"{Recorder.__module__}.Recorder".encode())
    assert info.signer_hash == SHA256Hash(bytes(32))
    assert (info.product_id, info.revocation_level) == (1, 0)
    assert info.enclave_mode is EnclaveMode.MOCK
    assert host.enclave_mode is EnclaveMode.MOCK


def test_mock_configuration_is_attested() -> None:
    config = MockConfiguration(
        code_hash=SHA256Hash.of(b"v2"),
        signer_hash=SHA256Hash.of(b"me"),
        product_id=9,
        revocation_level=4,
        tcb_level=3,
    )
    with EnclaveHost.load(Recorder, mock_config=config).start() as host:
        info = host.enclave_instance_info
    assert (info.code_hash, info.signer_hash) == (SHA256Hash.of(b"v2"), SHA256Hash.of(b"me"))
    assert (info.product_id, info.revocation_level) == (9, 4)
    assert "TCB level 3" in info.security_info.reason


def test_update_attestation_keeps_the_keys(host: EnclaveHost) -> None:
    before = host.enclave_instance_info
    time.sleep(0.002)
    after = host.update_attestation()
    assert after.encryption_key == before.encryption_key
    assert after.data_signing_key == before.data_signing_key
    assert after.security_info.timestamp > before.security_info.timestamp
    assert host.enclave_instance_info == after


def test_every_start_has_new_keys() -> None:
    with EnclaveHost.load(Recorder).start() as first, EnclaveHost.load(Recorder).start() as second:
        assert (
            first.enclave_instance_info.encryption_key
            != second.enclave_instance_info.encryption_key
        )
        assert (
            first.enclave_instance_info.data_signing_key
            != second.enclave_instance_info.data_signing_key
        )


def test_enclave_signatures_verify_on_the_client(host: EnclaveHost) -> None:
    signature = _enclave(host).sign(b"result")
    host.enclave_instance_info.verifier().verify(signature, b"result")


@pytest.mark.parametrize(
    ("enclave", "mode", "message"),
    [
        (Recorder(), "mock", "not an Enclave subclass"),
        (str, "mock", "not an Enclave subclass"),
        (Recorder, "turbo", "unknown enclave mode"),
        (Recorder, "simulation", "signed bundle"),
    ],
)
def test_load_errors(enclave: object, mode: str, message: str) -> None:
    with pytest.raises(EnclaveLoadError, match=message):
        EnclaveHost.load(enclave, mode=mode)  # type: ignore[arg-type]


def test_enclave_needing_arguments_is_a_load_error() -> None:
    class NeedsArgs(Enclave):
        def __init__(self, value: int) -> None:
            self.value = value

    with pytest.raises(EnclaveLoadError, match="constructible with no arguments"):
        EnclaveHost.load(NeedsArgs)


def test_mock_enclave_is_the_object() -> None:
    host = EnclaveHost.load(Recorder)
    assert isinstance(host.mock_enclave, Recorder)
    host.close()


def test_startup_failure_is_reported() -> None:
    class BrokenStartup(Enclave):
        def on_startup(self) -> None:
            raise OSError("no config")

    with pytest.raises(EnclaveCallError, match="on_startup raised OSError: no config"):
        EnclaveHost.load(BrokenStartup).start()
