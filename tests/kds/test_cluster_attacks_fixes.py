"""Attacks on the fixes of the first hostile review of cluster mail (test_cluster_attacks.py):
a hostile host that drops, duplicates, reorders and replays mail, restarts instances from any
sealed state it saw, runs fresh instances and serves any attestation it has.

What the first fixes changed: a cluster client verifies a retired member again (its reply
numbers kept in ``_retired``, also through save/restore) and moves members it hears from to the
end; an unknown lineage is a new member, copies only update known lineages; the enclave makes
the lineage with the state's first commit and keeps a KDS mail key only once a mail opened with
it; fetch_cluster_key reads at most 4 MiB. The tests whose docstring says "fixed since this
review found it" were findings of this second pass (docs/decisions.md, "Cluster mail").

Each test asserts the secure behaviour: the error class, and that nothing changed."""

from __future__ import annotations

import gzip
import itertools
import json
import random
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sanctorum import (
    ClientStateError,
    EnclaveCallError,
    EnclaveClient,
    EnclaveHost,
    EnclaveMode,
    EnclaveRollbackError,
    InProcessTransport,
    KdsError,
    SanctorumError,
    TransportError,
    UnattestedSenderError,
)
from sanctorum.client.transport import ReceivedMail
from sanctorum.common.keys import Curve25519PrivateKey, Curve25519PublicKey
from sanctorum.host import KdsConfiguration
from sanctorum.host.kds import kds_fetcher
from sanctorum.kds.client import fetch_cluster_key
from sanctorum.kds.enclave import KdsEnclave
from sanctorum.mail.format import EnclaveMail
from sanctorum.mail.private_header import ConversationHeader
from tests.kds.test_cluster_attacks import (
    Members,
    _answer,
    _attacker_mail,
    _flood_with_fresh_members,
    _runtime,
)
from tests.kds.test_cluster_mail import _count
from tests.kds.test_kds_server import Kds

NOTIFY = """
from sanctorum import Enclave


class Notify(Enclave):
    \"\"\"Counts the mail it took and answers with the count. A request b"notify..." also gets
    a notice after its answer: mail the client did not ask for (answers nothing), told in the
    same commit. A request b"boom" changes the map, then raises.\"\"\"

    def receive_mail(self, mail, routing_hint):
        count = int(self.persistent_map.get("count", b"0")) + 1
        self.persistent_map["count"] = str(count).encode()
        if mail.body == b"boom":
            raise ValueError("boom")
        office = self.post_office(mail)
        suffix = b" #" + str(count).encode()
        self.post_mail(office.encrypt_mail(mail.body + suffix), routing_hint)
        if mail.body.startswith(b"notify"):
            self.post_mail(office.encrypt_mail(b"notice" + suffix), routing_hint)
"""

_LINEAGE_RECORD = b"L"  # the runtime's record of the state's lineage


@pytest.fixture(scope="module")
def kds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kds]:
    running = Kds(KdsEnclave, tmp_path_factory.mktemp("kds"), EnclaveMode.MOCK)
    yield running
    running.stop()


@pytest.fixture
def notify(kds: Kds, tmp_path: Path) -> Iterator[Members]:
    running = Members(kds, tmp_path / "notify", source=NOTIFY, entry="Notify")
    yield running
    running.close()


class Hostile(InProcessTransport):
    """The host of ``host`` as an attacker runs it: it records every mail it hands over, hands
    over any mail again (``replays``, before its mailbox's), and serves the attestation of any
    instance that ``host`` or ``others`` ever ran."""

    def __init__(self, host: EnclaveHost, *others: EnclaveHost) -> None:
        super().__init__(host)
        self.hosts = (host, *others)
        self.handed: list[bytes] = []
        self.replays: deque[bytes] = deque()
        self.asked_for: list[Curve25519PublicKey] = []
        self._ids = itertools.count(1 << 40)

    def get_attestation(self, instance: Curve25519PublicKey | None = None) -> bytes:
        if instance is None:
            return super().get_attestation()
        self.asked_for.append(instance)
        for host in self.hosts:
            info = host.instance_info_of(instance)
            if info is not None:
                return info.serialize()
        raise TransportError(f"no attestation for {instance}")

    def poll_mail(self, correlation_id: str, acknowledge: int | None) -> ReceivedMail | None:
        if self.replays:
            return ReceivedMail(next(self._ids), self.replays.popleft())
        received = super().poll_mail(correlation_id, acknowledge)
        if received is not None:
            self.handed.append(received.mail)
        return received


def _cluster_client(members: Members, transport: Hostile) -> EnclaveClient:
    client = EnclaveClient(members.policy, cluster=members.key)
    client.start(transport)
    return client


def _notified(client: EnclaveClient, transport: Hostile) -> list[bytes]:
    """A request b"notify": its answer and the notice after it, both taken (and acknowledged);
    returns the two mails as the host handed them over."""
    answer = client.send_mail(b"notify")
    assert answer is not None
    assert answer.body.startswith(b"notify #")
    notice = client.poll_mail()
    assert notice is not None
    assert notice.body.startswith(b"notice #")
    assert ConversationHeader.decode(notice.private_header).answers is None  # unsolicited
    assert client.poll_mail() is None  # acknowledges the notice
    return transport.handed[-2:]


def _answered_request(members: Members, client: EnclaveClient) -> bytes:
    """A request b"one" the first member applies and the client takes the answer of: the mail
    a hostile host then delivers to fresh instances, for copies."""
    outgoing = client.seal(b"one")
    members.hosts[0].deliver_mail(outgoing.mail, client.correlation_id)
    answer = client.poll_mail()
    assert answer is not None
    assert answer.body.startswith(b"one #")
    return outgoing.mail


def _drained(client: EnclaveClient) -> list[EnclaveMail]:
    """Everything the client takes from what its host hands over now."""
    taken = []
    while (mail := client.poll_mail()) is not None:
        taken.append(mail)
    return taken


def _retire_first_member(members: Members, client: EnclaveClient) -> None:
    """The client's next requests go each to a fresh instance of the second host, whose answers
    it takes (each such member joins its instances): with two kept, the first member, the
    least recently heard, is retired."""
    second = members.hosts[1]
    for _ in range(2):
        second.sealed_state = None
        second.restart()
        client.start(InProcessTransport(second))
        assert client.send_mail(b"plain") is not None
    assert _key(members.hosts[0]) in client._retired


def _heard_from_first_member(members: Members) -> tuple[EnclaveClient, bytes, list[bytes]]:
    """A cluster client that took an answer (to ``request``, returned) and an answer and notice
    (``mails``, as the host handed them over: the last commit it heard of) from the first
    member."""
    transport = Hostile(members.hosts[0])
    client = _cluster_client(members, transport)
    request = _answered_request(members, client)
    return client, request, _notified(client, transport)


def _taken_again(client: EnclaveClient, members: Members, mails: list[bytes]) -> list[bytes]:
    """What the client takes when the second member's host, which also serves the first's
    attestations, hands it ``mails`` again."""
    first, second = members.hosts
    replaying = Hostile(second, first)
    replaying.replays.extend(mails)
    client.start(replaying)
    return [mail.body for mail in _drained(client)]


def _key(host: EnclaveHost) -> Curve25519PublicKey:
    return host.enclave_instance_info.encryption_key


# -- a retired member verified again -------------------------------------------------------


@pytest.mark.parametrize("how", ["admitted", "adopted", "restored"])
def test_a_retired_members_old_mail_stays_refused_once_it_is_verified_again(
    notify: Members, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Answers from fresh instances retire member A; the host then hands the client A's answer
    and A's unsolicited notice again. A is verified again (as a member the client is not
    talking to, as the instance it talks to, or after save/restore): its reply numbers went on,
    so both are replays and dropped. The notice tells of the last commit of A's lineage, so
    only the reply numbers stop it."""
    monkeypatch.setattr("sanctorum.client.client._KNOWN_INSTANCES", 2)  # 16: the same, slower
    first, second = notify.hosts
    client, _, mails = _heard_from_first_member(notify)
    _retire_first_member(notify, client)
    assert client._retired[_key(first)] == {"default": 3}  # its reply numbers kept
    if how == "restored":
        client = EnclaveClient.restore(client.save())
    replaying = Hostile(first) if how == "adopted" else Hostile(second, first)
    replaying.replays.extend(mails)
    client.start(replaying)
    assert _drained(client) == []  # both dropped as replays
    assert client._post_office(_key(first), "default").next_reply_sequence_number == 3
    client.start(InProcessTransport(first))  # A itself is heard again
    answer = client.send_mail(b"two")
    assert answer is not None
    assert answer.body == b"two #3"


def test_a_retired_member_of_state_saved_before_the_fix_cannot_replay_its_mail(
    notify: Members, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fixed since this review found it: state saved by the previous version lists retired
    instances as hex strings, with no reply numbers; a cluster client verified such a member
    again with reply numbers from 0, so every mail it ever sent the client opened again. Their
    numbers are now "not known", and their mail is dropped, as the previous version did."""
    monkeypatch.setattr("sanctorum.client.client._KNOWN_INSTANCES", 2)
    client, _, mails = _heard_from_first_member(notify)
    _retire_first_member(notify, client)
    state = json.loads(client.save())
    state["retired"] = [key for key, _ in state["retired"]]  # as the previous version saved it
    restored = EnclaveClient.restore(json.dumps(state).encode())
    assert _taken_again(restored, notify, mails) == []  # the notice is not taken a second time


def test_copies_from_fresh_instances_cannot_push_a_member_out_of_the_retired_table(
    notify: Members, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fixed since the review found it: the retired table is bounded (1024; 2 here, with 2
    instances kept instead of 16, to keep the test fast), and copies of one answered request
    from fresh instances retired member A and then pushed it out of the table; A was then
    verified as a member never seen, with reply numbers from 0, and its notice, already taken,
    was taken again. Instances whose mail the client only drops now join nothing."""
    monkeypatch.setattr("sanctorum.client.client._KNOWN_INSTANCES", 2)
    monkeypatch.setattr("sanctorum.client.client._RETIRED_INSTANCES", 2)
    client, request, mails = _heard_from_first_member(notify)
    _flood_with_fresh_members(notify, client, request, 5)
    assert _key(notify.hosts[0]) in client._instances  # copies only: the member is neither retired
    assert not client._retired  # nor pushed out
    assert _taken_again(client, notify, mails) == []  # the notice is not taken a second time


def test_a_retired_members_mail_without_its_attestation_changes_nothing(
    notify: Members, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host replays a retired member's mail and will not serve its attestation: the client
    raises UnattestedSenderError, acknowledges nothing, keeps the member retired with its
    numbers, and goes on once the host behaves."""
    monkeypatch.setattr("sanctorum.client.client._KNOWN_INSTANCES", 2)
    first, second = notify.hosts
    client, _, mails = _heard_from_first_member(notify)
    _retire_first_member(notify, client)
    refusing = Hostile(second)  # knows only its own instances
    refusing.replays.append(mails[1])
    client.start(refusing)
    retired = dict(client._retired)
    acknowledged = client.acknowledged
    with pytest.raises(UnattestedSenderError):
        client.poll_mail()
    assert client._retired == retired
    assert _key(first) not in client._instances
    assert client.acknowledged == acknowledged
    client.start(InProcessTransport(first))
    answer = client.send_mail(b"two")
    assert answer is not None
    assert answer.body == b"two #3"


def test_interleaved_members_restarts_and_replays_keep_the_client_consistent(
    notify: Members, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schedule of requests to either member, restarts (new keys: instances retire and come
    back), and after every step replays of mail handed over before. Every replay is dropped,
    every answer counts on from its member's state, the instance tables stay disjoint and
    bounded, and save/restore is a fixed point."""
    monkeypatch.setattr("sanctorum.client.client._KNOWN_INSTANCES", 2)
    rng = random.Random(17)
    client = EnclaveClient(notify.policy, cluster=notify.key)
    handed: list[bytes] = []
    counts = [0, 0]
    for step in range(24):
        index = rng.randrange(2)
        host = notify.hosts[index]
        if rng.random() < 0.3:
            host.restart()  # the latest state, a new key
        transport = Hostile(host, *notify.hosts)
        if handed:
            transport.replays.extend(rng.sample(handed, min(3, len(handed))))
        client.start(transport)
        body = b"notify" if rng.random() < 0.5 else b"plain"
        answer = client.send_mail(body)  # replays are handed over first: all dropped
        counts[index] += 1
        assert answer is not None
        assert answer.body == body + b" #" + str(counts[index]).encode(), step
        kept = _drained(client)
        assert [mail.body for mail in kept] == (
            [b"notice #" + str(counts[index]).encode()] if body == b"notify" else []
        ), step
        handed.extend(transport.handed)
        assert not set(client._instances) & set(client._retired)
        assert len(client._instances) <= 2
        assert client.enclave_instance_info.encryption_key in client._instances
        saved = client.save()
        assert EnclaveClient.restore(saved).save() == saved
    assert _count(notify.hosts[0]) == str(counts[0]).encode()
    assert _count(notify.hosts[1]) == str(counts[1]).encode()


# -- lineages --------------------------------------------------------------------------------


@pytest.mark.parametrize("restored", [False, True])
def test_a_client_of_one_service_still_catches_fresh_state(notify: Members, restored: bool) -> None:
    """No cluster: the lineage plays no part. A host that replaces the state with fresh state
    (a new lineage, told the client nothing) is caught, also by a restored client."""
    host = notify.hosts[0]
    client = EnclaveClient(notify.policy)
    client.start(InProcessTransport(host))
    assert client.send_mail(b"one") is not None
    if restored:
        client = EnclaveClient.restore(client.save())
        client.start(InProcessTransport(host))
    host.sealed_state = None
    host.restart()
    before = client._last_commit
    with pytest.raises(EnclaveRollbackError):
        client.send_mail(b"two")
    assert client._last_commit == before


def test_a_client_of_one_service_still_drops_a_retired_instances_mail_unasked(
    notify: Members, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No cluster: mail from an instance the client retired is dropped without asking the host
    for its attestation (re-verification is for clusters only)."""
    monkeypatch.setattr("sanctorum.client.client._KNOWN_INSTANCES", 1)
    host = notify.hosts[0]
    transport = Hostile(host)
    client = EnclaveClient(notify.policy)
    client.start(transport)
    mails = _notified(client, transport)
    host.restart()  # the latest state, a new key: the old instance is retired
    answer = client.send_mail(b"two")
    assert answer is not None
    assert answer.body == b"two #2"
    replaying = Hostile(host)
    replaying.replays.extend(mails)
    client.start(replaying)
    assert _drained(client) == []
    assert replaying.asked_for == []


# -- the lineage made with the first commit ---------------------------------------------------


def _lineage(host: EnclaveHost) -> bytes | None:
    committed: bytes | None = _runtime(host)._map.committed_record(_LINEAGE_RECORD)
    return committed


def test_the_lineage_at_the_first_commit_adds_no_commit(notify: Members) -> None:
    """A start with no changes makes no commit (and no lineage); a restart from a state makes no
    commit; a request that raises makes none; a replayed request makes none; each applied
    request makes exactly one, the first with the lineage its answers then name."""
    with notify.start() as host:
        assert host.sealed_state is None
        assert _lineage(host) is None
        host.restart()  # fresh again: still nothing
        assert host.sealed_state is None
        client = _cluster_client(notify, Hostile(host))
        with pytest.raises(EnclaveCallError):
            client.send_mail(b"boom")
        assert host.sealed_state is None
        assert _lineage(host) is None
        outgoing = client.seal(b"one")
        host.deliver_mail(outgoing.mail, client.correlation_id)
        assert _runtime(host)._commit_number == 1
        lineage = _lineage(host)
        assert lineage is not None
        answer = client.poll_mail()
        assert answer is not None
        assert ConversationHeader.decode(answer.private_header).lineage == lineage
        state = host.sealed_state
        assert state is not None
        assert len(state) == 1  # a snapshot
        host.restart()  # from that state: no commit
        assert host.sealed_state == state
        assert _runtime(host)._commit_number == 1
        assert _lineage(host) == lineage
        host.deliver_mail(outgoing.mail, client.correlation_id)  # a replay: answered again
        assert host.sealed_state == state
        assert _count(host) == b"1"
        assert client.poll_mail() is None  # the answer again: a copy
        answer = client.send_mail(b"two")
        assert answer is not None
        assert answer.body == b"two #2"
        assert _runtime(host)._commit_number == 2
        state = host.sealed_state
        assert state is not None
        assert len(state) == 2  # the snapshot and a journal record
        assert _lineage(host) == lineage
        assert ConversationHeader.decode(answer.private_header).lineage == lineage


# -- the mail key kept once a mail opened with it --------------------------------------------


def test_a_mail_the_host_seals_to_its_own_kds_cannot_leave_a_wrong_key_behind(
    notify: Members,
) -> None:
    """Fixed since this review found it: the host seals a mail to its own KDS's public key for
    the spec (same code, its own master keys; the member pins no cluster key in [kds]) and
    hands in that KDS's answer with it: the mail opened, the wrong key was kept for the spec,
    and every real client mail of the spec then failed on that instance. An instance now takes
    keys from one KDS cluster only: here the one that gave it its persistence key."""
    host = notify.hosts[0]
    client = _cluster_client(notify, Hostile(host))
    assert client.send_mail(b"one") is not None
    host.restart()  # a new instance: it holds no mail key yet (or 256 other specs evicted it)
    runtime = _runtime(host)
    kds_info = runtime.kds_instance_info  # the real KDS, which gave the persistence key
    with EnclaveHost.load(KdsEnclave).start() as rogue:
        rogue_answer = _answer(rogue, notify.spec, host.enclave_instance_info)
        crafted = _attacker_mail(rogue, Curve25519PrivateKey.generate(), notify.spec)
    real_fetch = host._kds_fetch
    host._kds_fetch = lambda body: rogue_answer
    try:
        # The instance took its persistence key from the real KDS cluster: it takes keys from
        # no other, pinned in [kds] or not.
        with pytest.raises(KdsError, match="pinned KDS cluster key"):
            host.deliver_mail(crafted, "r")  # the host's own mail, to its own KDS's key
    finally:
        host._kds_fetch = real_fetch
    answer = client.send_mail(b"two")  # the real client's next request still opens
    assert answer is not None
    assert answer.body.startswith(b"two #")
    assert runtime.kds_instance_info == kds_info


# -- saved state of the retired table --------------------------------------------------------


@pytest.mark.parametrize(
    "retired",
    [
        ["zz"],
        [None],
        [["aa" * 32]],
        [["aa" * 31, {}]],
        [["aa" * 32, []]],
        [["aa" * 32, "bb" * 32]],
        [["aa" * 32, {"default": -1}]],
        [["aa" * 32, {"default": 2**63}]],
        [["aa" * 32, {"default": True}]],
        [["aa" * 32, {"default": 1.0}]],
        [["aa" * 32, {"": 1}]],
        [["aa" * 32, {"x" * 300: 1}]],
        [["aa" * 32, {"default": 1}, 3]],
        [{"aa" * 32: 0, "x": 1}],
        "x",
    ],
)
def test_a_damaged_retired_table_in_saved_state_is_refused(
    notify: Members, retired: object
) -> None:
    client = _cluster_client(notify, Hostile(notify.hosts[0]))
    assert client.send_mail(b"one") is not None
    state = json.loads(client.save())
    state["retired"] = retired
    with pytest.raises(ClientStateError):
        EnclaveClient.restore(json.dumps(state).encode())


def test_the_retired_table_survives_save_and_restore_in_order(
    notify: Members, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sanctorum.client.client._KNOWN_INSTANCES", 2)
    transport = Hostile(notify.hosts[0])
    client = _cluster_client(notify, transport)
    _notified(client, transport)
    request = _answered_request(notify, client)
    _flood_with_fresh_members(notify, client, request, 4)
    restored = EnclaveClient.restore(client.save())
    assert list(restored._retired.items()) == list(client._retired.items())
    assert list(restored._instances) == list(client._instances)
    assert list(restored._lineages.items()) == list(client._lineages.items())


# -- remote answers of a KDS or host ----------------------------------------------------------


def _every_answer_a_bomb(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every httpx.stream request answered with ~16 KiB of gzip that decodes to 16 MiB."""
    bomb = gzip.compress(bytes(16 << 20), compresslevel=9)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bomb, headers={"Content-Encoding": "gzip"})

    def stream(method: str, url: str, **kwargs: Any) -> Any:
        client = httpx.Client(transport=httpx.MockTransport(answer))
        return client.stream(method, url, **kwargs)

    monkeypatch.setattr(httpx, "stream", stream)


def test_a_compressed_oversized_kds_answer_is_a_kds_error(
    notify: Members, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fetch_cluster_key counts decoded bytes: a gzip-encoded answer over 4 MiB is refused."""
    _every_answer_a_bomb(monkeypatch)
    with pytest.raises(KdsError, match="answered over"):
        fetch_cluster_key("http://kds.invalid", notify.spec, "C:" + "ab" * 32 + " SEC:INSECURE")


def test_the_hosts_kds_fetcher_bounds_the_answer_it_reads_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The host's fetcher, which carries an instance's /private requests to the KDS, reads at
    most 4 MiB of an answer (decoded), as a client does: a hostile KDS, or anyone on the path
    to a plain-HTTP KDS URL, cannot make an honest host hold an unbounded answer."""
    _every_answer_a_bomb(monkeypatch)
    fetch = kds_fetcher(KdsConfiguration("http://kds.invalid", timeout=1))
    with pytest.raises(KdsError, match="answered over"):
        fetch(b"{}")


def test_mutated_mail_of_a_retired_member_never_raises_a_foreign_error(
    notify: Members, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Damaged copies of a retired member's mail: each is dropped or refused with a Sanctorum
    error, and none leaves the member verified again."""
    monkeypatch.setattr("sanctorum.client.client._KNOWN_INSTANCES", 2)
    client, _, mails = _heard_from_first_member(notify)
    _retire_first_member(notify, client)
    rng = random.Random(5)
    for number in range(300):
        data = bytearray(rng.choice(mails))
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        try:
            result = client.receive(ReceivedMail(number, bytes(data)))
        except SanctorumError:
            continue
        assert result is None
    assert _key(notify.hosts[0]) in client._retired
    assert _key(notify.hosts[0]) not in client._instances
