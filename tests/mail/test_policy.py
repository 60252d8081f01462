"""Padding policies, and what the host learns from the size of mail under the default one.

Sizes are measured on the sealed bytes the host handles, not on the policy's number: the
padding must survive the Mail format, the client and the enclave runtime.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanctorum import (
    Enclave,
    EnclaveClient,
    EnclaveHost,
    EnclaveMail,
    InProcessTransport,
    MockConfiguration,
    SHA256Hash,
)
from sanctorum.client.transport import ReceivedMail
from sanctorum.common.keys import Curve25519PrivateKey
from sanctorum.mail.format import DEFAULT_MAX_MAIL_SIZE, open_mail
from sanctorum.mail.policy import MinSizePolicy, padme
from sanctorum.mail.post_office import PostOffice

SMALL = (0, 8, 12, 17, 500, 966)  # 966 + the largest hidden header (58) = 1 KiB
"""The observation's lengths, and more up to the default floor."""
CODE = SHA256Hash.of(b"padding v1")
SENDER, RECIPIENT = Curve25519PrivateKey.generate(), Curve25519PrivateKey.generate()


def _sealed_sizes(policy: MinSizePolicy, sizes: Iterator[int] | tuple[int, ...]) -> list[int]:
    """Seal bodies of ``sizes`` in turn on one post office; check each opens to its body."""
    office = PostOffice(SENDER, RECIPIENT.public_key, "t", policy)
    lengths = []
    for size in sizes:
        body = bytes(range(256)) * (size // 256) + bytes(size % 256)
        mail = office.encrypt_mail(body)
        assert open_mail(RECIPIENT, mail, 2 * DEFAULT_MAX_MAIL_SIZE).body == body
        lengths.append(len(mail))
    return lengths


# -- the policies ------------------------------------------------------------------------------


def test_fixed_pads_up_to_its_size_only() -> None:
    policy = MinSizePolicy.fixed(100)
    assert [policy.padded_size(n) for n in (0, 99, 100, 150)] == [100, 100, 100, 150]


def test_largest_seen_remembers_the_largest() -> None:
    policy = MinSizePolicy.largest_seen()
    assert [policy.padded_size(n) for n in (10, 50, 20, 5, 60)] == [10, 50, 50, 50, 60]


def test_moving_average_over_its_window() -> None:
    policy = MinSizePolicy.moving_average(window=2)
    assert [policy.padded_size(n) for n in (10, 30, 0, 0, 7)] == [10, 30, 15, 0, 7]


def test_default_window_smooths_sizes() -> None:
    policy = MinSizePolicy.moving_average()
    for _ in range(16):
        policy.padded_size(1000)
    assert policy.padded_size(10) == 939  # ceil((15*1000 + 10) / 16)


def test_moving_average_shows_the_lengths_of_a_conversations_first_mails() -> None:
    # The observation behind issue 10's new default, through the real format.
    sizes = _sealed_sizes(MinSizePolicy.moving_average(), (8, 12, 17))
    assert sizes[1] - sizes[0] == 4
    assert sizes[2] - sizes[1] == 5


def test_buckets_pad_to_the_floor_then_powers_of_two_then_padme() -> None:
    policy = MinSizePolicy.buckets()
    sizes = (0, 1024, 1025, 2048, 2049, 40_000, 64 << 10, (64 << 10) + 1, 66 << 10)
    assert [policy.padded_size(n) for n in sizes] == [
        1024,
        1024,
        2048,
        2048,
        4096,
        64 << 10,
        64 << 10,
        66 << 10,  # Padmé's step from 64 KiB up: 2 KiB
        66 << 10,
    ]


def test_bucket_parameters_move_the_floor_and_the_end_of_doubling() -> None:
    policy = MinSizePolicy.buckets(floor=100, doubling_up_to=1)
    assert [policy.padded_size(n) for n in (0, 100, 101, 1025)] == [100, 100, 104, 1088]
    policy = MinSizePolicy.buckets(floor=0, doubling_up_to=1 << 30)
    assert [policy.padded_size(n) for n in (0, 3, (1 << 20) + 1)] == [0, 4, 2 << 20]


def test_padme_rounds_as_the_purbs_paper_does() -> None:
    # E = floor(log2 L), S = floor(log2 E) + 1, the low E - S bits rounded up.
    assert [padme(n) for n in (0, 1, 8, 9, 33, 1025, 65537)] == [0, 1, 8, 10, 36, 1088, 67584]
    assert max((padme(n) - n) / n for n in range(1, 1 << 16)) < 0.12  # the paper's bound


def test_the_default_is_the_bucket_policy() -> None:
    assert repr(MinSizePolicy.default()) == "MinSizePolicy.buckets(1024, 65536)"


@given(st.integers(0, DEFAULT_MAX_MAIL_SIZE))
def test_a_bucket_depends_on_the_length_only_and_costs_little_above_64_kib(size: int) -> None:
    policy = MinSizePolicy.default()
    padded = policy.padded_size(size)
    assert padded >= size
    assert policy.padded_size(padded) == padded  # every class is its own largest member
    assert policy.padded_size(size + 1) >= padded  # classes never overlap
    assert MinSizePolicy.default().padded_size(size) == padded  # no memory of earlier mail
    if size > 64 << 10:
        assert padded - size < size / 32


def test_the_default_does_not_remember_earlier_mail() -> None:
    small_after_large = _sealed_sizes(MinSizePolicy.default(), (1 << 20, 8, 12))
    assert small_after_large[1:] == _sealed_sizes(MinSizePolicy.default(), (8, 8))


def test_a_host_can_tell_apart_one_small_class_6_up_to_64_kib_and_32_per_doubling_above() -> None:
    policy, classes, size = MinSizePolicy.default(), [], 0
    while size <= DEFAULT_MAX_MAIL_SIZE:
        classes.append(policy.padded_size(size))
        size = classes[-1] + 1
    assert classes[:7] == [1 << n for n in range(10, 17)]
    assert len(classes) == 7 + 10 * 32
    assert classes[-1] == DEFAULT_MAX_MAIL_SIZE


@pytest.mark.parametrize(
    "factory",
    [
        lambda: MinSizePolicy.fixed(-1),
        lambda: MinSizePolicy.moving_average(0),
        lambda: MinSizePolicy.buckets(floor=-1),
        lambda: MinSizePolicy.buckets(doubling_up_to=0),
        lambda: MinSizePolicy.buckets(doubling_up_to=3000),
    ],
)
def test_bad_parameters_are_refused(factory: object) -> None:
    with pytest.raises(ValueError, match="must be"):
        factory()  # type: ignore[operator]


# -- sealed sizes under the default ------------------------------------------------------------


def test_small_bodies_seal_to_one_size() -> None:
    sizes = _sealed_sizes(MinSizePolicy.default(), SMALL)
    assert len(set(sizes)) == 1


def test_larger_mails_show_only_their_class() -> None:
    sizes = _sealed_sizes(
        MinSizePolicy.default(),
        (1025, 2048, 2049, 4096, 40_000, 64 << 10, (64 << 10) + 1, 66 << 10),
    )
    assert sizes[0] == sizes[1] < sizes[2] == sizes[3] < sizes[4] == sizes[5]
    assert sizes[5] < sizes[6] == sizes[7]
    assert sizes[7] - sizes[5] == 2 << 10  # one Padmé step


class Padded(Enclave):
    """Answers a mail ``n`` with ``n`` bytes; ``twice n`` also sends ``n`` bytes unasked."""

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        words = mail.body.split()
        office = self.post_office(mail)
        self.post_mail(office.encrypt_mail(bytes(int(words[-1]))), routing_hint)
        if words[0] == b"twice":
            self.post_mail(office.encrypt_mail(bytes(int(words[-1]))), routing_hint)


class Recording(InProcessTransport):
    """Notes the size of every mail it carries, each way: what a host sees."""

    def __init__(self, host: EnclaveHost) -> None:
        super().__init__(host)
        self.delivered: list[int] = []
        self.handed_over: list[int] = []

    def deliver_mail(
        self, mail: bytes, correlation_id: str, acknowledge: int | None
    ) -> ReceivedMail | None:
        self.delivered.append(len(mail))
        return super().deliver_mail(mail, correlation_id, acknowledge)  # hands over by polling

    def poll_mail(self, correlation_id: str, acknowledge: int | None) -> ReceivedMail | None:
        received = super().poll_mail(correlation_id, acknowledge)
        if received is not None:
            self.handed_over.append(len(received.mail))
        return received


@pytest.fixture
def conversation() -> Iterator[tuple[EnclaveClient, Recording, EnclaveHost]]:
    config = MockConfiguration(code_hash=CODE)
    with EnclaveHost.load(Padded, mock_config=config).start() as host:
        client = EnclaveClient(f"C:{CODE} SEC:INSECURE")
        transport = Recording(host)
        client.start(transport)
        yield client, transport, host


def test_a_clients_small_mails_all_go_out_at_one_size(
    conversation: tuple[EnclaveClient, Recording, EnclaveHost],
) -> None:
    client, transport, _ = conversation
    for size in SMALL:
        body = b"%d" % size
        client.send_mail(body + b" " * (size - len(body)))  # a body of ``size`` bytes
    assert len(transport.delivered) == len(SMALL)
    assert len(set(transport.delivered)) == 1


def test_an_enclaves_small_answers_all_go_out_at_one_size(
    conversation: tuple[EnclaveClient, Recording, EnclaveHost],
) -> None:
    client, transport, _ = conversation
    for size in SMALL:
        reply = client.send_mail(b"%d" % size)
        assert reply is not None
        assert len(reply.body) == size
    assert len(transport.handed_over) == len(SMALL)
    assert len(set(transport.handed_over)) == 1


# -- what the host still learns ------------------------------------------------------------------


def test_the_host_sees_how_many_mails_a_delivery_made_but_not_which_is_the_answer(
    conversation: tuple[EnclaveClient, Recording, EnclaveHost],
) -> None:
    client, transport, _ = conversation
    assert client.send_mail(b"twice 8") is not None
    assert client.poll_mail() is not None
    assert client.poll_mail() is None
    answer, other = transport.handed_over  # two mails came of one delivery
    # The answer's hidden header names the request it answers; it is padded with the body.
    assert answer == other


def test_the_envelope_and_topic_show_byte_for_byte() -> None:
    office = PostOffice(SENDER, RECIPIENT.public_key, "t", MinSizePolicy.default())
    sizes = [len(office.encrypt_mail(b"same", bytes(n))) for n in (0, 1, 2)]
    assert sizes == [sizes[0], sizes[0] + 1, sizes[0] + 2]
    longer_topic = PostOffice(SENDER, RECIPIENT.public_key, "tt", MinSizePolicy.default())
    assert len(longer_topic.encrypt_mail(b"same")) == sizes[0] + 1
