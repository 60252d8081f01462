"""Attacks on cluster mail (issue 13, security review): a hostile host that drops, duplicates,
reorders, replays and alters mail and KDS answers, restarts instances from any state it saw and
runs its own KDS; a malicious client; a hostile KDS (or network) in front of a client.

Each test checks the error class and that nothing changed. The ones whose docstring says
"fixed since the review found it" were vulnerabilities the review found (docs/decisions.md,
"Cluster mail")."""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import random
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sanctorum import (
    ClientStateError,
    EnclaveClient,
    EnclaveHost,
    EnclaveInstanceInfo,
    EnclaveMode,
    EnclaveRollbackError,
    InProcessTransport,
    KdsError,
    KdsKeyRequiredError,
    MailDecryptionError,
    MailFormatError,
    MailReplayError,
    SanctorumError,
)
from sanctorum.client.transport import ReceivedMail
from sanctorum.common.keys import Curve25519PrivateKey, Curve25519PublicKey, Ed25519PublicKey
from sanctorum.host import KdsConfiguration
from sanctorum.host.kds import kds_fetcher
from sanctorum.kds import KeySpec, MasterKeyType
from sanctorum.kds.access import private_request
from sanctorum.kds.client import cluster_key_from_response, fetch_cluster_key
from sanctorum.kds.enclave import KdsEnclave
from sanctorum.mail.format import DEFAULT_MAX_MAIL_SIZE, MAX_KEY_SPEC_SIZE, seal_mail
from sanctorum.mail.post_office import PostOffice
from tests.kds.test_cluster_mail import MEMBER, STATELESS, Cluster, _count
from tests.kds.test_kds_attacks import _ask, _carry, _keeper
from tests.kds.test_kds_server import Kds

QUIET = """
from sanctorum import Enclave


class Quiet(Enclave):
    \"\"\"MEMBER, except that a request b"quiet" is taken (counted) without an answer: as an
    auction takes bids and answers at its close.\"\"\"

    def receive_mail(self, mail, routing_hint):
        count = int(self.persistent_map.get("count", b"0")) + 1
        self.persistent_map["count"] = str(count).encode()
        if mail.body != b"quiet":
            answer = mail.body + b" #" + str(count).encode()
            self.post_mail(self.post_office(mail).encrypt_mail(answer), routing_hint)
"""


@pytest.fixture(scope="module")
def kds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kds]:
    running = Kds(KdsEnclave, tmp_path_factory.mktemp("kds"), EnclaveMode.MOCK)
    yield running
    running.stop()


class Members(Cluster):
    """:class:`Cluster` of any member source, its [kds] table pinned to ``cluster_key`` if
    given."""

    def __init__(
        self,
        kds: Kds,
        directory: Path,
        source: str = MEMBER,
        entry: str = "Member",
        cluster_key: str = "",
    ) -> None:
        kds_code = kds.service.host.enclave_instance_info.code_hash
        self.kds = kds
        self.member = _keeper(directory, kds_code, cluster_key, source=source, entry=entry)
        self.configuration = KdsConfiguration(kds.url, timeout=5)
        self.hosts = [self.start() for _ in range(2)]
        code = self.hosts[0].enclave_instance_info.code_hash
        self.policy = f"C:{code} SEC:INSECURE"
        self.spec = KeySpec("orders", MasterKeyType.DEVELOPMENT, self.policy)
        self.key = fetch_cluster_key(kds.url, self.spec, kds.constraint)

    def answer(self, spec: KeySpec, requester: EnclaveInstanceInfo) -> bytes:
        """The real KDS's /private answer for ``requester`` (asked in process: fast)."""
        return _answer(self.kds.service.host, spec, requester)


@pytest.fixture
def cluster(kds: Kds, tmp_path: Path) -> Iterator[Members]:
    running = Members(kds, tmp_path / "member")
    yield running
    running.close()


def _answer(kds: EnclaveHost, spec: KeySpec, requester: EnclaveInstanceInfo) -> bytes:
    status, body = _ask(kds, "/private", json.loads(private_request(spec, requester)))
    assert status == 200, body
    return json.dumps(body).encode()


def _runtime(host: EnclaveHost) -> Any:
    platform: Any = host._platform
    return platform.runtime


def _snapshot(host: EnclaveHost) -> tuple[object, ...]:
    """Everything of the instance a refused mail must leave as it was: its sealed state, its
    map, its sequence streams, the KDS keys it holds and the KDS it says it took one from."""
    runtime = _runtime(host)
    return (
        host.sealed_state,
        _count(host),
        dict(runtime._incoming._expected),
        dict(runtime._incoming_shared._expected),
        list(runtime._mail_keys),
        runtime.kds_instance_info,
    )


class Fetches:
    """Counts the host's requests to the KDS (and may answer them instead)."""

    def __init__(self, host: EnclaveHost) -> None:
        self.bodies: list[bytes] = []
        real = host._kds_fetch
        assert real is not None
        self.answer: Callable[[bytes], bytes] = real

        def fetch(body: bytes) -> bytes:
            self.bodies.append(body)
            return self.answer(body)

        host._kds_fetch = fetch


# -- header parsing: what the host (or a client) makes of the header -----------------------


def _with_flags(flags: int) -> Callable[[bytes, int], bytes]:
    return lambda mail, at: mail[:5] + bytes([flags]) + mail[6:]


def _with_spec_length(length: int) -> Callable[[bytes, int], bytes]:
    return lambda mail, at: mail[: at - 4] + length.to_bytes(4, "big") + mail[at:]


def _junk_spec(size: int) -> Callable[[bytes, int], bytes]:
    """The spec replaced by ``size`` bytes that are not a key spec (the header still parses)."""

    def mutate(mail: bytes, at: int) -> bytes:
        old_size = int.from_bytes(mail[at - 4 : at], "big")
        return mail[: at - 4] + size.to_bytes(4, "big") + b"\xab" * size + mail[at + old_size :]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "error", "fetches"),
    [
        pytest.param(lambda mail, at: mail[: at - 4], MailFormatError, 0, id="cut-before-length"),
        pytest.param(lambda mail, at: mail[: at - 2], MailFormatError, 0, id="cut-in-length"),
        pytest.param(lambda mail, at: mail[: at + 3], MailFormatError, 0, id="cut-in-spec"),
        pytest.param(lambda mail, at: mail[:6], MailFormatError, 0, id="six-bytes"),
        pytest.param(lambda mail, at: b"", MailFormatError, 0, id="empty"),
        pytest.param(_with_spec_length(0), MailFormatError, 0, id="length-zero"),
        pytest.param(
            _with_spec_length(MAX_KEY_SPEC_SIZE + 1), MailFormatError, 0, id="length-over-max"
        ),
        pytest.param(_with_spec_length(2**32 - 1), MailFormatError, 0, id="length-u32-max"),
        pytest.param(_with_spec_length(1 << 16), MailFormatError, 0, id="length-past-end"),
        pytest.param(_with_flags(0x03), MailFormatError, 0, id="flags-0x03"),
        pytest.param(_with_flags(0x81), MailFormatError, 0, id="flags-0x81"),
        pytest.param(_with_flags(0xFF), MailFormatError, 0, id="flags-0xff"),
        pytest.param(
            _with_flags(0x00), (MailFormatError, MailDecryptionError), 0, id="flag-cleared"
        ),
        # A header that parses but names no key spec: the host refuses it without asking.
        pytest.param(_junk_spec(40), KdsError, 0, id="not-a-spec"),
        pytest.param(_junk_spec(MAX_KEY_SPEC_SIZE), KdsError, 0, id="largest-junk-spec"),
        # A good header, the rest broken: one KDS request (a client can cost the host that).
        pytest.param(
            lambda mail, at: mail[: mail.index(b"SEC:INSECURE") + 20],
            MailFormatError,
            1,
            id="cut-after-header",
        ),
        pytest.param(lambda mail, at: mail + b"\0", MailFormatError, 1, id="extended"),
        pytest.param(
            lambda mail, at: mail[:-1] + bytes([mail[-1] ^ 1]),
            MailDecryptionError,
            1,
            id="body-flipped",
        ),
        pytest.param(
            lambda mail, at: mail + bytes(DEFAULT_MAX_MAIL_SIZE), MailFormatError, 0, id="oversized"
        ),
    ],
)
def test_a_malformed_cluster_header_is_refused_and_changes_nothing(
    cluster: Members,
    mutate: Callable[[bytes, int], bytes],
    error: type[Exception] | tuple[type[Exception], ...],
    fetches: int,
) -> None:
    host = cluster.hosts[0]
    counted = Fetches(host)
    mail = cluster.client().seal(b"x").mail
    at = mail.index(cluster.spec.canonical)
    before = _snapshot(host)
    with pytest.raises(error):
        host.deliver_mail(mutate(mail, at), "r")
    assert len(counted.bodies) == fetches  # never more than one request: no loop
    # State, map and sequence streams as they were. (The key cache is left out here: a mail
    # whose header is good keeps its key even when the rest is refused, see
    # test_a_valid_answer_with_a_mail_that_does_not_open_keeps_nothing.)
    assert _snapshot(host)[:4] == before[:4]
    host.deliver_mail(mail, "r")  # the real mail still opens, its number unspent
    assert _count(host) == b"1"


def _mutated(mail: bytes, rng: random.Random) -> bytes:
    """``mail`` with a few bytes flipped, inserted, deleted or cut, mostly in the header."""
    data = bytearray(mail)
    for _ in range(rng.randint(1, 3)):
        limit = 120 if rng.random() < 0.8 else len(data)
        where = rng.randrange(max(1, min(limit, len(data))))
        move = rng.random()
        if move < 0.5 and data:
            data[where] ^= 1 << rng.randrange(8)
        elif move < 0.7:
            data.insert(where, rng.randrange(256))
        elif move < 0.9 and data:
            del data[where]
        else:
            del data[where:]
    return bytes(data)


def test_mutated_cluster_mail_gets_a_sanctorum_error_and_changes_nothing(
    cluster: Members, kds: Kds
) -> None:
    host = cluster.hosts[0]
    counted = Fetches(host)
    counted.answer = _carry(kds.service.host)  # the real KDS, asked in process: fast
    mail = cluster.client().seal(b"x").mail
    before = _snapshot(host)
    rng = random.Random(13)
    for _ in range(400):
        mutated = _mutated(mail, rng)
        if mutated == mail:
            continue
        with pytest.raises(SanctorumError):
            host.deliver_mail(mutated, "r")
        assert _snapshot(host)[:4] == before[:4]
    assert len(counted.bodies) <= 400  # at most one KDS request per delivery
    host.deliver_mail(mail, "r")
    assert _count(host) == b"1"


def test_a_spec_added_to_direct_mail_or_stripped_from_cluster_mail_opens_nothing(
    cluster: Members,
) -> None:
    host = cluster.hosts[0]
    client = cluster.client()
    direct = PostOffice(client.private_key, host.enclave_instance_info.encryption_key)
    mail = direct.encrypt_mail(b"direct")
    end = 14 + 2 + len(b"default") + 4  # the prologue's end: no envelope
    spec = cluster.spec.canonical
    added = mail[:5] + b"\x01" + mail[6:end] + len(spec).to_bytes(4, "big") + spec + mail[end:]
    cluster_mail = client.seal(b"to the cluster").mail
    at = cluster_mail.index(spec)
    stripped = (
        cluster_mail[:5] + b"\x00" + cluster_mail[6 : at - 4] + cluster_mail[at + len(spec) :]
    )
    before = _snapshot(host)
    with pytest.raises(MailDecryptionError):
        host.deliver_mail(added, "r")  # the host fetched the cluster key: it does not open it
    with pytest.raises(MailDecryptionError):
        host.deliver_mail(stripped, "r")  # the instance's own key does not open it either
    assert _snapshot(host)[:4] == before[:4]
    host.deliver_mail(mail, "r")
    host.deliver_mail(cluster_mail, "r")
    assert _count(host) == b"2"


# -- the key the host hands in -------------------------------------------------------------


def test_a_pinned_member_refuses_the_mail_key_of_the_hosts_own_kds(
    kds: Kds, tmp_path: Path
) -> None:
    any_spec = KeySpec("x", MasterKeyType.CLUSTER, "C:" + "ab" * 32 + " SEC:INSECURE")
    _, public = _ask(kds.service.host, "/public", any_spec.to_json())
    pinned = Members(kds, tmp_path / "pinned", cluster_key=public["clusterKey"])
    try:
        host = pinned.hosts[0]
        mail = pinned.client().seal(b"x").mail
        before = _snapshot(host)
        with EnclaveHost.load(KdsEnclave).start() as rogue:  # same code, its own master keys
            rogue_answer = _answer(rogue, pinned.spec, host.enclave_instance_info)
        with pytest.raises(KdsError, match="not signed by the pinned KDS cluster key"):
            host._platform.deliver_mail(mail, "r", rogue_answer)
        assert _snapshot(host) == before  # no key kept, no KDS recorded
        host.deliver_mail(mail, "r")  # the host fetches from the real KDS: it opens
        assert _count(host) == b"1"
    finally:
        pinned.close()


def test_a_key_that_does_not_open_the_mail_is_not_kept(cluster: Members) -> None:
    """Fixed since the review found it: the enclave keeps a mail key before the mail opens with
    it. Without a pinned cluster key, a host that once hands in the key of its own KDS (same
    code, other master keys) leaves the instance holding a wrong key for the spec: every later
    delivery of real mail for it fails with MailDecryptionError, the host is never asked again,
    and kds_enclave_instance_info names the host's KDS, until the key is evicted or the instance
    restarts."""
    host = cluster.hosts[0]
    mail = cluster.client().seal(b"x").mail
    before = _snapshot(host)
    with EnclaveHost.load(KdsEnclave).start() as rogue:
        rogue_answer = _answer(rogue, cluster.spec, host.enclave_instance_info)
    # A member with state took its persistence key from the real cluster: the rogue's answer
    # is refused at once (a stateless member, which pins the first cluster whose key opened a
    # mail, is in test_a_stateless_members_first_kds_is_the_one_whose_key_opened_a_mail).
    with pytest.raises(KdsError, match="pinned KDS cluster key"):
        host._platform.deliver_mail(mail, "r", rogue_answer)
    assert _snapshot(host) == before
    host.deliver_mail(mail, "r")  # honest from now on: fetches from the real KDS
    assert _count(host) == b"1"


def test_a_stateless_members_first_kds_is_the_one_whose_key_opened_a_mail(
    kds: Kds, tmp_path: Path
) -> None:
    """A member with no state (so no persistence key) and no cluster_key: the host hands in its
    own KDS's answer first, with a real client's mail; the mail does not open, so nothing is
    kept or trusted. The real KDS's key then opens it, and from then on the instance takes keys
    from that cluster only, even with a mail the host sealed to its own KDS's key."""
    kds_code = kds.service.host.enclave_instance_info.code_hash
    echo = _keeper(
        tmp_path / "echo", kds_code, source=STATELESS, entry="Echo", persistent_map=False
    )
    with (
        EnclaveHost.load(echo).start(kds=KdsConfiguration(kds.url, timeout=5)) as host,
        EnclaveHost.load(KdsEnclave).start() as rogue,
    ):
        policy = f"C:{host.enclave_instance_info.code_hash} SEC:INSECURE"
        spec = KeySpec("echo", MasterKeyType.DEVELOPMENT, policy)
        client = EnclaveClient(policy, cluster=fetch_cluster_key(kds.url, spec, kds.constraint))
        client.start(InProcessTransport(host))
        mail = client.seal(b"x").mail
        runtime = _runtime(host)
        rogue_answer = _answer(rogue, spec, host.enclave_instance_info)
        with pytest.raises(MailDecryptionError):
            runtime.deliver_mail(mail, "r", rogue_answer)
        assert list(runtime._mail_keys) == []
        assert runtime.kds_instance_info is None
        host.deliver_mail(mail, "r")  # the host's fetch: the real KDS
        assert runtime.kds_instance_info is not None
        assert runtime.kds_instance_info.code_hash == kds_code
        # A spec it holds no key for yet, a mail sealed to the rogue's key, the rogue's answer:
        other = KeySpec("other", MasterKeyType.DEVELOPMENT, policy)
        crafted = _attacker_mail(rogue, Curve25519PrivateKey.generate(), other)
        with pytest.raises(KdsError, match="pinned KDS cluster key"):
            runtime.deliver_mail(crafted, "r", _answer(rogue, other, host.enclave_instance_info))


def test_a_valid_answer_with_a_mail_that_does_not_open_keeps_nothing(cluster: Members) -> None:
    """Fixed since the review found it (same cause): a refused mail still leaves its KDS key in
    the cache (evicting another) and changes kds_enclave_instance_info."""
    host = cluster.hosts[0]
    mail = cluster.client().seal(b"x").mail
    damaged = mail[:-1] + bytes([mail[-1] ^ 1])
    before = _snapshot(host)
    with pytest.raises(MailDecryptionError):
        host._platform.deliver_mail(
            damaged, "r", cluster.answer(cluster.spec, host.enclave_instance_info)
        )
    assert _snapshot(host) == before


def test_an_answer_from_the_instances_previous_start_is_refused(cluster: Members) -> None:
    host = cluster.hosts[0]
    client = cluster.client()
    old_answer = cluster.answer(cluster.spec, host.enclave_instance_info)
    assert client.send_mail(b"one") is not None
    host.restart()  # a new instance, from the latest state: new keys
    mail = client.seal(b"two").mail
    before = _snapshot(host)
    with pytest.raises(KdsError, match="does not open with this enclave's key"):
        host._platform.deliver_mail(mail, "r", old_answer)
    assert _snapshot(host) == before
    host.deliver_mail(mail, "r")
    assert _count(host) == b"2"


def test_the_persistence_key_answer_does_not_open_cluster_mail(
    cluster: Members, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host holds one valid answer sealed to the instance already: its persistence key's.
    Handed in for cluster mail, it is for another spec."""
    answers: list[bytes] = []
    real = kds_fetcher

    def recording(configuration: KdsConfiguration) -> Callable[[bytes], bytes]:
        fetch = real(configuration)

        def carry(body: bytes) -> bytes:
            answers.append(fetch(body))
            return answers[-1]

        return carry

    monkeypatch.setattr("sanctorum.host.host.kds_fetcher", recording)
    with cluster.start() as host:
        assert len(answers) == 1  # the persistence key, at start
        mail = cluster.client().seal(b"x").mail
        before = _snapshot(host)
        # The KDS's cluster signature covers the spec: refused as the pinned cluster's, or for
        # the spec it names.
        with pytest.raises(KdsError, match=r"another key spec|pinned KDS cluster key"):
            host._platform.deliver_mail(mail, "r", answers[0])
        assert _snapshot(host) == before


def _saying(answer: bytes) -> Callable[[bytes], bytes]:
    return lambda body: answer


def test_the_host_asks_the_kds_once_per_missing_key_and_never_loops(cluster: Members) -> None:
    host = cluster.hosts[0]
    counted = Fetches(host)
    client = cluster.client()
    assert client.send_mail(b"one") is not None
    assert client.send_mail(b"two") is not None
    assert len(counted.bodies) == 1  # the key is kept: asked for once
    # A lying KDS (or host): one request, then a KdsError, whatever it answers.
    other = cluster.start()
    try:
        counted = Fetches(other)
        for lie in (b"", b"{}", b'{"reason": "no"}', b"[" * 100_000):
            counted.answer = _saying(lie)
            before = _snapshot(other)
            with pytest.raises(KdsError):
                other.deliver_mail(client.seal(b"x").mail, "r")
            assert _snapshot(other) == before
        assert len(counted.bodies) == 4
        # Given an answer, the enclave never asks again, whatever the answer.
        with pytest.raises(KdsError) as refused:
            other._platform.deliver_mail(client.seal(b"y").mail, "r", b"")
        assert not isinstance(refused.value, KdsKeyRequiredError)
        assert len(counted.bodies) == 4
    finally:
        other.close()


def test_a_client_naming_a_spec_the_instance_fails_costs_one_kds_request(
    cluster: Members, kds: Kds
) -> None:
    host = cluster.hosts[0]
    counted = Fetches(host)
    spec = KeySpec("orders", MasterKeyType.DEVELOPMENT, "C:" + "ab" * 32 + " SEC:INSECURE")
    key = fetch_cluster_key(kds.url, spec, kds.constraint)
    office = key.create_post_office(Curve25519PrivateKey.generate())
    before = _snapshot(host)
    for _ in range(3):
        with pytest.raises(KdsError, match="does not meet the key's policy"):
            host.deliver_mail(office.encrypt_mail(b"x"), "r")
    assert len(counted.bodies) == 3
    assert _snapshot(host) == before


def _attacker_mail(kds: EnclaveHost, sender: Curve25519PrivateKey, spec: KeySpec) -> bytes:
    """A mail sealed to the public key ``kds`` gives anyone for ``spec`` (no request id)."""
    status, public = _ask(kds, "/public", spec.to_json())
    assert status == 200, public
    recipient = Curve25519PublicKey(base64.b64decode(public["publicKey"]))
    return seal_mail(
        sender, recipient, topic="t", sequence_number=0, body=b"", key_spec=spec.canonical
    )


def test_the_key_cache_is_bounded_and_an_evicted_key_is_asked_for_again(
    cluster: Members, kds: Kds
) -> None:
    host = cluster.hosts[0]
    client = cluster.client()
    assert client.send_mail(b"one") is not None
    counted = Fetches(host)
    counted.answer = _carry(kds.service.host)  # the real KDS, asked in process: fast
    runtime = _runtime(host)
    attacker = Curve25519PrivateKey.generate()
    for number in range(300):  # a client's (or the host's) own specs, each one a new key
        spec = KeySpec(f"flood-{number}", MasterKeyType.DEVELOPMENT, cluster.policy)
        host.deliver_mail(_attacker_mail(kds.service.host, attacker, spec), "r")
    assert len(counted.bodies) == 300
    assert len(runtime._mail_keys) == 256
    assert cluster.spec.canonical not in runtime._mail_keys
    answer = client.send_mail(b"two")  # the host asks for the evicted key again
    assert answer is not None
    assert answer.body == b"two #302"
    assert len(counted.bodies) == 301


def test_a_clients_streams_do_not_keep_its_key_specs(cluster: Members, kds: Kds) -> None:
    """Fixed since the review found it: the runtime keys its cluster sequence streams by
    (sender, topic, spec bytes), so each stream holds the whole spec (up to ~64 KiB: a policy
    may be padded with spaces) for the instance's life, where a direct stream holds a topic of
    at most 256 bytes. A malicious client that names a new spec per mail (any name, a policy the
    instance meets: the KDS gives the key) makes the instance keep ~64 KiB per mail; only the
    key cache is bounded."""
    host = cluster.hosts[0]
    info = host.enclave_instance_info
    runtime = _runtime(host)
    attacker = Curve25519PrivateKey.generate()
    padded = cluster.policy + " " * 50_000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(40):
            spec = KeySpec(f"padded-{number}", MasterKeyType.DEVELOPMENT, padded)
            mail = _attacker_mail(kds.service.host, attacker, spec)
            # What the host passes on is its own affair: here it keeps none of it.
            host._platform.deliver_mail(mail, "r", cluster.answer(spec, info))
        runtime._mail_keys.clear()  # as 256 other specs would: the cache is bounded
        del spec, mail
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 40 * 4096, f"{kept} bytes kept for 40 streams"


# -- rollback detection per lineage --------------------------------------------------------


@pytest.fixture
def quiet(kds: Kds, tmp_path: Path) -> Iterator[Members]:
    running = Members(kds, tmp_path / "quiet", source=QUIET, entry="Quiet")
    yield running
    running.close()


def test_a_rollback_to_state_from_before_the_lineage_is_detected(quiet: Members) -> None:
    """Fixed since the review found it: the lineage is made at the first commit that tells a
    client of one, not with the state (docs/decisions.md says "made at its first start"). A host
    restarts a member from a state that holds the client's first request but predates its first
    answer: the instance makes a new lineage and says it told the client nothing, which a
    cluster client takes for a new member. The client's second request is lost, undetected; a
    client of one instance catches the same rollback
    (test_the_same_rollback_is_detected_by_a_client_of_one_instance)."""
    host = quiet.hosts[0]
    client = quiet.client()
    assert client.send_mail(b"quiet") is None  # taken, no answer: count 1, no lineage yet
    taken = host.sealed_state
    answer = client.send_mail(b"two")
    assert answer is not None
    assert answer.body == b"two #2"  # told of the commit holding requests 1 and 2
    host.close()
    quiet.hosts[0] = host = quiet.start(taken)  # rolled back: request 2 is gone
    client.start(InProcessTransport(host))
    with pytest.raises(EnclaveRollbackError):
        client.send_mail(b"three")  # would answer "three #2" from the rolled-back state


def test_the_same_rollback_is_detected_by_a_client_of_one_instance(quiet: Members) -> None:
    host = quiet.hosts[0]
    client = EnclaveClient(quiet.policy)
    client.start(InProcessTransport(host))
    assert client.send_mail(b"quiet") is None
    taken = host.sealed_state
    assert client.send_mail(b"two") is not None
    host.close()
    quiet.hosts[0] = host = quiet.start(taken)
    client.start(InProcessTransport(host))
    with pytest.raises(EnclaveRollbackError):
        client.send_mail(b"three")


def test_a_member_forked_from_another_members_state_is_caught(cluster: Members) -> None:
    """State sealed with a KDS key opens on any machine: the host starts member B from member
    A's state (the same lineage). Once the client hears from both, the fork shows."""
    first, second = cluster.hosts
    client = cluster.client(0)
    assert client.send_mail(b"one") is not None
    second.close()
    cluster.hosts[1] = second = cluster.start(first.sealed_state)
    assert client.send_mail(b"two") is not None  # A goes on
    client.start(InProcessTransport(second))
    with pytest.raises(EnclaveRollbackError):
        client.send_mail(b"three")  # B tells of A's older commit


def test_restarts_from_the_latest_state_give_no_false_rollback(cluster: Members) -> None:
    client = cluster.client(0)
    for turn in range(3):
        for index in (0, 1):
            client.start(InProcessTransport(cluster.hosts[index]))
            answer = client.send_mail(b"turn")
            assert answer is not None
            assert answer.body == b"turn #" + str(turn + 1).encode()
            cluster.hosts[index].restart()


def _flood_with_fresh_members(
    cluster: Members, client: EnclaveClient, mail: bytes, members: int
) -> None:
    """The host starts ``members`` fresh instances on its second host, one after the other,
    delivers the client's (already answered) request to each and hands the client their
    answers: copies of an answered request, each from a new instance and lineage."""
    hostile = cluster.hosts[1]
    for _ in range(members):
        hostile.sealed_state = None
        hostile.restart()
        hostile.deliver_mail(mail, client.correlation_id)
    client.start(InProcessTransport(hostile))
    assert client.poll_mail() is None  # all copies: dropped, but their instances admitted


def test_copies_from_fresh_members_cannot_evict_a_real_lineage(
    cluster: Members, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fixed since the review found it: a copy of an answered request from a new lineage (last
    told: nothing) is taken as news, and lineages are kept in a bounded table (1024, here 4 to
    keep the test fast). One request delivered to 1025 fresh instances evicts the lineage of
    every real member, and the next answer from one is a false EnclaveRollbackError (an evicted
    lineage reads as "told the client of a commit it never heard of")."""
    monkeypatch.setattr("sanctorum.client.client._LINEAGES", 4)
    client = cluster.client(0)
    outgoing = client.seal(b"one")
    cluster.hosts[0].deliver_mail(outgoing.mail, client.correlation_id)
    answer = client.poll_mail()
    assert answer is not None
    assert answer.body == b"one #1"
    _flood_with_fresh_members(cluster, client, outgoing.mail, 5)
    client.start(InProcessTransport(cluster.hosts[0]))
    answer = client.send_mail(b"two")  # the real member, never rolled back
    assert answer is not None
    assert answer.body == b"two #2"


def test_copies_from_fresh_members_cannot_let_a_rollback_through(
    cluster: Members, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fixed since the review found it (same cause, worse): once the victim's record of a
    lineage is evicted, the host restarts that member from a state of the same lineage older
    than the victim's first request (another client had made the lineage). It says it told the
    victim nothing, which now matches what the victim remembers (nothing): the victim's requests
    are gone and it takes the rolled-back state's answer."""
    monkeypatch.setattr("sanctorum.client.client._LINEAGES", 4)
    first = cluster.hosts[0]
    assert cluster.client(0).send_mail(b"another client's") is not None  # makes the lineage
    older = first.sealed_state
    victim = cluster.client(0)
    assert victim.send_mail(b"one") is not None
    outgoing = victim.seal(b"two")
    first.deliver_mail(outgoing.mail, victim.correlation_id)
    answer = victim.poll_mail()
    assert answer is not None
    assert answer.body == b"two #3"
    _flood_with_fresh_members(cluster, victim, outgoing.mail, 5)
    first.close()
    cluster.hosts[0] = first = cluster.start(older)  # the victim's two requests are gone
    victim.start(InProcessTransport(first))
    with pytest.raises(EnclaveRollbackError):
        victim.send_mail(b"three")  # would answer "three #2"


def test_copies_from_fresh_members_cannot_retire_a_real_member(cluster: Members) -> None:
    """Fixed since the review found it: a client keeps 16 instances and drops, for good, all
    mail from instances it retired. In a cluster the host retires a real member by handing the
    client copies of one answered request from 16 fresh instances (or an honest balancer over 17
    members does it): the real member then applies the client's requests and its answers are
    dropped, silently (send_mail returns None)."""
    client = cluster.client(0)
    outgoing = client.seal(b"one")
    cluster.hosts[0].deliver_mail(outgoing.mail, client.correlation_id)
    assert client.poll_mail() is not None
    _flood_with_fresh_members(cluster, client, outgoing.mail, 16)
    client.start(InProcessTransport(cluster.hosts[0]))
    answer = client.send_mail(b"two")
    assert _count(cluster.hosts[0]) == b"2"  # applied
    assert answer is not None  # but its answer was dropped
    assert answer.body == b"two #2"


# -- exactly once ---------------------------------------------------------------------------


def test_a_replay_to_a_restarted_member_is_answered_not_applied(cluster: Members) -> None:
    host = cluster.hosts[0]
    client = cluster.client(0)
    outgoing = client.seal(b"one")
    host.deliver_mail(outgoing.mail, client.correlation_id)
    assert client.poll_mail() is not None
    host.restart()  # latest state; the new instance asks the KDS for the key again
    host.deliver_mail(outgoing.mail, client.correlation_id)
    assert _count(host) == b"1"
    assert client.poll_mail() is None  # the answer sent again: a copy, dropped
    answer = client.send_mail(b"two")
    assert answer is not None
    assert answer.body == b"two #2"


class LyingOnce(InProcessTransport):
    """Delivers the mail, then says MAIL_DECRYPTION (once)."""

    lied = False

    def deliver_mail(
        self, mail: bytes, correlation_id: str, acknowledge: int | None
    ) -> ReceivedMail | None:
        received = super().deliver_mail(mail, correlation_id, acknowledge)
        if not self.lied:
            self.lied = True
            raise MailDecryptionError("lie")
        return received


def test_a_false_decryption_error_never_gets_a_cluster_request_applied_twice(
    cluster: Members,
) -> None:
    host = cluster.hosts[0]
    client = EnclaveClient(cluster.policy, cluster=cluster.key)
    client.start(LyingOnce(host))
    with pytest.raises(MailDecryptionError):
        client.send_mail(b"one")  # applied, and the host says it was not
    assert _count(host) == b"1"
    assert client.in_doubt("default") is not None
    answer = client.send_mail(b"two")  # "one" goes again first, byte for byte: a replay
    assert answer is not None
    assert answer.body == b"two #2"
    assert _count(host) == b"2"


def test_a_request_delivered_to_both_members_is_applied_once_in_each(cluster: Members) -> None:
    first, second = cluster.hosts
    client = cluster.client(0)
    outgoing = client.seal(b"one")
    first.deliver_mail(outgoing.mail, client.correlation_id)
    second.deliver_mail(outgoing.mail, client.correlation_id)  # a retrying balancer
    for host in (first, second):
        with pytest.raises(MailReplayError):
            host.deliver_mail(outgoing.mail, client.correlation_id)
        assert _count(host) == b"1"
    answer = client.poll_mail()
    assert answer is not None
    assert answer.body == b"one #1"
    client.start(InProcessTransport(second))  # B's copy waits there: news, not a rollback
    answer = client.send_mail(b"two")
    assert answer is not None
    assert answer.body == b"two #2"


# -- the client's saved state --------------------------------------------------------------


def test_a_restored_cluster_client_still_catches_a_rollback_per_lineage(
    cluster: Members,
) -> None:
    first, second = cluster.hosts
    client = cluster.client(0)
    assert client.send_mail(b"one") is not None
    client.start(InProcessTransport(second))
    assert client.send_mail(b"two") is not None
    old = second.sealed_state
    assert client.send_mail(b"three") is not None
    restored = EnclaveClient.restore(client.save())
    restored.start(InProcessTransport(first))
    answer = restored.send_mail(b"four")  # numbers go on: no replay, no false rollback
    assert answer is not None
    assert answer.body == b"four #2"
    restored.start(InProcessTransport(second))
    answer = restored.send_mail(b"five")
    assert answer is not None
    assert answer.body == b"five #3"
    second.close()
    cluster.hosts[1] = second = cluster.start(old)
    restored.start(InProcessTransport(second))
    before = restored.save()
    with pytest.raises(EnclaveRollbackError):
        restored.send_mail(b"six")
    lineages = json.loads(restored.save())["cluster"]["lineages"]
    assert lineages == json.loads(before)["cluster"]["lineages"]  # nothing taken from it


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("public_key", "00" * 31),
        ("key_spec", "not base64!"),
        ("topics", {"default": -1}),
        ("topics", {"": 0}),
        ("lineages", [["00" * 15, "00" * 16]]),
        ("lineages", [["00" * 16]]),
        ("lineages", "x"),
    ],
)
def test_a_damaged_cluster_section_of_saved_state_is_refused(
    cluster: Members, field: str, value: object
) -> None:
    client = cluster.client(0)
    assert client.send_mail(b"one") is not None
    state = json.loads(client.save())
    state["cluster"][field] = value
    with pytest.raises(ClientStateError):
        EnclaveClient.restore(json.dumps(state).encode())


# -- a hostile KDS in front of a client -----------------------------------------------------


@pytest.mark.parametrize("status", [200, 403])
def test_a_hostile_kds_answer_gives_the_client_a_kds_error(
    cluster: Members, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    """Fixed since the review found it: fetch_cluster_key reads the answer with response.json(),
    catching ValueError only: a deeply nested answer (from a hostile KDS, or anyone on the path
    to a plain-HTTP KDS URL) raises RecursionError out of it, not KdsError."""

    for content, problem in (
        (b"[" * 100_000, "not a JSON object|refused"),
        (bytes(5 << 20), "answered over"),
    ):

        def hostile(
            method: str, url: str, content: bytes = content, **kwargs: object
        ) -> contextlib.AbstractContextManager[httpx.Response]:
            return contextlib.nullcontext(httpx.Response(status, content=content))

        monkeypatch.setattr(httpx, "stream", hostile)
        with pytest.raises(KdsError, match=problem):
            fetch_cluster_key(
                "http://kds.invalid", cluster.spec, "C:" + "ab" * 32 + " SEC:INSECURE"
            )


def test_a_pinned_client_refuses_the_public_key_of_another_kds(cluster: Members, kds: Kds) -> None:
    real = httpx.post(f"{kds.url}/public", json=cluster.spec.to_json()).json()
    pin = Ed25519PublicKey(bytes.fromhex(real["clusterKey"]))
    assert cluster_key_from_response(real, cluster.spec, kds.constraint, cluster_key=pin)
    with EnclaveHost.load(KdsEnclave).start() as rogue:  # same code: meets the constraint
        _, answer = _ask(rogue, "/public", cluster.spec.to_json())
    assert cluster_key_from_response(answer, cluster.spec, kds.constraint).public_key != (
        cluster.key.public_key
    )
    with pytest.raises(KdsError, match="pinned KDS cluster key"):
        cluster_key_from_response(answer, cluster.spec, kds.constraint, cluster_key=pin)


def test_a_stateless_member_refuses_malformed_cluster_mail_too(kds: Kds, tmp_path: Path) -> None:
    kds_code = kds.service.host.enclave_instance_info.code_hash
    echo = _keeper(
        tmp_path / "echo", kds_code, source=STATELESS, entry="Echo", persistent_map=False
    )
    with EnclaveHost.load(echo).start(kds=KdsConfiguration(kds.url, timeout=5)) as host:
        policy = f"C:{host.enclave_instance_info.code_hash} SEC:INSECURE"
        key = fetch_cluster_key(
            kds.url, KeySpec("echo", MasterKeyType.DEVELOPMENT, policy), kds.constraint
        )
        client = EnclaveClient(policy, cluster=key)
        client.start(InProcessTransport(host))
        mail = client.seal(b"x").mail
        with pytest.raises(MailDecryptionError):
            host.deliver_mail(mail[:-1] + bytes([mail[-1] ^ 1]), client.correlation_id)
        host.deliver_mail(mail, client.correlation_id)
        with pytest.raises(MailReplayError):
            host.deliver_mail(mail, client.correlation_id)
