"""The public behaviour of enclaves, run in mock mode and in simulation mode alike."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sanctorum import (
    AttestationQuote,
    EnclaveCallError,
    EnclaveClient,
    EnclaveConstraint,
    EnclaveHost,
    EnclaveInstanceInfo,
    EnclaveMode,
    EnclaveStateError,
    InProcessTransport,
    InvalidEnclaveError,
    MailDecryptionError,
    MailFormatError,
    MailGapError,
    MailReplayError,
    SecuritySummary,
)
from sanctorum.attestation import key_binding
from sanctorum.common import Curve25519PrivateKey
from sanctorum.host import MailCommand, PostMail
from sanctorum.mail import PostOffice

Load = Callable[[str], EnclaveHost]


def _state(host: EnclaveHost) -> dict[str, Any]:
    answer = host.call_enclave(b"state")
    assert answer is not None
    state: dict[str, Any] = json.loads(answer)
    return state


def _bodies(host: EnclaveHost) -> list[str]:
    return [mail[0] for mail in _state(host)["mails"]]


def _office(host: EnclaveHost, topic: str = "default") -> PostOffice:
    return host.enclave_instance_info.create_post_office(Curve25519PrivateKey.generate(), topic)


@pytest.fixture
def host(load: Load) -> EnclaveHost:
    return load("Recorder").start()


# -- calls ------------------------------------------------------------------------------------


def test_call_enclave_returns_the_answer(host: EnclaveHost) -> None:
    assert host.call_enclave(b"abc") == b"cba"
    assert host.call_enclave(b"none") is None
    assert host.call_enclave(b"") == b""
    assert _state(host)["events"] == ["startup", "call abc", "call none", "call "]


def test_large_calls_cross_the_boundary(host: EnclaveHost) -> None:
    data = bytes(range(256)) * 20_000
    assert host.call_enclave(data) == data[::-1]


def test_callback_serves_call_untrusted_host(host: EnclaveHost) -> None:
    assert host.call_enclave(b"ask question", callback=lambda q: b"answer to " + q) == (
        b"answer to question"
    )
    assert host.call_enclave(b"ask x", callback=lambda q: None) is None


def test_nested_callbacks_reenter_the_enclave(host: EnclaveHost) -> None:
    depth = 0

    def callback(data: bytes) -> bytes | None:
        nonlocal depth
        depth += 1
        if depth < 4:  # the enclave calls out, the host calls in, four levels deep
            return host.call_enclave(b"nested", callback=callback)
        return host.call_enclave(b"inner")

    assert host.call_enclave(b"nested", callback=callback) == (b"outer(outer(outer(outer(renni))))")


def test_call_untrusted_host_without_callback_is_an_error(host: EnclaveHost) -> None:
    with pytest.raises(EnclaveCallError, match="needs a host callback"):
        host.call_enclave(b"ask x")
    assert host.call_enclave(b"ok") == b"ko"


def test_a_callback_serves_call_untrusted_host_while_mail_is_handled(
    host: EnclaveHost,
) -> None:
    office = _office(host)
    asked: list[bytes] = []

    def callback(data: bytes) -> bytes:
        asked.append(data)
        return b"price of " + data + b": " + (host.call_enclave(b"21") or b"")  # re-entered

    host.deliver_mail(office.encrypt_mail(b"ask gold"), "r", callback=callback)
    assert host.mailbox is not None
    queued = host.mailbox.next_mail("r")
    assert queued is not None
    assert office.decrypt_mail(queued[1]).body == b"price of gold: 12"
    assert asked == [b"gold"]
    # Without a callback the enclave's call_untrusted_host fails: no reply is posted.
    with pytest.raises(EnclaveCallError, match="call_enclave or deliver_mail"):
        host.deliver_mail(office.encrypt_mail(b"ask silver"), "r")
    assert host.mailbox.next_mail("r", queued[0]) is None


def test_failing_host_callback_reaches_the_enclave_as_an_error(host: EnclaveHost) -> None:
    def callback(data: bytes) -> bytes:
        raise OSError("disk on fire")

    with pytest.raises(EnclaveCallError, match="disk on fire"):
        host.call_enclave(b"ask x", callback=callback)
    assert host.call_enclave(b"ok") == b"ko"


def test_an_attestation_quote_vouches_for_the_enclaves_data(host: EnclaveHost) -> None:
    data = hashlib.sha512(b"the auction's result").digest()
    quote = AttestationQuote.deserialize(host.call_enclave(b"quote " + data) or b"")
    info = host.enclave_instance_info
    assert quote.report_data == data
    assert (quote.code_hash, quote.signer_hash) == (info.code_hash, info.signer_hash)
    assert quote.enclave_mode is info.enclave_mode
    EnclaveConstraint.parse(f"C:{info.code_hash} SEC:INSECURE").check(quote)
    with pytest.raises(InvalidEnclaveError, match="fails the constraint"):
        EnclaveConstraint.parse("C:" + "AB" * 32 + " SEC:INSECURE").check(quote)
    assert AttestationQuote.deserialize(quote.serialize()).report_data == data
    # The data cannot be swapped, nor evidence moved between a quote and an attestation.
    serialized = quote.serialize()
    swapped = serialized[:5] + bytes(64) + serialized[69:]
    with pytest.raises(InvalidEnclaveError, match="not made over its report data"):
        AttestationQuote.deserialize(swapped)
    with pytest.raises(InvalidEnclaveError, match="not made over its report data"):
        AttestationQuote(
            key_binding(info.data_signing_key, info.encryption_key),
            info.evidence_type,
            info.evidence,
        )
    with pytest.raises(InvalidEnclaveError, match="key binding mismatch"):
        EnclaveInstanceInfo(
            info.data_signing_key, info.encryption_key, quote.evidence_type, quote.evidence
        )
    for damaged in (serialized[:-1], b"SNCI" + serialized[4:], serialized + b"x"):
        with pytest.raises(InvalidEnclaveError):
            AttestationQuote.deserialize(damaged)
    with pytest.raises(EnclaveCallError, match="report data is 64 bytes, not 3"):
        host.call_enclave(b"quote abc")


def test_two_enclaves_verify_each_other_and_exchange_mail_through_their_hosts(
    load: Load,
) -> None:
    with load("Peer").start() as alice, load("Peer").start() as bob:
        assert alice.call_enclave(b"trust " + bob.enclave_instance_info.serialize()) == b"trusted"
        assert bob.call_enclave(b"trust " + alice.enclave_instance_info.serialize()) == b"trusted"
        assert alice.mailbox is not None
        assert bob.mailbox is not None
        alice.call_enclave(b"send ping 1")
        ping = alice.mailbox.next_mail("peer")  # the hosts carry the mail between them
        assert ping is not None
        bob.deliver_mail(ping[1], "peer")
        pong = bob.mailbox.next_mail("peer")
        assert pong is not None
        alice.deliver_mail(pong[1], "peer")
        assert json.loads(bob.call_enclave(b"heard") or b"") == ["ping 1"]
        assert json.loads(alice.call_enclave(b"heard") or b"") == ["pong:ping 1"]
        # Each checked the other inside itself: an enclave of other code is refused there.
        with (
            load("Recorder").start() as stranger,
            pytest.raises(EnclaveCallError, match="fails the constraint"),
        ):
            alice.call_enclave(b"trust " + stranger.enclave_instance_info.serialize())
        # Mail from anyone else (here a client's key) reaches the handler, which refuses it.
        forged = bob.enclave_instance_info.create_post_office(
            Curve25519PrivateKey.generate(), "peers"
        )
        with pytest.raises(EnclaveCallError, match="has not verified"):
            bob.deliver_mail(forged.encrypt_mail(b"ping from a stranger"), "peer")
        assert json.loads(bob.call_enclave(b"heard") or b"") == ["ping 1"]


def test_enclave_exceptions_reach_the_host(host: EnclaveHost) -> None:
    with pytest.raises(EnclaveCallError, match="ValueError: bad input from host") as raised:
        host.call_enclave(b"raise")
    # With the traceback of the enclave's own code (in every mode but release), and none of
    # the runtime's frames above it.
    traceback = raised.value.enclave_traceback
    assert traceback is not None
    assert "behaviour_enclave.py" in traceback
    assert "in receive_from_untrusted_host" in traceback
    assert traceback.endswith("ValueError: bad input from host")
    assert 'raise ValueError("bad input from host")' in traceback  # the line itself, in any mode
    assert "runtime.py" not in traceback
    assert host.call_enclave(b"ok") == b"ko"  # still serving


def test_calls_can_post_mail(load: Load) -> None:
    batches: list[list[MailCommand]] = []
    host = load("Recorder").start(on_mail_commands=batches.append)
    assert host.call_enclave(b"post") == b"posted"
    assert len(batches) == 1
    (command,) = batches[0]
    assert isinstance(command, PostMail)
    assert command.routing_hint == "hint-1"


# -- mail -------------------------------------------------------------------------------------


def test_mail_reaches_the_enclave_decrypted_with_its_sender(host: EnclaveHost) -> None:
    office = _office(host, "topic-a")
    host.deliver_mail(office.encrypt_mail(b"hello", b"env"), "route")
    (mail,) = _state(host)["mails"]
    assert mail == ["hello", "env", "topic-a", 0, office.sender_public_key.encoded.hex()]
    assert host.mailbox is not None
    reply = office.decrypt_mail(_next_mail(host, "route"))
    assert (reply.body, reply.envelope) == (b"HELLO", b"reply-envelope")


def test_mail_commands_carry_the_routing_hint(load: Load) -> None:
    batches: list[list[MailCommand]] = []
    host = load("Recorder").start(on_mail_commands=batches.append)
    office = _office(host)
    host.deliver_mail(office.encrypt_mail(b"a"), "client-1")
    host.deliver_mail(office.encrypt_mail(b"silent"), None)
    assert host.mailbox is None
    assert len(batches) == 1
    (command,) = batches[0]
    assert isinstance(command, PostMail)
    assert command.routing_hint == "client-1"
    assert office.decrypt_mail(command.mail).body == b"A"


def test_replayed_mail_is_rejected_and_state_untouched(host: EnclaveHost) -> None:
    office = _office(host)
    mail = office.encrypt_mail(b"bid 100")
    host.deliver_mail(mail, "r")
    with pytest.raises(MailReplayError, match="already received"):
        host.deliver_mail(mail, "r")
    assert _bodies(host) == ["bid 100"]
    assert host.mailbox is not None
    assert host.mailbox.pending("r") == 1
    host.deliver_mail(office.encrypt_mail(b"next"), "r")
    assert _bodies(host) == ["bid 100", "next"]


def test_gap_is_rejected_and_state_untouched(host: EnclaveHost) -> None:
    office = _office(host)
    office.encrypt_mail(b"dropped by the host")
    with pytest.raises(MailGapError, match="sequence number 1 but 0 was expected"):
        host.deliver_mail(office.encrypt_mail(b"second"), "r")
    assert _bodies(host) == []


def test_reordering_is_rejected_until_the_order_is_restored(host: EnclaveHost) -> None:
    office = _office(host)
    first, second = office.encrypt_mail(b"first"), office.encrypt_mail(b"second")
    with pytest.raises(MailGapError):
        host.deliver_mail(second, "r")
    host.deliver_mail(first, "r")
    host.deliver_mail(second, "r")
    with pytest.raises(MailReplayError):
        host.deliver_mail(first, "r")
    assert _bodies(host) == ["first", "second"]


def test_sequences_are_per_sender_and_topic(host: EnclaveHost) -> None:
    sender = Curve25519PrivateKey.generate()
    info = host.enclave_instance_info
    for office in (
        info.create_post_office(sender, "a"),
        info.create_post_office(sender, "b"),
        info.create_post_office(Curve25519PrivateKey.generate(), "a"),
    ):
        host.deliver_mail(office.encrypt_mail(b"x"), None)
    assert [mail[3] for mail in _state(host)["mails"]] == [0, 0, 0]


def test_mail_for_another_enclave_gives_decryption_error(host: EnclaveHost, load: Load) -> None:
    other = load("Recorder").start()
    mail = _office(other).encrypt_mail(b"for the other one")
    with pytest.raises(MailDecryptionError):
        host.deliver_mail(mail, "r")
    assert _bodies(host) == []


def test_tampered_and_garbage_mail_is_rejected(host: EnclaveHost) -> None:
    mail = bytearray(_office(host).encrypt_mail(b"x"))
    mail[-1] ^= 1
    with pytest.raises(MailDecryptionError):
        host.deliver_mail(bytes(mail), "r")
    with pytest.raises(MailFormatError):
        host.deliver_mail(b"garbage", "r")
    assert _bodies(host) == []


def test_failed_handler_posts_nothing_and_its_numbers_stay_spent(host: EnclaveHost) -> None:
    office = _office(host)
    with pytest.raises(EnclaveCallError, match="RuntimeError: handler failed"):
        host.deliver_mail(office.encrypt_mail(b"fail"), "r")
    assert host.mailbox is not None
    assert host.mailbox.pending("r") == 0
    host.deliver_mail(office.encrypt_mail(b"ok"), "r")
    reply = office.decrypt_mail(_next_mail(host, "r"))
    assert reply.body == b"OK"
    # The withdrawn reply had number 0; it is never used again for another content.
    assert reply.sequence_number == 1


def test_client_round_trip(host: EnclaveHost) -> None:
    info = host.enclave_instance_info
    client = EnclaveClient(f"C:{info.code_hash} SEC:INSECURE")
    client.start(InProcessTransport(host))
    for text in (b"one", b"two", b"three"):
        reply = client.send_mail(text)
        assert reply is not None
        assert reply.body == text.upper()


# -- attestation ------------------------------------------------------------------------------


def test_attestation_is_insecure_and_names_the_mode(host: EnclaveHost, mode: str) -> None:
    info = host.enclave_instance_info
    assert info.enclave_mode is EnclaveMode.parse(mode)
    assert info.security_info.summary is SecuritySummary.INSECURE
    assert host.enclave_mode is EnclaveMode.parse(mode)


def test_update_attestation_keeps_the_keys(host: EnclaveHost) -> None:
    before = host.enclave_instance_info
    time.sleep(0.002)
    after = host.update_attestation()
    assert after.encryption_key == before.encryption_key
    assert after.data_signing_key == before.data_signing_key
    assert after.security_info.timestamp > before.security_info.timestamp
    assert host.enclave_instance_info == after


def test_every_start_has_new_keys(load: Load) -> None:
    first, second = load("Recorder").start(), load("Recorder").start()
    assert first.enclave_instance_info.encryption_key != second.enclave_instance_info.encryption_key
    assert (
        first.enclave_instance_info.data_signing_key
        != second.enclave_instance_info.data_signing_key
    )


def test_enclave_signatures_verify_on_the_client(host: EnclaveHost) -> None:
    signature = host.call_enclave(b"sign result")
    assert signature is not None
    host.enclave_instance_info.verifier().verify(signature, b"result")


# -- threads and lifecycle --------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "concurrent"), [("Slow", False), ("SlowThreadSafe", True)])
def test_entry_lock(load: Load, entry: str, concurrent: bool) -> None:
    host = load(entry).start()
    threads = [threading.Thread(target=host.call_enclave, args=(b"x",)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    most_inside = int(host.call_enclave(b"most") or b"0")
    assert (most_inside > 1) is concurrent


def test_lifecycle(load: Load, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "shutdown"
    monkeypatch.setenv("SANCTORUM_TEST_SHUTDOWN_FILE", str(marker))
    host = load("Recorder")
    with pytest.raises(EnclaveStateError, match="not started"):
        host.call_enclave(b"x")
    host.start()
    assert _state(host)["events"] == ["startup"]  # on_startup ran before the first call
    with pytest.raises(EnclaveStateError, match="freshly loaded"):
        host.start()
    assert not marker.exists()
    host.close()
    host.close()
    assert marker.read_text() == "shutdown\n"
    with pytest.raises(EnclaveStateError, match="closed"):
        host.call_enclave(b"x")


def _next_mail(host: EnclaveHost, routing_hint: str) -> bytes:
    assert host.mailbox is not None
    found = host.mailbox.next_mail(routing_hint)
    assert found is not None
    return found[1]
