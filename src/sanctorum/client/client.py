"""EnclaveClient and AsyncEnclaveClient: verify an enclave and exchange mail with it.

The protocol lives in :class:`ClientCore`, which does no I/O: it checks attestations, seals
mail, opens and checks replies, and keeps the state ``save()`` writes. The two clients only move
its bytes through a transport, one blocking and one with asyncio.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from sanctorum.attestation.collateral import CollateralFetcher
from sanctorum.attestation.constraint import EnclaveConstraint
from sanctorum.attestation.instance_info import EnclaveInstanceInfo
from sanctorum.client.transport import AsyncEnclaveTransport, EnclaveTransport, ReceivedMail
from sanctorum.common.errors import (
    ClientStateError,
    EnclaveCallError,
    EnclaveRollbackError,
    EnclaveStateError,
    InvalidKeyError,
    MailDecryptionError,
    MailFormatError,
    MailRefusedError,
    MailReplayError,
    MailSequenceError,
    MailTooLargeError,
    SanctorumError,
    TransportError,
    UnattestedSenderError,
)
from sanctorum.common.keys import Curve25519PrivateKey, Curve25519PublicKey
from sanctorum.mail.format import (
    MAX_KEY_SPEC_SIZE,
    EnclaveMail,
    open_mail,
    sealed_size,
    validate_topic,
)
from sanctorum.mail.post_office import ClusterKey, PostOffice
from sanctorum.mail.private_header import (
    COMMIT_ID_SIZE,
    NONCE_SIZE,
    ConversationHeader,
    RequestId,
)

_STATE_VERSION = 2
_KNOWN_INSTANCES = 16  # enclave instances whose mail this client still accepts
_RETIRED_INSTANCES = 1024  # older instances it remembers having known, to drop their mail
_DROP_LIMIT = 1000  # mails dropped in one call before the client gives up on the host
_UNANSWERED_PER_TOPIC = 256  # requests per topic whose answer may still come
_LINEAGES = 1024  # lines of state (a cluster's instances each have one) checked for rollback


@dataclass
class _Topic:
    """A topic's requests: the next request number, and the requests still unanswered."""

    next_request: int = 0
    unanswered: dict[int, bytes] = field(default_factory=dict)  # number → nonce, oldest first


@dataclass(frozen=True)
class OutgoingMail:
    """A request sealed to one enclave instance, ready to deliver (see :meth:`ClientCore.seal`).

    Resealing it for a restarted instance keeps its request id, so the enclave can tell a
    resend from a new request."""

    mail: bytes
    topic: str
    request: RequestId
    instance: Curve25519PublicKey
    sequence_number: int
    body: bytes
    envelope: bytes


class ClientCore:
    """Everything a client of one enclave service knows and checks, without any I/O.

    ``private_key`` is the client's identity as enclaves see it (the mail's authenticated
    sender); a fresh one is made if none is given. All conversation state lives here and in
    :meth:`save`: the enclave instances this client verified, sequence numbers, request
    counters, which mail it has opened (its transport acknowledges only that), mail it opened
    but did not hand out yet, and the last commit it heard of. :meth:`save` keeps the private
    key too, so keep saved state secret.

    With ``rollback_detection`` (the default), a mail from an enclave with persistent state
    raises :class:`EnclaveRollbackError` if the enclave no longer remembers the last state it
    told this client about: the host restarted it from an older copy of its state.

    ``collateral`` (also an attribute, to set after :meth:`restore`) replaces the DCAP
    collateral the host ships with every attestation: your own, or a
    :class:`~sanctorum.attestation.collateral.CollateralFetcher` that fetches it fresh from
    Intel's PCS or your PCCS, so the host cannot choose how old it is (docs/sgx.md).

    With ``cluster`` (a :class:`~sanctorum.mail.post_office.ClusterKey` from
    :func:`sanctorum.kds.client.fetch_cluster_key`), requests are sealed to that KDS key instead
    of one instance's key: any instance the KDS gives the key to can open them, whichever host
    the request reaches (docs/kds.md, clusters). Replies still come from each instance's own
    attested key and must meet ``constraint``; rollback detection then checks each instance's
    line of state apart.
    """

    def __init__(
        self,
        constraint: EnclaveConstraint | str,
        private_key: Curve25519PrivateKey | None = None,
        *,
        rollback_detection: bool = True,
        collateral: str | dict[str, str] | CollateralFetcher | None = None,
        cluster: ClusterKey | None = None,
    ) -> None:
        self.constraint = (
            constraint
            if isinstance(constraint, EnclaveConstraint)
            else EnclaveConstraint.parse(constraint)
        )
        self.private_key = private_key or Curve25519PrivateKey.generate()
        self.correlation_id = secrets.token_hex(16)
        """The routing hint under which the host queues this client's mail."""
        self._instance_info: EnclaveInstanceInfo | None = None
        # Post offices per verified enclave instance (most recent last) and topic.
        self._instances: dict[Curve25519PublicKey, dict[str, PostOffice]] = {}
        # Instances no longer kept, with the next reply number per topic they had reached
        # (None: not known, from state saved by an older version): their mail is dropped, or
        # (a cluster's members, numbers known) verified again and taken in order.
        self._retired: dict[Curve25519PublicKey, dict[str, int] | None] = {}
        # A cluster's members verified but not heard from yet: they join _instances with their
        # first mail this client takes, so that instances whose mail it only drops (copies a
        # host makes) push no member out. Value: (post offices, whether it was retired).
        self._candidates: dict[Curve25519PublicKey, tuple[dict[str, PostOffice], bool]] = {}
        self._topics: dict[str, _Topic] = {}
        self._dropped = 0  # in the current call
        self._inbox: deque[EnclaveMail] = deque()
        # Per topic, the last request whose delivery had an unknown outcome: delivered again,
        # byte for byte, before the next request on that topic (see :meth:`in_doubt`).
        self._in_doubt: dict[str, OutgoingMail] = {}
        self.acknowledged: int | None = None
        """The id of the last mail this client opened: its transport acknowledges it."""
        self.rollback_detection = rollback_detection
        self.collateral = collateral
        self._last_commit: bytes | None = None  # the enclave state we last heard of
        self.cluster = cluster
        self._cluster_offices: dict[str, PostOffice] = {}  # per topic
        # With a cluster: the last commit heard of per lineage (each instance's own state).
        self._lineages: dict[bytes, bytes] = {}
        self._lock = threading.RLock()
        self.state_path: Path | None = None
        self._saved_acknowledged: int | None = None
        """Where the client keeps itself, if set (see :meth:`EnclaveClient.open`): it is saved
        there before every delivery and after every call."""

    @property
    def public_key(self) -> Curve25519PublicKey:
        """How enclaves see this client."""
        return self.private_key.public_key

    @property
    def enclave_instance_info(self) -> EnclaveInstanceInfo:
        """The verified attestation of the enclave this client talks to."""
        if self._instance_info is None:
            raise EnclaveStateError("the client is not started: call start(transport) first")
        return self._instance_info

    def adopt(self, attestation: bytes) -> bool:
        """Verify ``attestation`` and check the constraint, then talk to that instance.

        Returns whether it is another instance (a new key) than before. Raises
        :class:`InvalidEnclaveError` if it does not verify or fails the constraint; nothing is
        sent to such an enclave. An instance this client talked to before (also before a
        :meth:`save`) continues its sequence numbers; a new one starts them afresh.
        """
        info = EnclaveInstanceInfo.deserialize(attestation, collateral=self.collateral)
        self.constraint.check(info)
        with self._lock:
            key = info.encryption_key
            changed = self._instance_info is None or key != self._instance_info.encryption_key
            if self.cluster is not None:  # requests go to the cluster's key: a candidate
                self._add_candidate(key)
            else:
                offices = self._instances.pop(key, None)
                self._instances[key] = self._unretired(key) if offices is None else offices
                self._retire_oldest_instances()
            self._instance_info = info
        return changed

    def admit(self, attestation: bytes, sender: bytes) -> None:
        """Accept mail from an earlier instance: verify its ``attestation`` and the constraint,
        and check that it is the instance with encryption key ``sender``. It does not become
        the instance this client sends to. Raises :class:`InvalidEnclaveError` or
        :class:`UnattestedSenderError`."""
        info = EnclaveInstanceInfo.deserialize(attestation, collateral=self.collateral)
        self.constraint.check(info)
        if info.encryption_key.encoded != sender:
            raise UnattestedSenderError(
                f"the host has no attestation for enclave key {sender.hex()}, which sent this "
                "client a mail; the mail stays on the host",
                sender,
            )
        with self._lock:
            if self.cluster is not None:
                self._add_candidate(info.encryption_key)
                return
            if info.encryption_key not in self._instances:
                self._instances[info.encryption_key] = self._unretired(info.encryption_key)
            if self._instance_info is not None:  # the current instance stays the newest
                current = self._instance_info.encryption_key
                self._instances[current] = self._instances.pop(current, {})
            self._retire_oldest_instances()

    def _retire_oldest_instances(self) -> None:
        """Keep post offices for the newest instances only; of the others remember that they
        were and how far their replies went (their mail is then dropped, since what they sent
        was read long ago or is a replay; a cluster's members are verified again instead)."""
        while len(self._instances) > _KNOWN_INSTANCES:
            retired = next(iter(self._instances))
            self._retired[retired] = _reply_numbers(self._instances.pop(retired))
        while len(self._retired) > _RETIRED_INSTANCES:
            del self._retired[next(iter(self._retired))]

    def _unretired(self, key: Curve25519PublicKey) -> dict[str, PostOffice]:
        """Post offices for an instance verified (again): a retired one's continue its reply
        numbers, so its old mail stays refused as replays."""
        return {
            topic: PostOffice(self.private_key, key, topic, next_reply_sequence_number=number)
            for topic, number in (self._retired.pop(key, None) or {}).items()
        }

    def _add_candidate(self, key: Curve25519PublicKey) -> None:
        if key in self._instances or key in self._candidates:
            return
        was_retired = key in self._retired
        self._candidates[key] = (self._unretired(key), was_retired)
        while len(self._candidates) > _KNOWN_INSTANCES:
            dropped = next(iter(self._candidates))
            offices, retired_before = self._candidates.pop(dropped)
            if retired_before:  # back where it was, with its numbers
                self._retired[dropped] = _reply_numbers(offices)

    def _keep(self, key: Curve25519PublicKey) -> None:
        """A mail of ``key`` was taken: a candidate joins the instances, the most recent last."""
        candidate = self._candidates.pop(key, None)
        self._instances[key] = candidate[0] if candidate else self._instances.pop(key)
        self._retire_oldest_instances()

    # -- sending -----------------------------------------------------------------------------

    def seal(
        self,
        body: bytes,
        envelope: bytes | None = None,
        topic: str = "default",
        *,
        max_size: int | None = None,
    ) -> OutgoingMail:
        """Seal ``body`` as a new request to the adopted enclave instance on ``topic``.

        ``max_size`` is the host's limit: a larger mail is refused with
        :class:`MailTooLargeError` and spends nothing.
        """
        validate_topic(topic)
        envelope = envelope or b""
        with self._lock:
            if max_size is not None:
                key_spec = None if self.cluster is None else self.cluster.key_spec
                _check_size(topic, envelope, len(body), max_size, key_spec)
            state = self._topics.setdefault(topic, _Topic())
            request = RequestId(state.next_request, secrets.token_bytes(NONCE_SIZE))
            state.next_request += 1
            state.unanswered[request.number] = request.nonce
            while len(state.unanswered) > _UNANSWERED_PER_TOPIC:
                del state.unanswered[next(iter(state.unanswered))]
            return self._seal(body, envelope, topic, request, max_size)

    def reseal(self, outgoing: OutgoingMail, *, max_size: int | None = None) -> OutgoingMail:
        """The same request sealed to the currently adopted instance (after a restart)."""
        with self._lock:
            return self._seal(
                outgoing.body, outgoing.envelope, outgoing.topic, outgoing.request, max_size
            )

    def destination(self) -> Curve25519PublicKey:
        """The key requests are sealed to: the cluster's, or the adopted instance's."""
        if self.cluster is not None:
            return self.cluster.public_key
        return self.enclave_instance_info.encryption_key

    def _sending_office(self, topic: str) -> PostOffice:
        if self.cluster is None:
            return self._post_office(self.enclave_instance_info.encryption_key, topic)
        office = self._cluster_offices.get(topic)
        if office is None:
            office = self._cluster_offices[topic] = self.cluster.create_post_office(
                self.private_key, topic
            )
        return office

    def _seal(
        self, body: bytes, envelope: bytes, topic: str, request: RequestId, max_size: int | None
    ) -> OutgoingMail:
        office = self._sending_office(topic)
        header = ConversationHeader(request=request).encode()
        sequence_number = office.next_sequence_number
        mail = office.encrypt_mail(body, envelope, private_header=header)
        if max_size is not None and len(mail) > max_size:
            office.withdraw(sequence_number)  # padding took it over the limit
            raise _too_large(len(mail), max_size)
        return OutgoingMail(
            mail, topic, request, office.destination, sequence_number, bytes(body), envelope
        )

    def refused(self, outgoing: OutgoingMail) -> None:
        """The host refused ``outgoing`` before the enclave saw it: give its sequence number
        back, so the next mail does not leave a gap. (Its request number stays used: if a
        lying host delivers it after all, its answer is still recognised.)"""
        with self._lock:
            if self.cluster is not None and outgoing.instance == self.cluster.public_key:
                office = self._cluster_offices.get(outgoing.topic)
            else:
                office = self._instances.get(outgoing.instance, {}).get(outgoing.topic)
            if office is not None:
                office.withdraw(outgoing.sequence_number)

    def in_doubt(self, topic: str) -> OutgoingMail | None:
        """The request on ``topic`` whose delivery had an unknown outcome, if any.

        Its exact bytes must be delivered again before the next request on the topic: if the
        enclave saw it, the copy is refused as a replay; if not, it arrives now, so the next
        request does not meet a gap. Either way it is applied at most once.
        """
        with self._lock:
            return self._in_doubt.get(topic)

    def _write_ahead(self, outgoing: OutgoingMail) -> None:
        self.set_in_doubt(outgoing, True)
        self._persist()

    def _delivery_failed(
        self, outgoing: OutgoingMail, error: SanctorumError, *, settling: bool
    ) -> None:
        """What a failed delivery of ``outgoing`` says about its fate (``settling``: it was a
        second delivery of a mail in doubt)."""
        if isinstance(error, MailSequenceError):
            # The enclave had it (a replay) or cannot take it (a gap): settled either way.
            self._settled(outgoing, refused=not settling)
        elif isinstance(error, MailRefusedError):
            if settling and not isinstance(error, MailTooLargeError):
                return  # the host did not take it this time either: still in doubt
            # Refused before the enclave saw it, or for good (too large): number given back.
            self._settled(outgoing, refused=True)
        else:  # the enclave's handler raised: it had the mail
            self._settled(outgoing, refused=False)

    def _settled(self, outgoing: OutgoingMail, *, refused: bool) -> None:
        """The host's answer says what became of ``outgoing``: no longer in doubt. With
        ``refused``, the enclave never saw it: its sequence number is given back."""
        self.set_in_doubt(outgoing, False)
        if refused:
            self.refused(outgoing)

    def set_in_doubt(self, outgoing: OutgoingMail, in_doubt: bool) -> None:
        with self._lock:
            if in_doubt:
                self._in_doubt[outgoing.topic] = outgoing
            elif self._in_doubt.get(outgoing.topic) is outgoing:
                del self._in_doubt[outgoing.topic]

    def _post_office(self, instance: Curve25519PublicKey, topic: str) -> PostOffice:
        offices = self._instances.get(instance)
        if offices is None and instance in self._candidates:
            offices = self._candidates[instance][0]
        if offices is None:
            raise UnattestedSenderError(
                f"enclave key {instance.encoded.hex()} was never verified by this client",
                instance.encoded,
            )
        office = offices.get(topic)
        if office is None:
            office = offices[topic] = PostOffice(self.private_key, instance, topic)
        return office

    # -- receiving ---------------------------------------------------------------------------

    def receive(self, received: ReceivedMail) -> tuple[EnclaveMail, RequestId | None] | None:
        """Open a mail the host handed over; returns it with the request it answers, or None
        if it is to be dropped (a duplicate, a replay, or not a mail for this client).

        Only mail from an attested enclave instance is accepted, with rising sequence numbers
        per instance and topic; an answer only if it answers a request still unanswered; and
        none from a rolled-back state. Raises :class:`UnattestedSenderError` for a sender this
        client never verified (fetch the attestation, :meth:`adopt`, try again) and
        :class:`EnclaveRollbackError`; then nothing changes and the mail is not acknowledged.
        """
        with self._lock:
            result = self._open(received.mail)
            self.acknowledged = received.mail_id  # not reached if the mail must stay
            if result is None:
                self._dropped += 1
                if self._dropped > _DROP_LIMIT:
                    self._dropped = 0
                    raise TransportError(
                        f"the host handed over {_DROP_LIMIT} mails in a row that were copies, "
                        "replays or not for this client; giving up for now"
                    )
            return result

    def _open(self, data: bytes) -> tuple[EnclaveMail, RequestId | None] | None:
        try:
            opened = open_mail(self.private_key, data)
        except (MailDecryptionError, MailFormatError):
            return None  # not a mail for this key, or damaged in transit: nobody can open it
        sender = opened.authenticated_sender
        if sender in self._retired and (self.cluster is None or self._retired[sender] is None):
            return None  # an old instance of the one service: what it sent was read long ago
        if sender not in self._instances and sender not in self._candidates:
            raise UnattestedSenderError(
                f"received a mail from enclave key {sender.encoded.hex()}, which this "
                "client has not verified an attestation for",
                sender.encoded,
            )
        office = self._post_office(sender, opened.topic)
        header = ConversationHeader.decode(opened.private_header)
        try:
            office.check_reply(opened)
        except MailReplayError:
            return None  # a second copy of a mail already received
        answers = header.answers
        if answers is not None:
            state = self._topics.get(opened.topic)
            if state is None or state.unanswered.get(answers.number) != answers.nonce:
                # The answer to a request already answered: an answer the enclave sent
                # again after a resend, or a replay; in a cluster, also the answer of a second
                # instance the request was delivered to, whose commit is then news.
                office.record_reply(opened)
                lineage = header.lineage if self.cluster is not None else None
                if lineage in self._lineages and self._lineages[lineage] == header.last_told:
                    self._heard_of(lineage, header.commit_id)  # (never a lineage new to us)
                return None
        if header.commit_id is not None:
            # In order: the last commit we heard of is the one this mail's commit followed,
            # or this mail's own (the enclave sent several mails in one commit). A cluster's
            # instances each have their own state: each lineage is checked apart.
            lineage = header.lineage if self.cluster is not None else None
            last = self._last_commit if lineage is None else self._lineages.get(lineage)
            known = lineage is None or lineage in self._lineages  # else: a member new to us
            if (
                self.rollback_detection
                and known
                and last not in (header.last_told, header.commit_id)
            ):
                raise EnclaveRollbackError(
                    "the enclave has been rolled back: it answers from a state older than "
                    "the one it last told this client about (the host restarted it from an "
                    "old copy of its sealed state, or dropped mail that told of a newer "
                    "one); do not trust this answer. (If this client was restored from a "
                    "saved state older than what it had received, that is the cause.)"
                )
            if lineage is None:
                self._last_commit = header.commit_id
            else:
                self._heard_of(lineage, header.commit_id)
        office.record_reply(opened)
        if answers is not None:
            del self._topics[opened.topic].unanswered[answers.number]
        if self.cluster is not None:  # members heard from lately are the last retired
            self._keep(sender)
        return opened, answers

    def _heard_of(self, lineage: bytes, commit_id: bytes | None) -> None:
        if commit_id is None:
            return
        self._lineages.pop(lineage, None)
        self._lineages[lineage] = commit_id  # the most recent last
        while len(self._lineages) > _LINEAGES:
            del self._lineages[next(iter(self._lineages))]

    def keep(self, mail: EnclaveMail) -> None:
        """Hold an opened mail for :meth:`next_kept` (it is part of :meth:`save`)."""
        with self._lock:
            self._inbox.append(mail)

    def next_kept(self) -> EnclaveMail | None:
        with self._lock:
            return self._inbox.popleft() if self._inbox else None

    def open_reply(self, mail: bytes) -> EnclaveMail:
        """Open one mail handed over outside any transport (acknowledges nothing); raises
        :class:`MailReplayError` for one to drop (see :meth:`receive`)."""
        with self._lock:
            result = self._open(mail)
        if result is None:
            raise MailReplayError(
                "the mail was received before, answers a request already answered, or does "
                "not open with this client's key"
            )
        return result[0]

    # -- saved state -------------------------------------------------------------------------

    def save(self) -> bytes:
        """All of this client's conversation state, to :meth:`restore` later (in any process,
        with any transport). It contains the client's private key: store it as a secret."""
        with self._lock:
            state: dict[str, Any] = {
                "version": _STATE_VERSION,
                "constraint": self.constraint.format(),
                "private_key": self.private_key.encoded.hex(),
                "correlation_id": self.correlation_id,
                "rollback_detection": self.rollback_detection,
                "last_commit": self._last_commit.hex() if self._last_commit else None,
                "acknowledged": self.acknowledged,
                "instances": [
                    [
                        key.encoded.hex(),
                        {
                            topic: [office.next_sequence_number, office.next_reply_sequence_number]
                            for topic, office in offices.items()
                        },
                    ]
                    for key, offices in self._instances.items()
                ],
                "retired": [
                    key.encoded.hex() if numbers is None else [key.encoded.hex(), numbers]
                    for key, numbers in self._retired_with_candidates()
                ],
                "topics": {
                    topic: [
                        state.next_request,
                        [[number, nonce.hex()] for number, nonce in state.unanswered.items()],
                    ]
                    for topic, state in self._topics.items()
                },
                "kept": [_mail_to_json(mail) for mail in self._inbox],
                "in_doubt": [_outgoing_to_json(outgoing) for outgoing in self._in_doubt.values()],
            }
            if self.cluster is not None:
                state["cluster"] = {
                    "public_key": self.cluster.public_key.encoded.hex(),
                    "key_spec": base64.b64encode(self.cluster.key_spec).decode(),
                    "topics": {
                        topic: office.next_sequence_number
                        for topic, office in self._cluster_offices.items()
                    },
                    "lineages": [
                        [lineage.hex(), commit.hex()] for lineage, commit in self._lineages.items()
                    ],
                }
            return json.dumps(state, sort_keys=True).encode()

    def _retired_with_candidates(
        self,
    ) -> list[tuple[Curve25519PublicKey, dict[str, int] | None]]:
        """What :meth:`save` keeps of retired instances: also those verified again since but
        not heard from (candidates are not saved; they are verified again when they write)."""
        candidates = [
            (key, _reply_numbers(offices))
            for key, (offices, retired) in self._candidates.items()
            if retired
        ]
        return [*self._retired.items(), *candidates]

    def save_to(self, path: str | os.PathLike[str]) -> None:
        """:meth:`save` into ``path`` atomically (a temporary file beside it, synced, then
        renamed), readable by its owner only: a crash leaves the old state or the new one."""
        save_atomically(Path(path), self.save())

    def _persist(self) -> None:
        if self.state_path is not None:
            with self._lock:
                self.save_to(self.state_path)
                self._saved_acknowledged = self.acknowledged

    def _persist_before_acknowledging(self) -> None:
        """Acknowledged mail is deleted by the host: what the client took from it must be
        saved first (mail kept for :meth:`poll_mail`, the last commit heard of)."""
        if self.state_path is not None and self.acknowledged != self._saved_acknowledged:
            self._persist()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        constraint: EnclaveConstraint | str | None = None,
        *,
        cluster: ClusterKey | None = None,
    ) -> Self:
        """The client kept in ``path``: restored if the file exists, else created for
        ``constraint`` and saved there. It saves itself to ``path`` before every delivery
        (write-ahead: the mail is recorded as in doubt first) and after every call, so a crash
        at any moment leaves a state it can go on from, as if the connection had broken.

        ``cluster`` makes a new client a cluster's (see :class:`ClientCore`).

        Raises :class:`ClientStateError` if the file holds no client, or one for another
        constraint than ``constraint`` or another cluster key than ``cluster``."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if constraint is None:
                raise ClientStateError(
                    f"{path} holds no client yet: give a constraint to create one"
                ) from None
            client = cls(constraint, cluster=cluster)
            client.save_to(path)
        else:
            try:
                client = cls.restore(data)
            except ClientStateError as error:
                raise ClientStateError(f"cannot use the client saved in {path}: {error}") from None
            if constraint is not None:
                wanted = (
                    constraint
                    if isinstance(constraint, EnclaveConstraint)
                    else EnclaveConstraint.parse(constraint)
                )
                if wanted != client.constraint:
                    raise ClientStateError(
                        f"the client saved in {path} is for the constraint "
                        f"{client.constraint.format()!r}, not {wanted.format()!r}; use another "
                        "file for another constraint"
                    )
            if cluster is not None and cluster != client.cluster:
                raise ClientStateError(
                    f"the client saved in {path} is not one of the cluster key given; use "
                    "another file for another cluster"
                )
        client.state_path = path
        return client

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """A client from :meth:`save`'s bytes; call :meth:`start` to reconnect.

        If the enclave still runs an instance this client talked to, topics continue where
        they were; if it has restarted (new key), they start afresh.
        """
        try:
            state = json.loads(data)
            if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
                raise ClientStateError(
                    "saved client state is not of version "
                    f"{_STATE_VERSION}; it was made by another version of Sanctorum"
                )
            cluster = state.get("cluster")
            client = cls(
                EnclaveConstraint.parse(state["constraint"]),
                Curve25519PrivateKey(bytes.fromhex(state["private_key"])),
                rollback_detection=bool(state["rollback_detection"]),
                cluster=None if cluster is None else _cluster_key_from_json(cluster),
            )
            if cluster is not None:
                assert client.cluster is not None
                for topic, next_out in cluster["topics"].items():
                    if not _counter(next_out):
                        raise ClientStateError(f"bad sequence number for topic {topic!r}")
                    client._cluster_offices[validate_topic(topic)] = PostOffice(
                        client.private_key,
                        client.cluster.public_key,
                        topic,
                        next_sequence_number=next_out,
                        key_spec=client.cluster.key_spec,
                    )
                for lineage, commit in cluster["lineages"]:
                    ids = bytes.fromhex(lineage), bytes.fromhex(commit)
                    if any(len(value) != COMMIT_ID_SIZE for value in ids):
                        raise ClientStateError("saved client state has a malformed lineage")
                    client._lineages[ids[0]] = ids[1]
            last_commit = state["last_commit"]
            if last_commit is not None:
                client._last_commit = bytes.fromhex(last_commit)
                if len(client._last_commit) != COMMIT_ID_SIZE:
                    raise ClientStateError("saved client state has a malformed commit id")
            correlation_id = state["correlation_id"]
            if not isinstance(correlation_id, str) or not correlation_id:
                raise ClientStateError("saved client state has no correlation id")
            client.correlation_id = correlation_id
            acknowledged = state["acknowledged"]
            if acknowledged is not None and not _counter(acknowledged):
                raise ClientStateError("saved client state has a malformed acknowledgement")
            client.acknowledged = acknowledged
            for item in state["retired"]:
                # A key alone: saved by an older version, its reply numbers not known.
                key_hex, numbers = (item, None) if isinstance(item, str) else item
                if numbers is not None and not all(map(_counter, numbers.values())):
                    raise ClientStateError("saved client state has a malformed retired instance")
                client._retired[Curve25519PublicKey(bytes.fromhex(key_hex))] = (
                    None
                    if numbers is None
                    else {validate_topic(topic): number for topic, number in numbers.items()}
                )
            for key_hex, topics in state["instances"]:
                key = Curve25519PublicKey(bytes.fromhex(key_hex))
                offices = client._instances[key] = {}
                for topic, (next_out, next_in) in topics.items():
                    if not (_counter(next_out) and _counter(next_in)):
                        raise ClientStateError(f"bad sequence numbers for topic {topic!r}")
                    offices[validate_topic(topic)] = PostOffice(
                        client.private_key,
                        key,
                        topic,
                        next_sequence_number=next_out,
                        next_reply_sequence_number=next_in,
                    )
            for topic, (next_request, unanswered) in state["topics"].items():
                if not _counter(next_request):
                    raise ClientStateError(f"bad request counter for topic {topic!r}")
                client._topics[validate_topic(topic)] = _Topic(
                    next_request, {_checked(n): bytes.fromhex(nonce) for n, nonce in unanswered}
                )
            client._inbox.extend(_mail_from_json(item) for item in state["kept"])
            for item in state["in_doubt"]:
                outgoing = _outgoing_from_json(item)
                client._in_doubt[outgoing.topic] = outgoing
            return client
        except ClientStateError:
            raise
        except (
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
            OverflowError,
            RecursionError,
            InvalidKeyError,
        ) as error:
            raise ClientStateError(f"saved client state is malformed: {error!r:.200}") from None
        except SanctorumError as error:
            raise ClientStateError(f"saved client state is invalid: {error}") from None


def save_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new content, never
    half: a temporary file beside it (mode 0600), synced, renamed over it, directory synced."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _reply_numbers(offices: dict[str, PostOffice]) -> dict[str, int]:
    return {topic: office.next_reply_sequence_number for topic, office in offices.items()}


def _counter(value: object) -> bool:
    return type(value) is int and 0 <= value < 2**63


def _checked(value: object) -> int:
    if not _counter(value):
        raise ClientStateError(f"saved client state has a malformed number: {value!r:.40}")
    assert isinstance(value, int)
    return value


def _check_size(
    topic: str, envelope: bytes, body_size: int, max_size: int, key_spec: bytes | None
) -> None:
    size = sealed_size(
        topic,
        len(envelope),
        body_size,
        _REQUEST_HEADER_SIZE,
        None if key_spec is None else len(key_spec),
    )
    if size > max_size:
        raise _too_large(size, max_size)


def _too_large(size: int, max_size: int) -> MailTooLargeError:
    return MailTooLargeError(
        f"the mail would be {size} bytes once sealed, over the host's limit of {max_size} "
        "bytes; nothing was sent and no sequence number was used: send less per mail"
    )


_REQUEST_HEADER_SIZE = len(ConversationHeader(request=RequestId(0, bytes(NONCE_SIZE))).encode())


def _cluster_key_from_json(item: dict[str, Any]) -> ClusterKey:
    key_spec = base64.b64decode(item["key_spec"], validate=True)
    if not 0 < len(key_spec) <= MAX_KEY_SPEC_SIZE:
        raise ClientStateError("saved client state has a malformed cluster key spec")
    return ClusterKey(Curve25519PublicKey(bytes.fromhex(item["public_key"])), key_spec)


def _mail_to_json(mail: EnclaveMail) -> dict[str, Any]:
    return {
        "body": base64.b64encode(mail.body).decode(),
        "envelope": base64.b64encode(mail.envelope).decode(),
        "topic": mail.topic,
        "sequence_number": mail.sequence_number,
        "sender": mail.authenticated_sender.encoded.hex(),
        "private_header": base64.b64encode(mail.private_header).decode(),
    }


def _outgoing_to_json(outgoing: OutgoingMail) -> dict[str, Any]:
    return {
        "mail": base64.b64encode(outgoing.mail).decode(),
        "topic": outgoing.topic,
        "request": [outgoing.request.number, outgoing.request.nonce.hex()],
        "instance": outgoing.instance.encoded.hex(),
        "sequence_number": outgoing.sequence_number,
        "body": base64.b64encode(outgoing.body).decode(),
        "envelope": base64.b64encode(outgoing.envelope).decode(),
    }


def _outgoing_from_json(item: dict[str, Any]) -> OutgoingMail:
    number, nonce = item["request"]
    if not (_counter(number) and _counter(item["sequence_number"])):
        raise ClientStateError("saved client state has a malformed request in doubt")
    return OutgoingMail(
        mail=base64.b64decode(item["mail"], validate=True),
        topic=validate_topic(item["topic"]),
        request=RequestId(number, bytes.fromhex(nonce)),
        instance=Curve25519PublicKey(bytes.fromhex(item["instance"])),
        sequence_number=item["sequence_number"],
        body=base64.b64decode(item["body"], validate=True),
        envelope=base64.b64decode(item["envelope"], validate=True),
    )


def _mail_from_json(item: dict[str, Any]) -> EnclaveMail:
    return EnclaveMail(
        body=base64.b64decode(item["body"], validate=True),
        envelope=base64.b64decode(item["envelope"], validate=True),
        topic=validate_topic(item["topic"]),
        sequence_number=_checked(item["sequence_number"]),
        authenticated_sender=Curve25519PublicKey(bytes.fromhex(item["sender"])),
        private_header=base64.b64decode(item["private_header"], validate=True),
    )


class EnclaveClient(ClientCore):
    """A client of one enclave service (blocking I/O; see :class:`AsyncEnclaveClient`).

    It checks the enclave's attestation against ``constraint`` before sending anything, seals
    every mail to the attested key, and accepts mail only from attested instances::

        client = EnclaveClient("C:9A0F… SEC:INSECURE")
        client.start(WebTransport("http://localhost:8080"))
        reply = client.send_mail(b"hello")

    Every request carries an id that stays the same when it is resent, so an enclave with a
    persistent map applies it once, however often the host makes the client resend it. If the
    host answers ``MAIL_DECRYPTION`` (the enclave restarted), the client fetches the new
    attestation, checks the constraint again and resends the same request, once. Mail that is
    not the answer to the request being sent waits for :meth:`poll_mail`.
    """

    _transport: EnclaveTransport | None = None

    def start(self, transport: EnclaveTransport) -> None:
        """Fetch the attestation through ``transport`` and check it (see :meth:`adopt`)."""
        self.adopt(transport.get_attestation())
        self._transport = transport
        self._io_lock = threading.Lock()

    def _require_transport(self) -> EnclaveTransport:
        if self._transport is None:
            raise EnclaveStateError("the client is not started: call start(transport) first")
        return self._transport

    def send_mail(
        self, body: bytes, envelope: bytes | None = None, topic: str = "default"
    ) -> EnclaveMail | None:
        """Send ``body`` as a request; returns the enclave's answer to it, or None if the
        enclave did not answer at once (a later answer comes from :meth:`poll_mail`).

        Raises :class:`MailRefusedError` (:class:`MailTooLargeError`) if the host says it
        refused the mail before the enclave saw it (its sequence number is given back; the
        claim is the host's, see docs/clients.md),
        :class:`EnclaveCallError` if the enclave's handler raised (nothing applied),
        :class:`TransportError` if the outcome is unknown (the mail is delivered again, byte for
        byte, before the next one on its topic; its answer comes by :meth:`poll_mail`),
        :class:`EnclaveRollbackError` on a rolled-back enclave.
        """
        transport = self._require_transport()
        with self._io_lock:
            try:
                self._dropped = 0
                doubtful = self.in_doubt(topic)
                if doubtful is not None:
                    self._collect(transport, self._settle(transport, doubtful), None)
                outgoing = self.seal(body, envelope, topic, max_size=transport.max_mail_size)
                received = self._deliver(transport, outgoing, settling=False)
                return self._collect(transport, received, outgoing.request)
            finally:
                self._persist()

    def _settle(self, transport: EnclaveTransport, doubtful: OutgoingMail) -> ReceivedMail | None:
        """Deliver a mail of unknown fate again: a replay refusal means the enclave had it, a
        host that will never take it (too large) ends it; a host that refuses it for now leaves
        it in doubt (raised)."""
        try:
            return self._deliver(transport, doubtful, settling=True)
        except (MailSequenceError, EnclaveCallError, MailTooLargeError):
            return None

    def _deliver(
        self, transport: EnclaveTransport, outgoing: OutgoingMail, *, settling: bool
    ) -> ReceivedMail | None:
        # In doubt until the host's answer says what became of it (and saved so, first).
        self._write_ahead(outgoing)
        try:
            try:
                received = transport.deliver_mail(
                    outgoing.mail, self.correlation_id, self.acknowledged
                )
            except MailDecryptionError:
                # Most likely the enclave restarted with a new key: attest again and resend the
                # same request, which an enclave that applied it already answers, not applies.
                self.adopt(transport.get_attestation())
                if outgoing.instance == self.destination():
                    # The same instance (or a cluster's key, which does not change): the claim
                    # is false, the mail was damaged, or the instance cannot get the key.
                    raise
                self.set_in_doubt(outgoing, False)
                outgoing = self.reseal(outgoing, max_size=transport.max_mail_size)
                self._write_ahead(outgoing)
                received = transport.deliver_mail(
                    outgoing.mail, self.correlation_id, self.acknowledged
                )
        except (MailSequenceError, MailRefusedError, EnclaveCallError) as error:
            self._delivery_failed(outgoing, error, settling=settling)
            raise
        self._settled(outgoing, refused=False)
        return received

    def _collect(
        self,
        transport: EnclaveTransport,
        received: ReceivedMail | None,
        awaited: RequestId | None,
    ) -> EnclaveMail | None:
        """Open what the host hands over until the answer to ``awaited`` turns up; keep the
        rest for :meth:`poll_mail`."""
        while received is not None:
            result = self._receive(transport, received)
            if result is not None:
                mail, answers = result
                if awaited is not None and answers == awaited:
                    return mail
                self.keep(mail)
            self._persist_before_acknowledging()
            received = transport.poll_mail(self.correlation_id, self.acknowledged)
        return None

    def _receive(
        self, transport: EnclaveTransport, received: ReceivedMail
    ) -> tuple[EnclaveMail, RequestId | None] | None:
        try:
            return self.receive(received)
        except UnattestedSenderError as error:
            # Mail from an instance started since: accept it once its attestation checks out.
            # It is the one now running, or one that was replaced before the mail was read.
            self.adopt(transport.get_attestation())
            try:
                return self.receive(received)
            except UnattestedSenderError:
                pass
            sender = Curve25519PublicKey(error.sender)
            try:
                attestation = transport.get_attestation(sender)
            except TransportError:
                raise error from None
            self.admit(attestation, error.sender)
            return self.receive(received)

    def poll_mail(self) -> EnclaveMail | None:
        """The next mail for this client (an answer that came late, or mail the enclave sent
        on its own), or None."""
        transport = self._require_transport()
        with self._io_lock:
            try:
                self._dropped = 0
                kept = self.next_kept()
                while kept is None:
                    self._persist_before_acknowledging()
                    received = transport.poll_mail(self.correlation_id, self.acknowledged)
                    if received is None:
                        return None
                    result = self._receive(transport, received)
                    if result is not None:
                        return result[0]
                return kept
            finally:
                self._persist()


class AsyncEnclaveClient(ClientCore):
    """:class:`EnclaveClient` for asyncio: the same checks, awaitable I/O."""

    _transport: AsyncEnclaveTransport | None = None

    async def start(self, transport: AsyncEnclaveTransport) -> None:
        """Fetch the attestation through ``transport`` and check it (see :meth:`adopt`)."""
        self.adopt(await transport.get_attestation())
        self._transport = transport
        self._io_lock = asyncio.Lock()

    def _require_transport(self) -> AsyncEnclaveTransport:
        if self._transport is None:
            raise EnclaveStateError("the client is not started: await start(transport) first")
        return self._transport

    async def send_mail(
        self, body: bytes, envelope: bytes | None = None, topic: str = "default"
    ) -> EnclaveMail | None:
        """As :meth:`EnclaveClient.send_mail`."""
        transport = self._require_transport()
        async with self._io_lock:
            try:
                self._dropped = 0
                doubtful = self.in_doubt(topic)
                if doubtful is not None:
                    await self._collect(transport, await self._settle(transport, doubtful), None)
                outgoing = self.seal(body, envelope, topic, max_size=transport.max_mail_size)
                received = await self._deliver(transport, outgoing, settling=False)
                return await self._collect(transport, received, outgoing.request)
            finally:
                self._persist()

    async def _settle(
        self, transport: AsyncEnclaveTransport, doubtful: OutgoingMail
    ) -> ReceivedMail | None:
        try:
            return await self._deliver(transport, doubtful, settling=True)
        except (MailSequenceError, EnclaveCallError, MailTooLargeError):
            return None

    async def _deliver(
        self,
        transport: AsyncEnclaveTransport,
        outgoing: OutgoingMail,
        *,
        settling: bool,
    ) -> ReceivedMail | None:
        self._write_ahead(outgoing)
        try:
            try:
                received = await transport.deliver_mail(
                    outgoing.mail, self.correlation_id, self.acknowledged
                )
            except MailDecryptionError:
                self.adopt(await transport.get_attestation())
                if outgoing.instance == self.destination():
                    raise
                self.set_in_doubt(outgoing, False)
                outgoing = self.reseal(outgoing, max_size=transport.max_mail_size)
                self._write_ahead(outgoing)
                received = await transport.deliver_mail(
                    outgoing.mail, self.correlation_id, self.acknowledged
                )
        except (MailSequenceError, MailRefusedError, EnclaveCallError) as error:
            self._delivery_failed(outgoing, error, settling=settling)
            raise
        self._settled(outgoing, refused=False)
        return received

    async def _collect(
        self,
        transport: AsyncEnclaveTransport,
        received: ReceivedMail | None,
        awaited: RequestId | None,
    ) -> EnclaveMail | None:
        while received is not None:
            result = await self._receive(transport, received)
            if result is not None:
                mail, answers = result
                if awaited is not None and answers == awaited:
                    return mail
                self.keep(mail)
            self._persist_before_acknowledging()
            received = await transport.poll_mail(self.correlation_id, self.acknowledged)
        return None

    async def _receive(
        self, transport: AsyncEnclaveTransport, received: ReceivedMail
    ) -> tuple[EnclaveMail, RequestId | None] | None:
        try:
            return self.receive(received)
        except UnattestedSenderError as error:
            self.adopt(await transport.get_attestation())
            try:
                return self.receive(received)
            except UnattestedSenderError:
                pass
            sender = Curve25519PublicKey(error.sender)
            try:
                attestation = await transport.get_attestation(sender)
            except TransportError:
                raise error from None
            self.admit(attestation, error.sender)
            return self.receive(received)

    async def poll_mail(self) -> EnclaveMail | None:
        """As :meth:`EnclaveClient.poll_mail`."""
        transport = self._require_transport()
        async with self._io_lock:
            try:
                self._dropped = 0
                kept = self.next_kept()
                while kept is None:
                    self._persist_before_acknowledging()
                    received = await transport.poll_mail(self.correlation_id, self.acknowledged)
                    if received is None:
                        return None
                    result = await self._receive(transport, received)
                    if result is not None:
                        return result[0]
                return kept
            finally:
                self._persist()
