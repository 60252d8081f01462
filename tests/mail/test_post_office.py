"""PostOffice numbering and the checks it makes on replies."""

from __future__ import annotations

import pytest

from sanctorum.common.errors import (
    MailDecryptionError,
    MailReplayError,
    MailSenderError,
)
from sanctorum.common.keys import Curve25519PrivateKey
from sanctorum.mail import PostOffice, open_mail, read_mail_header

CLIENT = Curve25519PrivateKey.generate()
ENCLAVE = Curve25519PrivateKey.generate()


def _pair(topic: str = "t") -> tuple[PostOffice, PostOffice]:
    return PostOffice(CLIENT, ENCLAVE.public_key, topic), PostOffice(
        ENCLAVE, CLIENT.public_key, topic
    )


def test_sequence_numbers_count_up_per_post_office() -> None:
    client, _ = _pair()
    numbers = [read_mail_header(client.encrypt_mail(b"x")).sequence_number for _ in range(3)]
    assert numbers == [0, 1, 2]
    assert client.next_sequence_number == 3
    other_topic = PostOffice(CLIENT, ENCLAVE.public_key, "other")
    assert read_mail_header(other_topic.encrypt_mail(b"x")).sequence_number == 0


def test_replies_are_opened_in_order() -> None:
    client, enclave = _pair()
    replies = [enclave.encrypt_mail(f"reply {i}".encode()) for i in range(3)]
    assert [client.decrypt_mail(reply).body for reply in replies] == [
        b"reply 0",
        b"reply 1",
        b"reply 2",
    ]


def test_replayed_reply_is_rejected_and_state_kept() -> None:
    client, enclave = _pair()
    reply = enclave.encrypt_mail(b"once")
    client.decrypt_mail(reply)
    with pytest.raises(MailReplayError, match="already received"):
        client.decrypt_mail(reply)
    assert client.next_reply_sequence_number == 1
    assert client.decrypt_mail(enclave.encrypt_mail(b"next")).body == b"next"


def test_replies_may_skip_numbers_but_never_go_back() -> None:
    # An enclave never reuses the number of a mail it withdrew (a failed call), so a reply
    # may skip ahead; an earlier number after a later one is a replay.
    client, enclave = _pair()
    first, second = enclave.encrypt_mail(b"0"), enclave.encrypt_mail(b"1")
    assert client.decrypt_mail(second).body == b"1"
    assert client.next_reply_sequence_number == 2
    with pytest.raises(MailReplayError):
        client.decrypt_mail(first)
    assert client.next_reply_sequence_number == 2


def test_withdraw_gives_back_only_the_last_number() -> None:
    client, _ = _pair()
    client.encrypt_mail(b"0")
    assert client.withdraw(0)
    assert client.next_sequence_number == 0
    client.encrypt_mail(b"0 again")
    client.encrypt_mail(b"1")
    assert not client.withdraw(0)  # a later mail was sealed since
    assert client.next_sequence_number == 2


def test_reply_from_another_sender_is_rejected() -> None:
    client, _ = _pair()
    impostor = PostOffice(Curve25519PrivateKey.generate(), CLIENT.public_key, "t")
    with pytest.raises(MailSenderError, match="not sent by this post office's destination"):
        client.decrypt_mail(impostor.encrypt_mail(b"trust me"))
    assert client.next_reply_sequence_number == 0


def test_reply_on_another_topic_is_rejected() -> None:
    client, _ = _pair("t")
    other = PostOffice(ENCLAVE, CLIENT.public_key, "other")
    with pytest.raises(MailSenderError, match="topic"):
        client.decrypt_mail(other.encrypt_mail(b"x"))


def test_mail_to_someone_else_cannot_be_opened() -> None:
    client, _ = _pair()
    with pytest.raises(MailDecryptionError):
        open_mail(Curve25519PrivateKey.generate(), client.encrypt_mail(b"x"))


def test_padding_policy_applies() -> None:
    from sanctorum.mail import MinSizePolicy

    office = PostOffice(CLIENT, ENCLAVE.public_key, min_size_policy=MinSizePolicy.fixed(4096))
    assert len(office.encrypt_mail(b"tiny")) > 4096
