"""Conversation guarantees with a host that misbehaves (issue 9), in mock and simulation mode.

Each test reproduces an observation of the issue: it failed before the conversation design
(docs/decisions.md, "Conversations") and passes now.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sanctorum import (
    ClientStateError,
    Enclave,
    EnclaveCallError,
    EnclaveClient,
    EnclaveHost,
    EnclaveMail,
    EnclaveRollbackError,
    InProcessTransport,
    MailDecryptionError,
    MailRefusedError,
    MailReplayError,
    MailTooLargeError,
    TransportError,
    UnattestedSenderError,
)
from sanctorum.client.transport import ReceivedMail
from sanctorum.common import Curve25519PrivateKey, Curve25519PublicKey
from sanctorum.common.commands import PostMail
from sanctorum.mail.private_header import ConversationHeader

Load = Callable[[str], EnclaveHost]


def _client(host: EnclaveHost, transport: InProcessTransport | None = None) -> EnclaveClient:
    client = EnclaveClient(f"C:{host.enclave_instance_info.code_hash} SEC:INSECURE")
    client.start(transport or InProcessTransport(host))
    return client


def _count(host: EnclaveHost) -> int:
    return int(json.loads(host.call_enclave(b"dump") or b"{}").get("count", "0"))


class LyingTransport(InProcessTransport):
    """Delivers honestly, then (when told to) restarts the enclave from its latest sealed state
    and claims the mail could not be decrypted: what a host does to make a client resend."""

    lie_next = False

    def deliver_mail(
        self, mail: bytes, correlation_id: str, acknowledge: int | None
    ) -> ReceivedMail | None:
        received = super().deliver_mail(mail, correlation_id, acknowledge)
        if self.lie_next:
            self.lie_next = False
            self._host.restart()  # type: ignore[attr-defined]
            raise MailDecryptionError("the enclave could not decrypt the mail (a lie)")
        return received


# -- 1. double application ---------------------------------------------------------------------


def test_a_false_mail_decryption_after_delivery_never_applies_a_request_twice(load: Load) -> None:
    host = load("Counter").start()
    transport = LyingTransport(host)
    client = _client(host, transport)
    answers = []
    for lie in (False, True, True):
        transport.lie_next = lie
        reply = client.send_mail(b"+1")
        assert reply is not None
        answers.append(reply.body)
    assert answers == [b"1", b"2", b"3"]  # each answer is the one its own request got
    assert _count(host) == 3  # not 5: the resends were answered from the record
    assert client.poll_mail() is None  # the duplicate answers were dropped, not queued


def test_a_resend_of_an_applied_request_gets_the_recorded_answer(load: Load) -> None:
    host = load("Counter").start()
    client = _client(host)
    outgoing = client.seal(b"+1")
    host.deliver_mail(outgoing.mail, client.correlation_id)
    host.restart()  # a new instance, from the state that recorded the request
    client.adopt(host.enclave_instance_info.serialize())
    host.deliver_mail(client.reseal(outgoing).mail, client.correlation_id)
    assert _count(host) == 1
    assert host.mailbox is not None
    first = host.mailbox.next_mail(client.correlation_id)
    assert first is not None
    resent = host.mailbox.next_mail(client.correlation_id, first[0])
    assert resent is not None
    result = client.receive(ReceivedMail(*resent))
    assert result is not None
    mail, answers = result
    assert (mail.body, answers) == (b"1", outgoing.request)
    # The first instance's answer, arriving late, is a second answer to the same request.
    assert client.receive(ReceivedMail(*first)) is None


def test_a_request_older_than_the_last_applied_is_refused_and_changes_nothing(load: Load) -> None:
    host = load("Counter").start()
    client = _client(host)
    stale = client.save()  # a client whose saved state is about to be outdated
    assert client.send_mail(b"+1") is not None
    old = EnclaveClient.restore(stale)
    old.start(InProcessTransport(host))
    with pytest.raises(MailReplayError, match="already received"):  # same instance: by sequence
        old.send_mail(b"+1")
    host.restart()
    old = EnclaveClient.restore(stale)
    old.start(InProcessTransport(host))
    # A new instance: the sequence is fresh, but the request number was used by another
    # request (another nonce): it must neither apply nor get that request's answer.
    with pytest.raises(MailReplayError, match="superseded"):
        old.send_mail(b"+1")
    assert _count(host) == 1


def test_without_a_persistent_map_a_restart_forgets_and_the_client_keeps_one_answer(
    load: Load,
) -> None:
    host = load("Recorder").start()
    transport = LyingTransport(host)
    client = _client(host, transport)
    transport.lie_next = True
    reply = client.send_mail(b"once")
    assert reply is not None
    assert reply.body == b"ONCE"
    # The new instance applied it again: it has no memory of the old one (documented).
    assert [mail[0] for mail in json.loads(host.call_enclave(b"state") or b"")["mails"]] == ["once"]
    assert client.poll_mail() is None  # the other instance's answer was dropped


# -- 2. answers are bound to their requests ----------------------------------------------------


class ForgetfulTransport(InProcessTransport):
    """Loses the answer of the next delivery on its way back (it stays queued on the host)."""

    lose_next = False

    def deliver_mail(
        self, mail: bytes, correlation_id: str, acknowledge: int | None
    ) -> ReceivedMail | None:
        received = super().deliver_mail(mail, correlation_id, acknowledge)
        if self.lose_next:
            self.lose_next = False
            return None
        return received


def test_send_mail_returns_only_the_answer_to_its_own_request(load: Load) -> None:
    host = load("Recorder").start()
    transport = ForgetfulTransport(host)
    client = _client(host, transport)
    transport.lose_next = True
    assert client.send_mail(b"transfer to alice") is None
    # The host now hands back the older answer first; it must not pass for this one's.
    reply = client.send_mail(b"transfer to bob")
    assert reply is not None
    assert reply.body == b"TRANSFER TO BOB"
    late = client.poll_mail()
    assert late is not None
    assert late.body == b"TRANSFER TO ALICE"
    header = ConversationHeader.decode(late.private_header)
    assert header.answers is not None
    assert header.answers.number == 0
    assert client.poll_mail() is None


def test_mail_the_enclave_sends_unasked_waits_for_poll(load: Load) -> None:
    host = load("Recorder").start()
    client = _client(host)
    assert client.send_mail(b"hello") is not None
    host.call_enclave(_notify(client, "default", b"news"))
    reply = client.send_mail(b"again")
    assert reply is not None
    assert reply.body == b"AGAIN"
    news = client.poll_mail()
    assert news is not None
    assert news.body == b"news"
    assert ConversationHeader.decode(news.private_header).answers is None


# -- 3. no sequence number is used twice -------------------------------------------------------


def test_a_failed_call_does_not_reuse_numbers_a_nested_call_handed_out(load: Load) -> None:
    host = load("Recorder").start()
    office = host.enclave_instance_info.create_post_office(Curve25519PrivateKey.generate(), "t")

    def callback(data: bytes) -> bytes:
        host.deliver_mail(office.encrypt_mail(b"nested"), "r")
        return b"done"

    with pytest.raises(EnclaveCallError, match="failed after the host callback"):
        host.call_enclave(b"ask-then-raise x", callback)
    host.deliver_mail(office.encrypt_mail(b"after"), "r")
    replies = [office.decrypt_mail(mail) for mail in _drain_mailbox(host, "r")]
    assert [(reply.body, reply.sequence_number) for reply in replies] == [
        (b"NESTED", 0),
        (b"AFTER", 1),  # before the fix, 0 again: two contents under one number
    ]


class Racing(Enclave):
    """Thread-safe: one call seals a mail, waits, then fails; others seal meanwhile."""

    thread_safe = True

    def __init__(self) -> None:
        self.destination: Curve25519PublicKey | None = None
        self.sealed = threading.Event()
        self.release = threading.Event()

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        assert self.destination is not None
        office = self.post_office(self.destination, "t")
        self.post_mail(office.encrypt_mail(data), "r")
        if data == b"seal-wait-fail":
            self.sealed.set()
            self.release.wait(5)
            raise RuntimeError("failed after sealing")
        return None


def test_concurrent_calls_of_a_thread_safe_enclave_never_share_a_number() -> None:
    with EnclaveHost.load(Racing).start() as host:
        client_key = Curve25519PrivateKey.generate()
        office = host.enclave_instance_info.create_post_office(client_key, "t")
        enclave = host.mock_enclave
        assert isinstance(enclave, Racing)
        enclave.destination = client_key.public_key
        failing = threading.Thread(target=_expect_failure, args=(host, b"seal-wait-fail"))
        failing.start()
        assert enclave.sealed.wait(5)
        host.call_enclave(b"seal")  # seals the next number while the first call still runs
        enclave.release.set()
        failing.join(5)
        host.call_enclave(b"seal")
        numbers = [office.decrypt_mail(mail).sequence_number for mail in _drain_mailbox(host, "r")]
        assert numbers == [1, 2]  # 0 was withdrawn with the failed call and never reused


def _expect_failure(host: EnclaveHost, data: bytes) -> None:
    with pytest.raises(EnclaveCallError):
        host.call_enclave(data)


# -- 4. nested calls are transactional at every depth ------------------------------------------


def test_a_nested_call_that_raises_commits_nothing(load: Load) -> None:
    host = load("Counter").start()

    def callback(data: bytes) -> bytes:
        host.call_enclave(b"set-then-fail")  # raises EnclaveCallError inside the callback
        return b"unreachable"

    assert host.call_enclave(b"set-then-nested", callback) == b"ok"
    assert json.loads(host.call_enclave(b"dump") or b"") == {"outer": "kept", "outer caught": "yes"}
    host.restart()
    assert json.loads(host.call_enclave(b"dump") or b"") == {"outer": "kept", "outer caught": "yes"}


def test_a_nested_call_that_succeeds_commits_with_the_enclosing_call(load: Load) -> None:
    host = load("Counter").start()

    def callback(data: bytes) -> bytes:
        return host.call_enclave(b"set nested=1") or b""

    assert host.call_enclave(b"set-then-nested", callback) == b"ok"
    host.restart()
    assert json.loads(host.call_enclave(b"dump") or b"") == {"nested": "1", "outer": "kept"}


# -- 5. restored clients keep working --------------------------------------------------------


def test_a_client_restored_many_times_with_fresh_transports_keeps_working(load: Load) -> None:
    host = load("Counter").start()
    saved = _client(host).save()
    for expected in range(1, 6):
        client = EnclaveClient.restore(saved)
        client.start(InProcessTransport(host))  # a fresh transport each time
        reply = client.send_mail(b"+1")
        assert reply is not None
        assert reply.body == str(expected).encode()
        saved = client.save()
    assert _count(host) == 5


def test_opened_mail_not_yet_handed_out_survives_save_and_restore(load: Load) -> None:
    host = load("Recorder").start()
    client = _client(host)
    client.send_mail(b"first")
    host.call_enclave(_notify(client, "default", b"kept for later"))
    assert client.send_mail(b"second") is not None  # opens the notice and keeps it
    assert host.mailbox is not None
    assert client.acknowledged is not None
    host.mailbox.next_mail(client.correlation_id, client.acknowledged)  # the host drops it
    restored = EnclaveClient.restore(client.save())
    restored.start(InProcessTransport(host))
    kept = restored.poll_mail()
    assert kept is not None
    assert kept.body == b"kept for later"


# -- 6. mail from a restarted enclave --------------------------------------------------------


def test_mail_from_a_restarted_instance_is_accepted_once_attested(load: Load) -> None:
    host = load("Counter").start()
    client = _client(host)
    assert client.send_mail(b"+1") is not None
    host.restart()  # the client has not written since
    host.call_enclave(_notify(client, "default", b"the auction closed"))
    notice = client.poll_mail()
    assert notice is not None
    assert notice.body == b"the auction closed"
    assert client.enclave_instance_info.encryption_key == host.enclave_instance_info.encryption_key


def test_mail_from_an_unattested_key_is_refused_and_not_acknowledged(load: Load) -> None:
    host = load("Recorder").start()
    client = _client(host)
    impostor = host.enclave_instance_info.create_post_office(Curve25519PrivateKey.generate(), "x")
    impostor.destination = client.public_key
    assert host.mailbox is not None
    host.mailbox.handle([PostMail(impostor.encrypt_mail(b"trust me"), client.correlation_id)])
    with pytest.raises(UnattestedSenderError):
        client.poll_mail()
    with pytest.raises(UnattestedSenderError):
        client.poll_mail()  # still there: it was not acknowledged
    assert host.mailbox.pending(client.correlation_id) == 1


# -- 7. refused mail spends nothing ----------------------------------------------------------


def test_mail_over_the_limit_is_refused_before_sealing_and_the_topic_goes_on(load: Load) -> None:
    host = load("Recorder").start()
    client = _client(host, InProcessTransport(host, max_mail_size=4096))
    with pytest.raises(MailTooLargeError, match="over the host's limit of 4096"):
        client.send_mail(bytes(5000))
    reply = client.send_mail(b"small")
    assert reply is not None
    assert reply.body == b"SMALL"
    mails = json.loads(host.call_enclave(b"state") or b"")["mails"]
    assert [(mail[0], mail[3]) for mail in mails] == [("small", 0)]


def test_a_host_refusal_gives_the_sequence_number_back(load: Load) -> None:
    host = load("Recorder").start()

    class Refusing(InProcessTransport):
        refuse_next = False

        def deliver_mail(
            self, mail: bytes, correlation_id: str, acknowledge: int | None
        ) -> ReceivedMail | None:
            if self.refuse_next:
                self.refuse_next = False
                raise MailRefusedError("413: the body is over the limit")
            return super().deliver_mail(mail, correlation_id, acknowledge)

    transport = Refusing(host)
    client = _client(host, transport)
    transport.refuse_next = True
    with pytest.raises(MailRefusedError):
        client.send_mail(b"refused")
    for body in (b"one", b"two"):
        reply = client.send_mail(body)
        assert reply is not None
        assert reply.body == body.upper()


# -- helpers -------------------------------------------------------------------------------------


def _notify(client: EnclaveClient, topic: str, body: bytes) -> bytes:
    key = client.public_key.encoded.hex()
    return f"notify {key} {topic} {client.correlation_id} ".encode() + body


def _drain_mailbox(host: EnclaveHost, routing_hint: str) -> list[bytes]:
    assert host.mailbox is not None
    mails = []
    acknowledged = None
    while (found := host.mailbox.next_mail(routing_hint, acknowledged)) is not None:
        acknowledged = found[0]
        mails.append(found[1])
    return mails


# -- outcome unknown -----------------------------------------------------------------------------


class BrokenLink(InProcessTransport):
    """Fails the next delivery with an unknown outcome: before or after it reached the host."""

    fail_next: str | None = None  # "before" or "after"

    def deliver_mail(
        self, mail: bytes, correlation_id: str, acknowledge: int | None
    ) -> ReceivedMail | None:
        failure, self.fail_next = self.fail_next, None
        if failure == "before":
            raise TransportError("the connection broke while sending")
        received = super().deliver_mail(mail, correlation_id, acknowledge)
        if failure == "after":
            raise TransportError("the connection broke before the answer came")
        return received


@pytest.mark.parametrize("failure", ["before", "after"])
def test_a_mail_of_unknown_fate_is_settled_before_the_next_and_applied_once(
    load: Load, failure: str
) -> None:
    host = load("Counter").start()
    transport = BrokenLink(host)
    client = _client(host, transport)
    transport.fail_next = failure
    with pytest.raises(TransportError):
        client.send_mail(b"+1")
    assert client.in_doubt("default") is not None
    client = EnclaveClient.restore(client.save())  # the doubt survives save and restore
    client.start(transport)
    reply = client.send_mail(b"+1")
    assert reply is not None
    assert reply.body == b"2"  # no gap, and the first request counted once
    late = client.poll_mail()
    assert late is not None
    assert late.body == b"1"
    assert client.poll_mail() is None
    assert client.in_doubt("default") is None
    assert _count(host) == 2


# -- a client kept in a file survives a crash at any moment --------------------------------------


class _Crash(BaseException):
    """The client's process dies."""


class Crashing(InProcessTransport):
    """Records the client's file as it is when each request leaves; can make the process
    "die" right after the host acted on the first request of a call."""

    def __init__(self, host: EnclaveHost, path: Path, *, crash_on_first: bool) -> None:
        super().__init__(host)
        self.path = path
        self.on_disk: list[bytes] = []
        self.crash_on_first = crash_on_first

    def _sent(self) -> None:
        if self.crash_on_first:
            raise _Crash

    def deliver_mail(
        self, mail: bytes, correlation_id: str, acknowledge: int | None
    ) -> ReceivedMail | None:
        self.on_disk.append(self.path.read_bytes())
        received = super().deliver_mail(mail, correlation_id, acknowledge)
        self._sent()
        return received

    def poll_mail(self, correlation_id: str, acknowledge: int | None) -> ReceivedMail | None:
        self.on_disk.append(self.path.read_bytes())
        received = super().poll_mail(correlation_id, acknowledge)
        self._sent()
        return received


@pytest.mark.parametrize("crash_on_first", [True, False], ids=["first request", "last request"])
def test_a_client_kept_in_a_file_goes_on_after_crashes(
    load: Load, tmp_path: Path, crash_on_first: bool
) -> None:
    host = load("Counter").start()
    path = tmp_path / "client.json"
    constraint = f"C:{host.enclave_instance_info.code_hash} SEC:INSECURE"
    assert not path.exists()
    EnclaveClient.open(path, constraint)
    assert path.stat().st_mode & 0o777 == 0o600
    sends = 4
    for _ in range(sends):
        client = EnclaveClient.open(path, constraint)
        transport = Crashing(host, path, crash_on_first=crash_on_first)
        client.start(transport)
        with contextlib.suppress(_Crash):
            client.send_mail(b"+1")  # what it returns is lost with the process
        # The process dies right after its last request reached the host: the file is as it
        # was when that request left.
        path.write_bytes(transport.on_disk[-1])
    client = EnclaveClient.open(path, constraint)
    client.start(InProcessTransport(host))
    answers = []
    while (mail := client.poll_mail()) is not None:
        answers.append(mail.body)
    assert _count(host) == sends  # every request applied exactly once
    assert sorted(answers) == [b"1", b"2", b"3", b"4"]  # no answer lost, none handed out twice


def test_a_client_file_for_another_constraint_or_none_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "client.json"
    with pytest.raises(ClientStateError, match="holds no client yet"):
        EnclaveClient.open(path)
    EnclaveClient.open(path, "C:" + "00" * 32 + " SEC:INSECURE")
    with pytest.raises(ClientStateError, match="is for the constraint"):
        EnclaveClient.open(path, "C:" + "11" * 32 + " SEC:INSECURE")
    path.write_text("{}")
    with pytest.raises(ClientStateError, match="cannot use the client saved in"):
        EnclaveClient.open(path)


def test_a_mail_in_doubt_for_a_replaced_instance_is_resealed_for_the_current_one(
    load: Load,
) -> None:
    host = load("Counter").start()
    transport = BrokenLink(host)
    client = _client(host, transport)
    transport.fail_next = "before"
    with pytest.raises(TransportError):
        client.send_mail(b"+1")
    host.restart()
    host.call_enclave(_notify(client, "news", b"hello from the new instance"))
    assert client.poll_mail() is not None  # the client now talks to the new instance
    reply = client.send_mail(b"+1")  # the doubtful mail, sealed for the old one, goes first
    assert reply is not None
    assert reply.body == b"2"
    assert _count(host) == 2


# -- found by the hostile-host review ------------------------------------------------------------


class Announcer(Enclave):
    """Replies to a request and mails the same client news in the same call; after a restart,
    tells every client it knows that it is back (from on_startup)."""

    persistent_map_size = 1 << 16

    def on_startup(self) -> None:
        for key in list(self.persistent_map):
            destination = Curve25519PublicKey(bytes.fromhex(key))
            hint = self.persistent_map[key].decode()
            self.post_mail(self.post_office(destination, "news").encrypt_mail(b"back"), hint)

    def receive_from_untrusted_host(self, data: bytes) -> bytes:
        return b"read only"

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        self.persistent_map[mail.authenticated_sender.encoded.hex()] = (routing_hint or "").encode()
        self.post_mail(self.post_office(mail).encrypt_mail(b"answer"), routing_hint)
        news = self.post_office(mail.authenticated_sender, "news").encrypt_mail(b"news")
        self.post_mail(news, routing_hint)


def test_two_mails_to_one_client_in_one_commit_are_no_rollback() -> None:
    with EnclaveHost.load(Announcer).start() as host:
        client = _client(host)
        for _ in range(2):
            reply = client.send_mail(b"hi")
            assert reply is not None
            assert reply.body == b"answer"
            news = client.poll_mail()
            assert news is not None
            assert news.body == b"news"


def test_mail_posted_by_on_startup_reaches_the_client_with_the_first_call() -> None:
    with EnclaveHost.load(Announcer).start() as host:
        client = _client(host)
        client.send_mail(b"hi")
        assert client.poll_mail() is not None
        host.restart()
        host.call_enclave(b"anything")  # the first call takes on_startup's mail to the host
        back = client.poll_mail()
        assert back is not None
        assert back.body == b"back"
        reply = client.send_mail(b"hi again")  # and the commit chain is unbroken
        assert reply is not None


def test_read_only_calls_leave_no_layers_behind() -> None:
    with EnclaveHost.load(Announcer).start() as host:
        for _ in range(100):
            host.call_enclave(b"read")
        runtime = host.mock_enclave.runtime
        assert runtime.persistent_map._entries.layers == []


def test_a_host_still_unreachable_leaves_the_mail_in_doubt(load: Load) -> None:
    host = load("Counter").start()

    failures: list[type[Exception]] = [TransportError, MailRefusedError]

    class Flaky(InProcessTransport):
        def deliver_mail(
            self, mail: bytes, correlation_id: str, acknowledge: int | None
        ) -> ReceivedMail | None:
            if failures:
                raise failures.pop(0)("the host cannot be reached")
            return super().deliver_mail(mail, correlation_id, acknowledge)

    client = _client(host, Flaky(host))
    with pytest.raises(TransportError):
        client.send_mail(b"+1")  # outcome unknown
    with pytest.raises(MailRefusedError):
        client.send_mail(b"+1")  # the doubtful one could not be settled: nothing new is sent
    assert client.in_doubt("default") is not None
    reply = client.send_mail(b"+1")
    assert reply is not None
    assert reply.body == b"2"  # the first arrived now, before it; no gap
    late = client.poll_mail()
    assert late is not None
    assert late.body == b"1"
    assert _count(host) == 2


class QuietAnnouncer(Announcer):
    def on_startup(self) -> None:
        """Says nothing when it restarts."""


def test_mail_from_an_instance_the_client_has_retired_is_dropped() -> None:
    with EnclaveHost.load(QuietAnnouncer).start() as host:
        client = _client(host)
        client.send_mail(b"hi")
        old = host.mailbox.next_mail(client.correlation_id) if host.mailbox else None
        assert old is not None  # a mail of the first instance, already read
        assert client.poll_mail() is not None
        for _ in range(17):  # the client follows 17 restarts: the first instance is retired
            host.restart()
            client.start(InProcessTransport(host))
        assert host.mailbox is not None
        host.mailbox.handle([PostMail(old[1], client.correlation_id)])  # replayed
        assert client.poll_mail() is None
        again = EnclaveClient.restore(client.save())
        again.start(InProcessTransport(host))
        host.mailbox.handle([PostMail(old[1], client.correlation_id)])
        assert again.poll_mail() is None


def test_a_host_that_sends_only_garbage_cannot_keep_a_client_polling_forever(load: Load) -> None:
    host = load("Recorder").start()

    class Garbage(InProcessTransport):
        ids = iter(range(1, 10**9))

        def poll_mail(self, correlation_id: str, acknowledge: int | None) -> ReceivedMail | None:
            return ReceivedMail(next(self.ids), b"garbage")

    client = _client(host, Garbage(host))
    with pytest.raises(TransportError, match="in a row"):
        client.poll_mail()


@pytest.mark.parametrize(
    "tamper",
    [
        lambda state: state["topics"].update({"t": [0, [[1e400, "00"]]]}),
        lambda state: state.update({"acknowledged": 2**64}),
        lambda state: state.update({"kept": [{"sequence_number": 1e400}]}),
        lambda state: state.update({"retired": ["zz"]}),
    ],
)
def test_tampered_saved_state_is_a_client_state_error(
    tamper: Callable[[dict[str, object]], None],
) -> None:
    client = EnclaveClient("C:" + "00" * 32 + " SEC:INSECURE")
    state = json.loads(client.save())
    tamper(state)
    with pytest.raises(ClientStateError):
        EnclaveClient.restore(json.dumps(state).encode())
    with pytest.raises(ClientStateError):
        EnclaveClient.restore(b"[" * 100_000 + b"]" * 100_000)


class Shop(Enclave):
    """Seals a receipt before the answer but posts the answer first; seals a draft it never
    sends."""

    persistent_map_size = 1 << 16

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        self.persistent_map["orders"] = mail.body
        receipt = self.post_office(mail.authenticated_sender, "receipts").encrypt_mail(b"receipt")
        self.post_office(mail.authenticated_sender, "drafts").encrypt_mail(b"never sent")
        self.post_mail(self.post_office(mail).encrypt_mail(b"answer"), routing_hint)
        self.post_mail(receipt, routing_hint)


def test_mails_of_one_commit_may_be_sealed_and_posted_in_any_order_or_not_at_all() -> None:
    with EnclaveHost.load(Shop).start() as host:
        client = _client(host)
        for order in (b"order 1", b"order 2", b"order 3"):
            reply = client.send_mail(order)
            assert reply is not None
            assert reply.body == b"answer"
            receipt = client.poll_mail()
            assert receipt is not None
            assert receipt.body == b"receipt"
        restarted_from_old = host.sealed_state
        client.send_mail(b"order 4")
        assert client.poll_mail() is not None
        host.close()
    with EnclaveHost.load(Shop).start(sealed_state=restarted_from_old) as old:
        client.start(InProcessTransport(old))
        with pytest.raises(EnclaveRollbackError):  # and a real rollback is still caught
            client.send_mail(b"order 5")


def test_a_mail_in_doubt_the_host_will_never_take_is_given_up(load: Load) -> None:
    host = load("Counter").start()
    failures: list[type[Exception]] = [TransportError, MailTooLargeError]

    class Shrinking(InProcessTransport):  # an operator lowered the host's body limit meanwhile
        def deliver_mail(
            self, mail: bytes, correlation_id: str, acknowledge: int | None
        ) -> ReceivedMail | None:
            if failures:
                raise failures.pop(0)("no")
            return super().deliver_mail(mail, correlation_id, acknowledge)

    client = _client(host, Shrinking(host))
    with pytest.raises(TransportError):
        client.send_mail(b"+1")
    reply = client.send_mail(b"+1")  # the doubtful mail is refused for good: the topic goes on
    assert reply is not None
    assert reply.body == b"1"
    assert client.in_doubt("default") is None
