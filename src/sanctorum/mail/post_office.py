"""PostOffice: seals mail to one destination on one topic and opens what comes back."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sanctorum.common.errors import MailSenderError
from sanctorum.common.keys import Curve25519PrivateKey, Curve25519PublicKey
from sanctorum.mail.format import (
    DEFAULT_MAX_MAIL_SIZE,
    EnclaveMail,
    open_mail,
    seal_mail,
    validate_topic,
)
from sanctorum.mail.policy import MinSizePolicy
from sanctorum.mail.sequence import SequenceTracker


class PostOffice:
    """A conversation between ``sender_private_key`` and ``destination`` on one topic.

    It numbers outgoing mail 0, 1, 2, … and checks that replies come from ``destination``, on
    this topic, with rising sequence numbers (a gap is accepted: an enclave does not reuse the
    numbers of mail it withdrew when a call failed; a replay is refused). Clients get one from
    :meth:`EnclaveInstanceInfo.create_post_office` or :meth:`ClusterKey.create_post_office`;
    enclaves from :meth:`Enclave.post_office`. Thread-safe.
    """

    def __init__(
        self,
        sender_private_key: Curve25519PrivateKey,
        destination: Curve25519PublicKey,
        topic: str = "default",
        min_size_policy: MinSizePolicy | None = None,
        *,
        next_sequence_number: int = 0,
        next_reply_sequence_number: int = 0,
        key_spec: bytes | None = None,
    ) -> None:
        self.sender_private_key = sender_private_key
        self.destination = destination
        self.topic = validate_topic(topic)
        self.min_size_policy = min_size_policy or MinSizePolicy.default()
        self.key_spec = key_spec
        """With a destination that is a KDS key, its spec (canonical bytes): every mail names
        it, so any enclave the KDS gives the key to can open it (:class:`ClusterKey`)."""
        self._next_sequence_number = next_sequence_number
        self._replies = SequenceTracker({None: next_reply_sequence_number}, gaps_allowed=True)
        self._lock = threading.Lock()

    @property
    def sender_public_key(self) -> Curve25519PublicKey:
        return self.sender_private_key.public_key

    @property
    def next_sequence_number(self) -> int:
        """The sequence number the next mail will carry."""
        return self._next_sequence_number

    @property
    def next_reply_sequence_number(self) -> int:
        """The lowest sequence number the next reply may carry."""
        return self._replies.expected(None)

    def withdraw(self, sequence_number: int) -> bool:
        """Give back the number of the last mail sealed, because its delivery was refused
        before it reached the recipient; returns whether it was (it is not if later mail was
        sealed since)."""
        with self._lock:
            if self._next_sequence_number != sequence_number + 1:
                return False
            self._next_sequence_number = sequence_number
            return True

    def encrypt_mail(
        self, body: bytes, envelope: bytes = b"", *, private_header: bytes = b""
    ) -> bytes:
        """Seal ``body`` (secret) and ``envelope`` (authenticated, readable by the host)."""
        with self._lock:
            sequence_number = self._next_sequence_number
            mail = seal_mail(
                self.sender_private_key,
                self.destination,
                topic=self.topic,
                sequence_number=sequence_number,
                body=body,
                envelope=envelope,
                # The hidden header counts towards the padded size, so its length (an answer
                # carries one, other mail may not) does not show either.
                padded_size=self.min_size_policy.padded_size(len(body) + len(private_header))
                - len(private_header),
                private_header=private_header,
                key_spec=self.key_spec,
            )
            self._next_sequence_number = sequence_number + 1
            return mail

    def decrypt_mail(self, mail: bytes, max_size: int = DEFAULT_MAX_MAIL_SIZE) -> EnclaveMail:
        """Open a reply: it must come from the destination, on this topic, in order.

        Raises :class:`MailDecryptionError`, :class:`MailSenderError` or
        :class:`MailReplayError`; a rejected mail changes nothing.
        """
        return self.accept_reply(open_mail(self.sender_private_key, mail, max_size))

    def accept_reply(self, opened: EnclaveMail) -> EnclaveMail:
        """The checks of :meth:`decrypt_mail` on a mail already opened with our key."""
        self.check_reply(opened)
        self._replies.check_and_advance(None, opened.sequence_number, "reply")
        return opened

    def record_reply(self, opened: EnclaveMail) -> None:
        """Record a reply :meth:`check_reply` accepted (the caller holds the two together)."""
        self._replies.advance(None, opened.sequence_number)

    def check_reply(self, opened: EnclaveMail) -> None:
        """The checks of :meth:`accept_reply`, recording nothing."""
        if opened.authenticated_sender != self.destination:
            raise MailSenderError(
                "the mail was not sent by this post office's destination: "
                f"expected {self.destination.encoded.hex()}, "
                f"got {opened.authenticated_sender.encoded.hex()}"
            )
        if opened.topic != self.topic:
            raise MailSenderError(
                f"the mail is on topic {opened.topic!r}, not this post office's {self.topic!r}"
            )
        self._replies.check(None, opened.sequence_number, "reply")


@dataclass(frozen=True)
class ClusterKey:
    """A public key several enclave instances can open mail for: one a KDS derived for a key
    spec and gives to every enclave that meets the spec's policy (docs/kds.md, clusters).

    Get one checked from :func:`sanctorum.kds.client.fetch_cluster_key`, which verifies the
    KDS's signature and attestation; mail sealed to it names ``key_spec`` in its header.
    """

    public_key: Curve25519PublicKey
    key_spec: bytes
    """The key's spec, canonical bytes (:meth:`sanctorum.kds.spec.KeySpec.decode`)."""

    def create_post_office(
        self,
        sender_private_key: Curve25519PrivateKey,
        topic: str = "default",
        min_size_policy: MinSizePolicy | None = None,
    ) -> PostOffice:
        """A post office sealing to this key (replies come from each instance's own key)."""
        return PostOffice(
            sender_private_key, self.public_key, topic, min_size_policy, key_spec=self.key_spec
        )
