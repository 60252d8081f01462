"""Conversations under a hostile host (issue 9): the harness, and a Hypothesis stateful test.

The state machine drives several clients (some saved and restored between steps) against the
ledger enclave (``tests/enclaves/ledger_enclave.py``) through :class:`HostileHost`, which drops,
duplicates, holds, replays and reorders mail, restarts the enclave from any sealed state it
has seen and lies to the clients. After every step it checks, with an oracle that opens every
posted mail with the addressed client's key:

- each request (token) is applied at most once in the enclave's live state, and exactly as
  often as the commits on the live state's lineage applied it (so exactly once when the host
  delivered it honestly and did not roll the enclave back past it);
- every answer a client hands its user answers one of that client's own requests (and
  ``send_mail`` the request it sent), and no answer or push is handed out twice;
- each client's view of the enclave's commits only moves forward along one lineage: a client
  that heard of a commit a rollback discarded never accepts mail from the rolled-back state
  (it gets ``EnclaveRollbackError``, and is retired); a client gets that error only after a
  rollback, or after the host dropped or reordered its mail (docs/decisions.md, "Limits");
- mail a client acknowledged (opened) and that was meant for its user reaches the user (checked
  after draining the clients with an honest host), across saves and restores;
- a request a client holds "in doubt" (its delivery's outcome unknown) is dropped only once the
  enclave had it, unless the host lied about delivering it again;
- an honest host's mail never blocks a client (``UnattestedSenderError`` only while the host
  withholds the attestations of instances it replaced, or for mail it made up).

Errors a client may raise under attack are expected per attack and recorded as Hypothesis
events; any other outcome, or any other exception type, fails the test.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from ledger_enclave import Ledger

from sanctorum import (
    EnclaveCallError,
    EnclaveClient,
    EnclaveMail,
    EnclaveRollbackError,
    MailDecryptionError,
    MailRefusedError,
    MailSequenceError,
    TransportError,
    UnattestedSenderError,
)
from sanctorum.build import build
from sanctorum.common import Curve25519PrivateKey
from sanctorum.common.errors import MailReplayError, SanctorumError
from sanctorum.mail.format import open_mail
from sanctorum.mail.private_header import ConversationHeader
from sanctorum.testing import LATEST, DeliveryPlan, HostileHost, HostileTransport, Restart

ENCLAVES = Path(__file__).parent / "enclaves"
TOPIC = "ledger"
TOPICS = ("ledger", "side")  # the state machine's clients use both


@pytest.fixture(scope="session")
def ledger_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ledger enclave as a simulation bundle (built once per session)."""
    project = tmp_path_factory.mktemp("ledger")
    shutil.copy(ENCLAVES / "ledger_enclave.py", project / "ledger_enclave.py")
    (project / "enclave.toml").write_text(
        "[enclave]\n"
        'name = "ledger"\n'
        'entry = "ledger_enclave:Ledger"\n'
        "product_id = 1\n"
        "revocation_level = 0\n"
        "thread_safe = false\n"
        'sources = ["ledger_enclave.py"]\n'
        "persistent_map = true\n"
        f"max_persistent_map_size = {Ledger.persistent_map_size}\n"
    )
    return build(project).path


def _constraint(hostile: HostileHost) -> str:
    return f"C:{hostile.host.enclave_instance_info.code_hash} SEC:INSECURE"


def _client(hostile: HostileHost) -> tuple[EnclaveClient, HostileTransport]:
    transport = HostileTransport(hostile)
    client = EnclaveClient(_constraint(hostile))
    client.start(transport)
    return client, transport


def _counts(hostile: HostileHost) -> dict[str, int]:
    counts: dict[str, int] = json.loads(hostile.call_enclave(b"dump") or b"{}")
    return counts


# -- the harness, one move at a time ---------------------------------------------------------


@pytest.fixture
def hostile() -> Iterator[HostileHost]:
    with HostileHost(Ledger) as running:
        yield running


def test_an_honest_round_trip_is_recorded(hostile: HostileHost) -> None:
    client, transport = _client(hostile)
    reply = client.send_mail(b"t1", topic=TOPIC)
    assert reply is not None
    assert reply.body == b"ans:t1"
    assert _counts(hostile) == {"t1": 1}
    assert [d.error for d in hostile.deliveries] == [None]
    assert hostile.deliveries[0].mail == transport.sent[0]
    assert transport.followed == [DeliveryPlan.HONEST]
    assert len(hostile.sealed_states) == 1
    assert hostile.state_parents == [None]
    assert hostile.head == 0
    assert [post.state for post in hostile.posts] == [0]
    assert hostile.queued(client.correlation_id)[0].post == 0  # not acknowledged yet
    client.send_mail(b"t2", topic=TOPIC)
    assert hostile.acknowledgements[client.correlation_id] == [hostile.posts[0].mail_id]
    assert hostile.state_parents == [None, 0]


def test_a_dropped_mail_makes_the_next_one_gap(hostile: HostileHost) -> None:
    client, transport = _client(hostile)
    transport.schedule(DeliveryPlan.DROP)
    assert client.send_mail(b"t1", topic=TOPIC) is None
    assert hostile.deliveries == []
    with pytest.raises(MailSequenceError):
        client.send_mail(b"t2", topic=TOPIC)
    assert _counts(hostile) == {}


def test_a_held_mail_is_delivered_late(hostile: HostileHost) -> None:
    client, transport = _client(hostile)
    transport.schedule(DeliveryPlan.HOLD)
    assert client.send_mail(b"t1", topic=TOPIC) is None
    assert len(hostile.held) == 1
    assert hostile.release() is None
    assert _counts(hostile) == {"t1": 1}
    late = client.poll_mail()
    assert late is not None
    assert late.body == b"ans:t1"


def test_a_duplicate_delivery_is_refused_by_the_enclave(hostile: HostileHost) -> None:
    client, transport = _client(hostile)
    transport.schedule(DeliveryPlan.DUPLICATE)
    reply = client.send_mail(b"t1", topic=TOPIC)
    assert reply is not None
    assert reply.body == b"ans:t1"
    assert isinstance(hostile.deliveries[1].error, MailReplayError)
    hostile.replay(0)
    assert isinstance(hostile.deliveries[2].error, MailReplayError)
    assert _counts(hostile) == {"t1": 1}


def test_restart_then_lie_does_not_apply_twice(hostile: HostileHost) -> None:
    """Issue 9, observation 1, played by the harness."""
    client, transport = _client(hostile)
    for token in (b"a", b"b", b"c"):
        transport.schedule(DeliveryPlan.RESTART_THEN_LIE)
        reply = client.send_mail(token, topic=TOPIC)
        assert reply is not None
        assert reply.body == b"ans:" + token
    assert hostile.instance == 3
    assert _counts(hostile) == {"a": 1, "b": 1, "c": 1}
    assert client.poll_mail() is None  # the re-sent answers are dropped


def test_a_lie_after_delivering_keeps_the_answer_for_poll(hostile: HostileHost) -> None:
    client, transport = _client(hostile)
    transport.schedule(DeliveryPlan.LIE_AFTER)
    with pytest.raises(MailDecryptionError):
        client.send_mail(b"t1", topic=TOPIC)
    late = client.poll_mail()
    assert late is not None
    assert late.body == b"ans:t1"
    reply = client.send_mail(b"t2", topic=TOPIC)
    assert reply is not None
    assert reply.body == b"ans:t2"


@pytest.mark.parametrize(
    ("plan", "error"),
    [
        (DeliveryPlan.REFUSE, MailRefusedError),
        (DeliveryPlan.BREAK_BEFORE, TransportError),
        (DeliveryPlan.BREAK_AFTER, TransportError),
        (DeliveryPlan.REFUSE_AFTER, MailRefusedError),
        (DeliveryPlan.LIE_BEFORE, MailDecryptionError),
    ],
)
def test_transport_lies(
    hostile: HostileHost, plan: DeliveryPlan, error: type[SanctorumError]
) -> None:
    client, transport = _client(hostile)
    transport.schedule(plan)
    with pytest.raises(error):
        client.send_mail(b"t1", topic=TOPIC)
    delivered = plan in (DeliveryPlan.BREAK_AFTER, DeliveryPlan.REFUSE_AFTER)
    assert _counts(hostile) == ({"t1": 1} if delivered else {})


def test_hidden_reply_waits_for_poll(hostile: HostileHost) -> None:
    client, transport = _client(hostile)
    transport.schedule(DeliveryPlan.HIDE_REPLY)
    assert client.send_mail(b"t1", topic=TOPIC) is None
    late = client.poll_mail()
    assert late is not None
    assert late.body == b"ans:t1"


def test_restart_from_an_older_state_is_a_rollback(hostile: HostileHost) -> None:
    client, _ = _client(hostile)
    client.send_mail(b"t1", topic=TOPIC)
    client.send_mail(b"t2", topic=TOPIC)
    assert hostile.restart(0, fresh_host=True) == 0
    assert hostile.restarts[-1].rollback
    assert hostile.head == 0
    assert _counts(hostile) == {"t1": 1}
    with pytest.raises(EnclaveRollbackError):
        client.send_mail(b"t3", topic=TOPIC)
    hostile.restart(None)
    assert _counts(hostile) == {}
    assert hostile.state_parents == [None, 0, 0]  # t3 was applied on top of state 0
    hostile.restart(1)
    assert _counts(hostile) == {"t1": 1, "t2": 1}
    hostile.restart(2)
    assert _counts(hostile) == {"t1": 1, "t3": 1}
    hostile.restart(LATEST)
    assert hostile.restarts[-1] == Restart(2, rollback=False, fresh_host=False)


def test_queued_mail_can_be_dropped_duplicated_moved_and_injected(hostile: HostileHost) -> None:
    client, transport = _client(hostile)
    hint = client.correlation_id
    for token in (b"t1", b"t2", b"t3"):
        transport.schedule(DeliveryPlan.HIDE_REPLY)
        client.send_mail(token, topic=TOPIC)
    ids = [mail.mail_id for mail in hostile.queued(hint)]
    assert len(ids) == 3
    copy = hostile.duplicate_queued(hint, 0)
    assert [m.mail_id for m in hostile.queued(hint)] == [ids[0], copy.mail_id, *ids[1:]]
    hostile.move_queued(hint, 3, 0)
    assert hostile.queued(hint)[0].mail_id == ids[2]
    dropped = hostile.drop_queued(hint, 0)
    assert dropped.mail_id == ids[2]
    injected = hostile.inject(hint, hostile.posts[0])
    assert injected.post == 0
    assert hostile.mail_by_id(injected.mail_id).mail == hostile.posts[0].mail
    bodies = []
    while (mail := client.poll_mail()) is not None:
        bodies.append(mail.body)
    assert bodies == [b"ans:t1", b"ans:t2"]  # the copies are replays; t3's answer was dropped
    # Acknowledgements are honoured only while the mail they name is queued.
    hostile.inject(hint, b"made up")
    hostile.acknowledge(hint, 10**9)
    assert len(hostile.queued(hint)) == 1


def test_host_callbacks_answer_what_the_host_likes(hostile: HostileHost) -> None:
    assert hostile.call_enclave(b"note", hostile.callback(b"anything")) == b"anything"
    assert hostile.call_enclave(b"note", hostile.callback(None)) == b""
    with pytest.raises(EnclaveCallError):
        hostile.call_enclave(b"note", hostile.callback(ValueError("no")))
    answers = hostile.callback(b"one", b"two")
    assert [answers(b""), answers(b""), answers(b"")] == [b"one", b"two", b"two"]
    states = len(hostile.sealed_states)
    with pytest.raises(EnclaveCallError):
        hostile.call_enclave(b"note", hostile.callback(b"fail"))
    assert len(hostile.sealed_states) == states  # nothing committed


def test_a_nested_delivery_in_a_failing_call_applies_nothing(hostile: HostileHost) -> None:
    client, transport = _client(hostile)
    transport.schedule(DeliveryPlan.HOLD)
    client.send_mail(b"t1", topic=TOPIC)

    def release(request: bytes) -> bytes:
        assert hostile.release() is None
        return b"fail"

    with pytest.raises(EnclaveCallError):
        hostile.call_enclave(b"note", hostile.callback(release))
    assert hostile.deliveries[-1].nested
    assert _counts(hostile) == {}
    assert hostile.queued(client.correlation_id) == []


def test_push_reaches_clients_after_a_restart(hostile: HostileHost) -> None:
    client, _ = _client(hostile)
    client.send_mail(b"t1", topic=TOPIC)
    hostile.restart()
    assert hostile.call_enclave(b"push 1") == b"1"
    pushed = client.poll_mail()
    assert pushed is not None
    assert (pushed.body, pushed.topic) == (b"push:1", "push")


def test_a_held_mail_can_be_misrouted(hostile: HostileHost) -> None:
    client, transport = _client(hostile)
    other, _ = _client(hostile)
    transport.schedule(DeliveryPlan.HOLD)
    client.send_mail(b"t1", topic=TOPIC)
    assert hostile.release(routing_hint=other.correlation_id) is None
    assert hostile.posts[-1].routing_hint == other.correlation_id
    assert other.poll_mail() is None  # not for its key: dropped
    assert client.poll_mail() is None  # never reached it


def test_old_attestations_are_served_unless_withheld(hostile: HostileHost) -> None:
    first = hostile.host.enclave_instance_info
    hostile.restart()
    transport = HostileTransport(hostile)
    assert transport.get_attestation(first.encryption_key) == first.serialize()
    assert transport.get_attestation() == hostile.instance_infos[1].serialize()
    hostile.serve_old_attestations = False
    with pytest.raises(TransportError):
        transport.get_attestation(first.encryption_key)


def test_hostile_host_in_simulation(ledger_bundle: Path) -> None:
    with HostileHost(ledger_bundle, "simulation") as hostile:
        client, transport = _client(hostile)
        transport.schedule(DeliveryPlan.RESTART_THEN_LIE)
        reply = client.send_mail(b"t1", topic=TOPIC)
        assert reply is not None
        assert reply.body == b"ans:t1"
        hostile.restart(None)
        with pytest.raises(EnclaveRollbackError):
            client.send_mail(b"t2", topic=TOPIC)


# -- what the state machine found (each test failed when it was written) --------------------


@pytest.mark.parametrize("adopt_new_instance", ["restore", "send on another topic"])
def test_a_mail_in_doubt_reaches_a_restarted_enclave(
    hostile: HostileHost, adopt_new_instance: str
) -> None:
    """A request of unknown fate, sealed to an instance that has since been replaced, is
    resealed to the new one when the client already adopted it (by a restore, or by talking to
    it on another topic), not refused as if the host lied."""
    client, transport = _client(hostile)
    transport.schedule(DeliveryPlan.BREAK_BEFORE)
    with pytest.raises(TransportError):
        client.send_mail(b"a", topic=TOPIC)
    hostile.restart()  # honest: from the latest state
    if adopt_new_instance == "restore":
        client = EnclaveClient.restore(client.save())
        client.start(HostileTransport(hostile))
    else:
        client.send_mail(b"z", topic="side")  # adopts the new instance
    reply = client.send_mail(b"b", topic=TOPIC)
    assert reply is not None
    assert reply.body == b"ans:b"
    assert _counts(hostile).get("a") == 1


def test_a_refused_resend_keeps_the_mail_in_doubt(hostile: HostileHost) -> None:
    """The host refusing the resend of a request of unknown fate (a 503, a refused
    connection) says the enclave did not see it: the request stays in doubt, and the topic
    does not fall out of step."""
    client, transport = _client(hostile)
    transport.schedule(DeliveryPlan.BREAK_BEFORE)
    with pytest.raises(TransportError):
        client.send_mail(b"a", topic=TOPIC)
    transport.schedule(DeliveryPlan.REFUSE)
    try:
        client.send_mail(b"b", topic=TOPIC)
    except MailRefusedError:
        in_doubt = client.in_doubt(TOPIC)
        assert in_doubt is not None
        assert in_doubt.body == b"a"
    reply = client.send_mail(b"c", topic=TOPIC)
    assert reply is not None
    assert reply.body == b"ans:c"
    counts = _counts(hostile)
    assert (counts.get("a"), counts.get("c")) == (1, 1)


# -- the state machine -----------------------------------------------------------------------

PARTIES = 3

# What a send may end in, by the plan its first delivery follows. That is the new request's
# delivery, unless the client first delivers again a request of unknown fate (after a
# TransportError): then the plan hits that one and the new request is delivered honestly.
_ANSWERED = {DeliveryPlan.HONEST, DeliveryPlan.DUPLICATE, DeliveryPlan.RESTART_THEN_LIE}
_UNANSWERED = {DeliveryPlan.DROP, DeliveryPlan.HOLD}
_ERRORS: dict[DeliveryPlan, type[SanctorumError]] = {
    DeliveryPlan.LIE_BEFORE: MailDecryptionError,
    DeliveryPlan.LIE_AFTER: MailDecryptionError,
    DeliveryPlan.REFUSE: MailRefusedError,
    DeliveryPlan.REFUSE_AFTER: MailRefusedError,
    DeliveryPlan.BREAK_BEFORE: TransportError,
    DeliveryPlan.BREAK_AFTER: TransportError,
}
_MUST_FAIL = {DeliveryPlan.REFUSE, DeliveryPlan.BREAK_BEFORE}
# Plans under which the host either delivers the mail or honestly says it did not.
_TRUTHFUL = {
    DeliveryPlan.HONEST,
    DeliveryPlan.DUPLICATE,
    DeliveryPlan.HIDE_REPLY,
    DeliveryPlan.LIE_AFTER,
    DeliveryPlan.RESTART_THEN_LIE,
    DeliveryPlan.REFUSE,
    DeliveryPlan.REFUSE_AFTER,
    DeliveryPlan.BREAK_AFTER,
    DeliveryPlan.BREAK_BEFORE,
}
# After these, the client's sequence numbers and the enclave's may be out of step (a number
# spent on a mail the enclave never saw, or one the enclave saw and the client took back), so
# the client's next mails on the topic may meet gap or replay errors until the enclave
# restarts; unless the client still holds the mail in doubt, to deliver it again.
_GAPS_ALWAYS = {DeliveryPlan.DROP, DeliveryPlan.HOLD}
_GAPS_ON_ERROR = {DeliveryPlan.LIE_BEFORE, DeliveryPlan.REFUSE_AFTER}


@dataclass
class Party:
    """One client lineage: the client object changes at each save and restore."""

    name: str
    client: EnclaveClient
    transport: HostileTransport
    key: Curve25519PrivateKey
    hint: str
    tokens: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)  # answers handed to the user
    pushes: set[str] = field(default_factory=set)  # pushes handed to the user
    retired: str | None = None  # why the test stopped using it
    gapped: set[str] = field(default_factory=set)  # topics the host put out of step
    tainted: bool = False  # the host dropped or reordered mail queued for it
    heard: bytes | None = None  # the last commit it heard of
    sends: int = 0
    rollbacks_before: int = 0  # rollbacks the host made before this client existed


@dataclass(frozen=True)
class Opened:
    """What the oracle read in a posted mail."""

    party: Party
    body: bytes
    header: ConversationHeader


class LedgerMachine(RuleBasedStateMachine):
    """Clients of the ledger enclave, and a hostile host between them."""

    source: type[Ledger] | Path = Ledger
    mode: str | None = None
    final_checks = 0  # runs whose teardown drained every client and checked it

    def __init__(self) -> None:
        super().__init__()
        self.hostile = HostileHost(self.source, self.mode)
        self.parties: list[Party] = []
        self.by_hint: dict[str, Party] = {}
        self.owner: dict[str, Party] = {}  # token → the party that sent it
        self.topic_of: dict[str, str] = {}  # token → the topic it was sent on
        self.commit_nodes: dict[bytes, int] = {}  # commit id → index of its sealed state
        self.applied: dict[str, set[int]] = {}  # token → sealed states that applied it
        self.pushed: dict[str, set[str]] = {}  # push id → parties it was mailed to
        self.opened: dict[int, Opened | None] = {}  # post index → what the oracle read
        self.transports: list[tuple[HostileTransport, Party]] = []  # every one, and its party
        self.rollbacks = 0
        self.restarts_seen = 0
        self.pushes = 0
        self.names = itertools.count()

    # -- set-up and bookkeeping --------------------------------------------------------------

    @initialize()
    def make_parties(self) -> None:
        for _ in range(PARTIES):
            self.parties.append(self._new_party())

    def _new_party(self) -> Party:
        self._learn()
        client, transport = _client(self.hostile)
        party = Party(
            f"p{next(self.names)}", client, transport, client.private_key, client.correlation_id
        )
        party.rollbacks_before = self.rollbacks
        self.transports.append((transport, party))
        self.by_hint[party.hint] = party
        return party

    def _party(self, index: int) -> Party | None:
        party = self.parties[index % len(self.parties)]
        return None if party.retired else party

    def _learn(self) -> None:
        """Open every new posted mail with its addressee's key: which request it answers, which
        commit it belongs to."""
        hostile = self.hostile
        for post in hostile.posts[len(self.opened) :]:
            addressee = self.by_hint.get(post.routing_hint or "")
            candidates = [addressee] if addressee else []
            candidates += [p for p in self.by_hint.values() if p is not addressee]
            for party in candidates:  # misrouted mail is for another party than the hint's
                try:
                    mail = open_mail(party.key, post.mail)
                except MailDecryptionError:
                    continue
                break
            else:
                raise AssertionError(f"the enclave posted mail {post.index} to nobody we know")
            header = ConversationHeader.decode(mail.private_header)
            self.opened[post.index] = Opened(party, mail.body, header)
            commit = header.commit_id
            assert commit is not None, "a mail from an enclave with a persistent map has no commit"
            new = commit not in self.commit_nodes
            if new:
                assert post.state is not None, "a mail of a new commit came without its state"
                self.commit_nodes[commit] = post.state
            if mail.body.startswith(b"ans:"):
                token = mail.body[4:].decode()
                assert header.answers is not None, "an answer does not name its request"
                if new:
                    self.applied.setdefault(token, set()).add(self.commit_nodes[commit])
            elif mail.body.startswith(b"push:"):
                assert header.answers is None
                self.pushed.setdefault(mail.body[5:].decode(), set()).add(party.name)
            else:
                raise AssertionError(f"the enclave posted {mail.body!r}")
        # A restart puts every client's sequence numbers in step with the new instance.
        if len(hostile.restarts) > self.restarts_seen:
            for restart in hostile.restarts[self.restarts_seen :]:
                self.rollbacks += restart.rollback
            self.restarts_seen = len(hostile.restarts)
            for party in self.parties:
                party.gapped.clear()

    def _lineage(self, state: int | None) -> set[int]:
        """``state`` and every state it grew from."""
        found = set()
        while state is not None:
            found.add(state)
            state = self.hostile.state_parents[state]
        return found

    def _retire(self, party: Party, where: str) -> None:
        """The party got EnclaveRollbackError: legitimate only after a rollback, or after the
        host dropped or reordered mail queued for it (docs/decisions.md, "Limits")."""
        self._learn()
        assert self.rollbacks > party.rollbacks_before or party.tainted, (
            f"{party.name} got EnclaveRollbackError ({where}) although the host never rolled "
            "the enclave back nor dropped or reordered its mail"
        )
        event(f"rollback detected ({where})")
        self._replace(party, f"rollback detected ({where})")

    def _replace(self, party: Party, why: str) -> None:
        """Stop using ``party`` (it is right for it to keep failing); a new client takes its
        place."""
        party.retired = why
        self.parties[self.parties.index(party)] = self._new_party()

    def _hand_out(self, party: Party, mail: EnclaveMail, token: str | None = None) -> None:
        """``mail`` reached the party's user (``token``: as the answer to that request)."""
        self._learn()
        body = mail.body
        if body.startswith(b"ans:"):
            answered = body[4:].decode()
            assert answered in party.tokens, (
                f"{party.name} accepted the answer to {answered}, a request of "
                f"{self.owner[answered].name if answered in self.owner else 'nobody'}"
            )
            assert token is None or answered == token, (
                f"send_mail({token}) returned the answer to {answered}"
            )
            assert answered not in party.answered, f"the answer to {answered} was handed out twice"
            assert self.applied.get(answered), f"{answered} was answered but never applied"
            assert mail.topic == self.topic_of[answered], f"the answer came on {mail.topic}"
            party.answered.add(answered)
        elif body.startswith(b"push:"):
            assert token is None, f"send_mail({token}) returned a push"
            push = body[5:].decode()
            assert party.name in self.pushed.get(push, set()), f"push {push} was not for it"
            assert push not in party.pushes, f"push {push} was handed out twice"
            party.pushes.add(push)
        else:
            raise AssertionError(f"{party.name} accepted {body!r}")

    # -- clients -----------------------------------------------------------------------------

    def _send(self, party: Party, plan: DeliveryPlan, topic: str, *, reject: bool = False) -> None:
        token = f"{'reject' if reject else 'tok'}-{party.name}-{party.sends}"
        party.sends += 1
        party.tokens.add(token)
        self.owner[token] = party
        self.topic_of[token] = topic
        gapped = topic in party.gapped
        in_doubt = party.client.in_doubt(topic)
        doubt = in_doubt is not None
        party.transport.schedule(plan)
        failure: SanctorumError | None = None
        reply: EnclaveMail | None = None
        try:
            reply = party.client.send_mail(token.encode(), topic=topic)
        except (EnclaveRollbackError, MailSequenceError, EnclaveCallError) as error:
            failure = error
        except (MailDecryptionError, TransportError, UnattestedSenderError) as error:
            failure = error
        finally:
            party.transport.plans.clear()
        if in_doubt is not None:
            self._check_settled(party, in_doubt.body.decode(), topic, plan, failure, gapped=gapped)
        if failure is not None:
            self._send_failed(
                party, plan, topic, failure, gapped=gapped, doubt=doubt, reject=reject
            )
            return
        if plan in _GAPS_ALWAYS:
            party.gapped.add(topic)
        assert not reject, "a rejected request was answered"
        assert doubt or plan not in _MUST_FAIL, f"{plan.value} did not fail"
        if reply is None:
            event(f"send {plan.value}: no answer")
            assert gapped or not (doubt or plan in _ANSWERED), (
                f"send_mail({token}) returned None although the host delivered it honestly"
            )
        else:
            assert doubt or plan not in _UNANSWERED, f"{token} was answered, never delivered"
            self._hand_out(party, reply, token)
            event(f"send {plan.value}: answered")
        if plan is DeliveryPlan.HONEST and not gapped:
            assert _counts(self.hostile).get(token) == 1, f"{token} was not applied once"

    def _check_settled(
        self,
        party: Party,
        doubtful: str,
        topic: str,
        plan: DeliveryPlan,
        failure: SanctorumError | None,
        *,
        gapped: bool,
    ) -> None:
        """``doubtful`` was in doubt (its delivery's outcome unknown: a TransportError, or a
        MAIL_DECRYPTION the client did not believe) when the send began, so the send first
        delivered it again, and ``plan`` hit that delivery. If the client no longer holds it,
        the enclave must have had it, unless the host lied about that delivery or had put the
        topic out of step before."""
        after = party.client.in_doubt(topic)
        if after is not None and after.body.decode() == doubtful:
            return  # still in doubt: it will be delivered again
        self._learn()
        if gapped or doubtful.startswith("reject") or plan not in _TRUTHFUL:
            return
        assert self.applied.get(doubtful), (
            f"{party.name} stopped holding {doubtful} (in doubt: its delivery's outcome was "
            f"unknown) after delivering it again ({plan.value}, ending in {failure!r}), but "
            "the enclave never applied it: the request is lost"
        )

    def _send_failed(
        self,
        party: Party,
        plan: DeliveryPlan,
        topic: str,
        error: SanctorumError,
        *,
        gapped: bool,
        doubt: bool,
        reject: bool,
    ) -> None:
        """``error`` ended a send under ``plan``: it must be one the plan explains."""
        name = type(error).__name__
        if isinstance(error, EnclaveRollbackError):
            self._retire(party, "send")
        elif isinstance(error, UnattestedSenderError):
            self._wedged(party, "send")
        elif isinstance(error, MailSequenceError):
            assert gapped or (doubt and plan in _GAPS_ALWAYS | _GAPS_ON_ERROR), (
                f"{name} although the host kept {party.name} in step: {error}"
            )
            event(f"send {plan.value}: {name} (out of step)")
            party.gapped.add(topic)
        elif isinstance(error, EnclaveCallError):
            assert reject, f"EnclaveCallError for a request the enclave accepts: {error}"
            event("send: rejected by the enclave")
        else:
            assert type(error) is _ERRORS.get(plan), (
                f"{name} from a send whose first delivery was {plan.value}: {error}"
            )
            event(f"send {plan.value}: {name}")
            if plan in _GAPS_ALWAYS | _GAPS_ON_ERROR and party.client.in_doubt(topic) is None:
                party.gapped.add(topic)  # (a mail still in doubt is delivered again: no gap)

    def _wedged(self, party: Party, where: str) -> None:
        """The party got UnattestedSenderError: the mail at the head of its queue comes from an
        instance it cannot verify. Legitimate only while the host withholds the attestations of
        instances it replaced, or if it made that mail up; an honest host's queue must never
        block a client."""
        queued = self.hostile.queued(party.hint)
        assert queued, f"UnattestedSenderError ({where}) with nothing queued"
        head = queued[0]
        honest = head.post is not None and self.hostile.posts[head.post].mail_id == head.mail_id
        assert not honest or not self.hostile.serve_old_attestations, (
            f"{party.name} is wedged ({where}): mail {head.mail_id} that instance "
            f"{self.hostile.posts[head.post].instance if head.post is not None else '?'} posted "
            f"to it raises UnattestedSenderError (the host now runs instance "
            f"{self.hostile.instance} and serves the old attestations)"
        )
        event(f"UnattestedSenderError ({where})")
        self._replace(party, f"wedged ({where})")

    @rule(index=st.integers(0, PARTIES - 1), topic=st.sampled_from(TOPICS))
    def send(self, index: int, topic: str) -> None:
        party = self._party(index)
        if party is not None:
            self._send(party, DeliveryPlan.HONEST, topic)

    @rule(
        index=st.integers(0, PARTIES - 1),
        plan=st.sampled_from([plan for plan in DeliveryPlan if plan is not DeliveryPlan.HONEST]),
        topic=st.sampled_from(TOPICS),
    )
    def send_attacked(self, index: int, plan: DeliveryPlan, topic: str) -> None:
        party = self._party(index)
        if party is not None:
            self._send(party, plan, topic)

    @rule(
        index=st.integers(0, PARTIES - 1),
        plan=st.sampled_from(
            [DeliveryPlan.LIE_BEFORE, DeliveryPlan.LIE_AFTER, DeliveryPlan.RESTART_THEN_LIE]
        ),
        topic=st.sampled_from(TOPICS),
    )
    def send_lied_to(self, index: int, plan: DeliveryPlan, topic: str) -> None:
        """The MAIL_DECRYPTION lies, more often than the other attacks."""
        party = self._party(index)
        if party is not None:
            self._send(party, plan, topic)

    @rule(index=st.integers(0, PARTIES - 1), topic=st.sampled_from(TOPICS))
    def send_rejected(self, index: int, topic: str) -> None:
        party = self._party(index)
        if party is not None:
            self._send(party, DeliveryPlan.HONEST, topic, reject=True)

    @rule(index=st.integers(0, PARTIES - 1))
    def poll(self, index: int) -> None:
        party = self._party(index)
        if party is None:
            return
        try:
            mail = party.client.poll_mail()
        except EnclaveRollbackError:
            self._retire(party, "poll")
            return
        except UnattestedSenderError:
            self._wedged(party, "poll")
            return
        if mail is not None:
            self._hand_out(party, mail)
        event(f"poll: {'mail' if mail else 'nothing'}")

    @rule(index=st.integers(0, PARTIES - 1))
    def save_and_restore(self, index: int) -> None:
        party = self._party(index)
        if party is None:
            return
        client = EnclaveClient.restore(party.client.save())
        transport = HostileTransport(self.hostile)
        client.start(transport)
        assert client.correlation_id == party.hint
        party.client, party.transport = client, transport
        self.transports.append((transport, party))

    # -- the host's tricks with client mail ----------------------------------------------------

    def _gap_owner(self, mail: bytes) -> None:
        """A late delivery consumed a sequence number its client may have taken back."""
        for transport, party in self.transports:
            if mail in transport.sent:
                party.gapped.update(TOPICS)
                return

    @rule(pick=st.integers(0, 1000))
    def release_held(self, pick: int) -> None:
        if not self.hostile.held:
            return
        held = self.hostile.held[pick % len(self.hostile.held)]
        error = self.hostile.release(pick % len(self.hostile.held))
        event(f"release held: {type(error).__name__ if error else 'delivered'}")
        if error is None:
            self._gap_owner(held.mail)

    @rule(pick=st.integers(0, 1000), index=st.integers(0, PARTIES - 1))
    def release_held_misrouted(self, pick: int, index: int) -> None:
        """Deliver a held mail late, with another client's routing hint: its answer goes to a
        queue where nobody can open it."""
        if not self.hostile.held:
            return
        held = self.hostile.held[pick % len(self.hostile.held)]
        hint = self.parties[index % len(self.parties)].hint
        error = self.hostile.release(pick % len(self.hostile.held), routing_hint=hint)
        event(f"release misrouted: {type(error).__name__ if error else 'delivered'}")
        if error is None:
            self._gap_owner(held.mail)
            owner = self.by_hint.get(held.routing_hint or "")
            if owner is not None and owner.hint != hint:
                owner.tainted = True  # its answer went elsewhere: for it, a dropped mail

    @rule(
        index=st.integers(0, PARTIES - 1), data=st.binary(max_size=64), flip=st.integers(0, 10**6)
    )
    def forge_for_client(self, index: int, data: bytes, flip: int) -> None:
        """Queue made-up bytes, or a posted mail with one bit flipped, for a client."""
        party = self.parties[index % len(self.parties)]
        if self.hostile.posts and flip % 2:
            mail = bytearray(self.hostile.posts[flip % len(self.hostile.posts)].mail)
            mail[flip % len(mail)] ^= 1 << (flip % 8)
            data = bytes(mail)
        self.hostile.inject(party.hint, data)

    @rule(pick=st.integers(0, 1000))
    def replay_delivery(self, pick: int) -> None:
        deliveries = self.hostile.deliveries
        if not deliveries:
            return
        delivery = deliveries[pick % len(deliveries)]
        self.hostile.replay(delivery.index)
        error = self.hostile.deliveries[-1].error
        event(f"replay: {type(error).__name__ if error else 'delivered'}")
        if error is None:
            self._gap_owner(delivery.mail)

    @rule(
        answer=st.one_of(
            st.binary(max_size=6),
            st.none(),
            st.sampled_from(["raise", "fail", "nested release", "nested replay"]),
        ),
        fail=st.booleans(),
        pick=st.integers(0, 1000),
    )
    def host_call(self, answer: bytes | str | None, fail: bool, pick: int) -> None:
        """``note``: the host answers the enclave's callback as it likes, even by delivering
        mail from inside it (nested)."""
        hostile = self.hostile
        nested: list[bytes] = []

        def callback(request: bytes) -> bytes | None:
            if answer == "raise":
                raise ValueError("the host will not say")
            if answer == "fail":
                return b"fail"
            if answer == "nested release" and hostile.held:
                index = pick % len(hostile.held)
                mail = hostile.held[index].mail
                if hostile.release(index) is None:
                    nested.append(mail)
            elif answer == "nested replay" and hostile.deliveries:
                delivery = hostile.deliveries[pick % len(hostile.deliveries)]
                hostile.replay(delivery.index)
                if hostile.deliveries[-1].error is None:
                    nested.append(delivery.mail)
            if isinstance(answer, str):
                return b"fail" if fail else b"ok"
            return answer

        fails = (
            answer in ("raise", "fail")
            or (isinstance(answer, str) and fail)
            or (isinstance(answer, bytes) and answer.startswith(b"fail"))
        )
        try:
            result = hostile.call_enclave(b"note", callback)
        except EnclaveCallError:
            assert fails, "the note call failed"
            event("host call: failed")
        else:
            assert not fails, "the note call should have failed"
            assert result == (answer if isinstance(answer, bytes) else b"ok" if answer else b"")
            event("host call: ok")
        for mail in nested:
            self._gap_owner(mail)

    @rule(withhold=st.booleans())
    def withhold_old_attestations(self, withhold: bool) -> None:
        """Whether the host refuses the attestations of instances it replaced (clients cannot
        check the mail those queued; they may stay blocked, which is denial of service)."""
        self.hostile.serve_old_attestations = not withhold

    @rule()
    def push(self) -> None:
        self.pushes += 1
        self.hostile.call_enclave(f"push {self.pushes}".encode())

    # -- the host's tricks with the enclave ----------------------------------------------------

    @rule(fresh_host=st.booleans())
    def restart_latest(self, fresh_host: bool) -> None:
        self.hostile.restart(LATEST, fresh_host=fresh_host)

    @rule(pick=st.integers(0, 1000), fresh_host=st.booleans())
    def restart_older(self, pick: int, fresh_host: bool) -> None:
        """A rollback: restart from any state the host has seen, or from none."""
        options: list[int | None] = [None, *range(len(self.hostile.sealed_states))]
        state = options[pick % len(options)]
        self.hostile.restart(state, fresh_host=fresh_host)
        event(f"restart: {'rollback' if self.hostile.restarts[-1].rollback else 'latest'}")

    # -- the host's tricks with mail for clients -----------------------------------------------

    @rule(index=st.integers(0, PARTIES - 1), position=st.integers(0, 100))
    def drop_reply(self, index: int, position: int) -> None:
        party = self.parties[index % len(self.parties)]
        queued = self.hostile.queued(party.hint)
        if queued:
            self.hostile.drop_queued(party.hint, position % len(queued))
            party.tainted = True

    @rule(index=st.integers(0, PARTIES - 1), position=st.integers(0, 100))
    def duplicate_reply(self, index: int, position: int) -> None:
        party = self.parties[index % len(self.parties)]
        queued = self.hostile.queued(party.hint)
        if queued:
            self.hostile.duplicate_queued(party.hint, position % len(queued))

    @rule(index=st.integers(0, PARTIES - 1), source=st.integers(0, 100), to=st.integers(0, 100))
    def reorder_replies(self, index: int, source: int, to: int) -> None:
        party = self.parties[index % len(self.parties)]
        queued = self.hostile.queued(party.hint)
        if len(queued) > 1 and source % len(queued) != to % len(queued):
            self.hostile.move_queued(party.hint, source % len(queued), to % len(queued))
            party.tainted = True

    @rule(index=st.integers(0, PARTIES - 1), pick=st.integers(0, 1000))
    def replay_to_client(self, index: int, pick: int) -> None:
        """Queue again any mail the enclave ever posted (perhaps to another client)."""
        party = self.parties[index % len(self.parties)]
        if self.hostile.posts:
            self.hostile.inject(party.hint, self.hostile.posts[pick % len(self.hostile.posts)])

    @rule()
    def drain(self) -> None:
        self._drain_and_check()

    # -- after every step ----------------------------------------------------------------------

    @invariant()
    def requests_are_applied_at_most_once_and_as_the_lineage_says(self) -> None:
        self._learn()
        counts = _counts(self.hostile)
        lineage = self._lineage(self.hostile.head)
        for token, count in counts.items():
            assert count <= 1, f"{token} was applied {count} times"
        for token in self.owner:
            expected = len(self.applied.get(token, set()) & lineage)
            assert counts.get(token, 0) == expected, (
                f"{token} is applied {counts.get(token, 0)} times; the commits on the live "
                f"lineage applied it {expected} times"
            )

    @invariant()
    def each_client_sees_one_lineage(self) -> None:
        self._learn()
        for party in self.parties:
            if party.retired:
                continue
            heard = party.client._last_commit
            if heard == party.heard:
                continue
            assert heard is not None, f"{party.name} forgot the last commit it heard of"
            assert heard in self.commit_nodes, f"{party.name} heard of a commit never posted"
            if party.heard is not None:
                before = self.commit_nodes[party.heard]
                assert before in self._lineage(self.commit_nodes[heard]), (
                    f"{party.name} accepted mail from state {self.commit_nodes[heard]}, which "
                    f"did not grow from state {before} it had heard of: an undetected rollback"
                )
            party.heard = heard

    def _drain_and_check(self) -> None:
        """With an honest host, every live client polls until nothing is left; then every mail
        it acknowledged that was meant for its user must have reached the user."""
        self.hostile.serve_old_attestations = True
        for party in list(self.parties):
            if party.retired:
                continue
            for _ in range(1000):
                try:
                    mail = party.client.poll_mail()
                except EnclaveRollbackError:
                    self._retire(party, "drain")
                    break
                except UnattestedSenderError:
                    self._wedged(party, "drain")
                    break
                if mail is None:
                    break
                self._hand_out(party, mail)
            else:
                raise AssertionError(f"{party.name} never stops receiving mail")
            if party.retired:
                continue
            opened = set(self.hostile.acknowledgements.get(party.hint, []))
            if party.client.acknowledged is not None:
                opened.add(party.client.acknowledged)
            for mail_id in opened:
                queued = self.hostile.mail_by_id(mail_id)
                seen = None if queued.post is None else self.opened.get(queued.post)
                if seen is None or seen.party is not party:
                    continue
                if seen.body.startswith(b"ans:"):
                    token = seen.body[4:].decode()
                    assert token in party.answered, (
                        f"{party.name} opened the answer to {token} but its user never got it"
                    )
                else:
                    push = seen.body[5:].decode()
                    assert push in party.pushes, (
                        f"{party.name} opened push {push} but its user never got it"
                    )

    def teardown(self) -> None:
        try:
            if sys.exc_info()[1] is None:  # only after a run that passed
                self._drain_and_check()
                self.requests_are_applied_at_most_once_and_as_the_lineage_says()
                self.each_client_sees_one_lineage()
                type(self).final_checks += 1
        finally:
            self.hostile.close()


_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def _run(machine: type[LedgerMachine], examples: int, steps: int) -> None:
    machine.final_checks = 0
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=_HEALTH,
        ),
    )
    assert machine.final_checks > 0


def _machine(enclave: type[Ledger] | Path, enclave_mode: str | None) -> type[LedgerMachine]:
    class Machine(LedgerMachine):
        source = enclave
        mode = enclave_mode

    Machine.__name__ = Machine.__qualname__ = f"LedgerMachine_{enclave_mode or 'mock'}"
    return Machine


# The CI runs take about 10 s in mock and 20 s in simulation on a 2-core machine (a restart in
# simulation starts a process: about 0.2 s); `pytest -m slow` runs the long ones.


@pytest.mark.timeout(600)  # shrinking a failure can take minutes
def test_conversations_under_a_hostile_host_mock() -> None:
    _run(_machine(Ledger, None), examples=200, steps=100)


@pytest.mark.timeout(600)
def test_conversations_under_a_hostile_host_simulation(ledger_bundle: Path) -> None:
    _run(_machine(ledger_bundle, "simulation"), examples=50, steps=20)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_conversations_under_a_hostile_host_mock_long() -> None:
    _run(_machine(Ledger, None), examples=5000, steps=150)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_conversations_under_a_hostile_host_simulation_long(ledger_bundle: Path) -> None:
    _run(_machine(ledger_bundle, "simulation"), examples=500, steps=40)
