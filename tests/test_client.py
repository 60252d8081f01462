"""EnclaveClient over the in-process transport."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sanctorum import (
    ClientStateError,
    Enclave,
    EnclaveClient,
    EnclaveConstraint,
    EnclaveHost,
    EnclaveMail,
    EnclaveStateError,
    InProcessTransport,
    InvalidEnclaveError,
    MailReplayError,
    MailSenderError,
    MockConfiguration,
    SHA256Hash,
    TransportError,
)
from sanctorum.client.transport import ReceivedMail
from sanctorum.common import Curve25519PrivateKey, Curve25519PublicKey

CODE = SHA256Hash.of(b"echo v1")


class Echo(Enclave):
    """Replies once per mail, and a second time when asked to; sends nothing for 'quiet'."""

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        if mail.body == b"quiet":
            return
        office = self.post_office(mail)
        self.post_mail(office.encrypt_mail(b"echo: " + mail.body), routing_hint)
        if mail.body == b"twice":
            self.post_mail(office.encrypt_mail(b"and again"), routing_hint)


@pytest.fixture
def host() -> Iterator[EnclaveHost]:
    with EnclaveHost.load(Echo, mock_config=MockConfiguration(code_hash=CODE)).start() as running:
        yield running


def _client(host: EnclaveHost, constraint: str = f"C:{CODE} SEC:INSECURE") -> EnclaveClient:
    client = EnclaveClient(constraint)
    client.start(InProcessTransport(host))
    return client


def test_send_mail_returns_the_synchronous_reply(host: EnclaveHost) -> None:
    client = _client(host)
    reply = client.send_mail(b"hi", envelope=b"e", topic="chat")
    assert reply is not None
    assert (reply.body, reply.topic, reply.sequence_number) == (b"echo: hi", "chat", 0)
    assert reply.authenticated_sender == client.enclave_instance_info.encryption_key


def test_no_reply_gives_none_and_poll_gets_the_rest(host: EnclaveHost) -> None:
    client = _client(host)
    assert client.send_mail(b"quiet") is None
    first = client.send_mail(b"twice")
    assert first is not None
    assert first.body == b"echo: twice"
    queued = client.poll_mail()
    assert queued is not None
    assert queued.body == b"and again"
    assert client.poll_mail() is None


def test_constraint_failure_stops_the_client_before_sending(host: EnclaveHost) -> None:
    client = EnclaveClient(f"C:{SHA256Hash.of(b'other')} SEC:INSECURE")
    with pytest.raises(InvalidEnclaveError, match="match none of"):
        client.start(InProcessTransport(host))
    with pytest.raises(EnclaveStateError, match="not started"):
        client.send_mail(b"secret")


def test_secure_constraint_refuses_a_mock_enclave(host: EnclaveHost) -> None:
    with pytest.raises(InvalidEnclaveError, match="SEC:SECURE"):
        _client(host, f"C:{CODE}")


def test_forged_attestation_is_refused(host: EnclaveHost) -> None:
    class LyingTransport(InProcessTransport):
        def get_attestation(self, instance: Curve25519PublicKey | None = None) -> bytes:
            data = bytearray(super().get_attestation(instance))
            data[40] ^= 1  # swap in another encryption key
            return bytes(data)

    with pytest.raises(InvalidEnclaveError, match="key binding mismatch"):
        EnclaveClient(f"C:{CODE} SEC:INSECURE").start(LyingTransport(host))


def test_replayed_reply_is_rejected(host: EnclaveHost) -> None:
    client = _client(host)

    class ReplayingTransport(InProcessTransport):
        last: ReceivedMail | None = None

        def deliver_mail(
            self, mail: bytes, correlation_id: str, acknowledge: int | None
        ) -> ReceivedMail | None:
            reply = super().deliver_mail(mail, correlation_id, acknowledge)
            if self.last is not None:
                return self.last  # the first answer again, in place of the second
            self.last = reply
            return reply

    client.start(ReplayingTransport(host))
    first = client.send_mail(b"one")
    assert first is not None
    # The replay is dropped; the client goes on to find the answer to its own request.
    second = client.send_mail(b"two")
    assert second is not None
    assert second.body == b"echo: two"
    assert client.poll_mail() is None
    with pytest.raises(MailReplayError):
        client.open_reply(ReplayingTransport.last.mail if ReplayingTransport.last else b"")


def test_reply_from_an_impostor_is_rejected(host: EnclaveHost) -> None:
    client = _client(host)

    class ImpostorTransport(InProcessTransport):
        def deliver_mail(
            self, mail: bytes, correlation_id: str, acknowledge: int | None
        ) -> ReceivedMail | None:
            office = client.enclave_instance_info.create_post_office(
                Curve25519PrivateKey.generate(), "default"
            )
            office.destination = client.public_key
            return ReceivedMail(1, office.encrypt_mail(b"trust me"))

    client.start(ImpostorTransport(host))
    with pytest.raises(MailSenderError):
        client.send_mail(b"x")


def test_save_and_restore_keep_identity_and_sequences(host: EnclaveHost) -> None:
    client = _client(host)
    client.send_mail(b"a", topic="t")
    client.send_mail(b"b", topic="t")
    restored = EnclaveClient.restore(client.save())
    assert restored.public_key == client.public_key
    assert restored.correlation_id == client.correlation_id
    assert restored.constraint == client.constraint
    restored.start(InProcessTransport(host))
    reply = restored.send_mail(b"c", topic="t")
    assert reply is not None
    assert reply.sequence_number == 2


def test_restored_client_starts_afresh_with_a_new_enclave_instance(host: EnclaveHost) -> None:
    client = _client(host)
    client.send_mail(b"a")
    saved = client.save()
    config = MockConfiguration(code_hash=CODE)
    with EnclaveHost.load(Echo, mock_config=config).start() as restarted:
        restored = EnclaveClient.restore(saved)
        restored.start(InProcessTransport(restarted))
        reply = restored.send_mail(b"b")
        assert reply is not None
        assert reply.sequence_number == 0


def test_restarting_on_a_new_instance_resets_topics(host: EnclaveHost) -> None:
    client = _client(host)
    client.send_mail(b"a")
    with EnclaveHost.load(Echo, mock_config=MockConfiguration(code_hash=CODE)).start() as other:
        client.start(InProcessTransport(other))
        reply = client.send_mail(b"b")
        assert reply is not None
        assert reply.body == b"echo: b"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"version": 99}',
        b'{"version": 1}',
        b'{"version": 2}',
        b'{"version": 2, "constraint": "nope", "private_key": "00", "correlation_id": "x"}',
    ],
)
def test_restore_rejects_bad_state(data: bytes) -> None:
    with pytest.raises(ClientStateError):
        EnclaveClient.restore(data)


def test_transport_needs_the_host_mailbox() -> None:
    with EnclaveHost.load(Echo, mock_config=MockConfiguration(code_hash=CODE)).start(
        on_mail_commands=lambda commands: None
    ) as host:
        client = _client(host)
        with pytest.raises(TransportError, match="start the host without one"):
            client.send_mail(b"x")


def test_constraint_object_or_string(host: EnclaveHost) -> None:
    constraint = EnclaveConstraint.parse(f"C:{CODE} SEC:INSECURE")
    assert EnclaveClient(constraint).constraint == EnclaveClient(str(constraint)).constraint
