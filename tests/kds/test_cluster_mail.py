"""Cluster mail: a client seals to the public key a KDS derives for a key spec, and every
instance the KDS gives the private key to (it meets the spec's policy) opens the mail, whatever
host it reaches. Mock mode here, with a KDS over HTTP; the same across processes in simulation
mode is in test_cluster_processes.py."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
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
    MailGapError,
    MailRefusedError,
    MailReplayError,
    WebTransport,
)
from sanctorum.host import KdsConfiguration
from sanctorum.kds import KeySpec, MasterKeyType
from sanctorum.kds.client import cluster_key_from_response, fetch_cluster_key
from sanctorum.kds.enclave import KdsEnclave
from sanctorum.mail.format import KEY_SPEC_FLAG, read_mail_header
from sanctorum.mail.post_office import ClusterKey, PostOffice
from sanctorum.web.service import EnclaveService
from tests.kds.test_kds_attacks import _keeper
from tests.kds.test_kds_server import Kds
from tests.web.conftest import serve

MEMBER = """
from sanctorum import Enclave


class Member(Enclave):
    \"\"\"Counts the mail it took (in its own persistent map) and answers with the count.\"\"\"

    def receive_mail(self, mail, routing_hint):
        count = int(self.persistent_map.get("count", b"0")) + 1
        self.persistent_map["count"] = str(count).encode()
        answer = mail.body + b" #" + str(count).encode()
        self.post_mail(self.post_office(mail).encrypt_mail(answer), routing_hint)
"""


@pytest.fixture(scope="module")
def kds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kds]:
    running = Kds(KdsEnclave, tmp_path_factory.mktemp("kds"), EnclaveMode.MOCK)
    yield running
    running.stop()


class Cluster:
    """Two hosts of one mock enclave class with a [kds] table, and the cluster's key."""

    def __init__(self, kds: Kds, directory: Path, source: str = MEMBER) -> None:
        kds_code = kds.service.host.enclave_instance_info.code_hash
        self.member = _keeper(directory, kds_code, source=source, entry="Member")
        self.configuration = KdsConfiguration(kds.url, timeout=5)
        self.hosts = [self.start() for _ in range(2)]
        code = self.hosts[0].enclave_instance_info.code_hash
        self.policy = f"C:{code} SEC:INSECURE"
        self.spec = KeySpec("orders", MasterKeyType.DEVELOPMENT, self.policy)
        self.key = fetch_cluster_key(kds.url, self.spec, kds.constraint)

    def start(self, sealed_state: tuple[bytes, ...] | None = None) -> EnclaveHost:
        return EnclaveHost.load(self.member).start(
            sealed_state=sealed_state, kds=self.configuration
        )

    def client(self, host: int = 0) -> EnclaveClient:
        client = EnclaveClient(self.policy, cluster=self.key)
        client.start(InProcessTransport(self.hosts[host]))
        return client

    def close(self) -> None:
        for host in self.hosts:
            host.close()


@pytest.fixture
def cluster(kds: Kds, tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(kds, tmp_path / "member")
    yield running
    running.close()


def _count(host: EnclaveHost) -> bytes | None:
    enclave: Any = host.mock_enclave
    value: bytes | None = enclave.persistent_map.get("count")
    return value


def test_every_instance_opens_the_same_cluster_mail(cluster: Cluster, kds: Kds) -> None:
    client = cluster.client()
    outgoing = client.seal(b"bid 10")
    # The key spec travels in the authenticated header, for the host to see.
    assert outgoing.mail[5] & KEY_SPEC_FLAG
    assert read_mail_header(outgoing.mail).key_spec == cluster.spec.canonical
    assert KeySpec.decode(cluster.key.key_spec) == cluster.spec
    for host in cluster.hosts:  # the same bytes open in both instances
        host.deliver_mail(outgoing.mail, "bidder")
        assert _count(host) == b"1"
        enclave: Any = host.mock_enclave
        kds_info = enclave.kds_enclave_instance_info
        assert kds_info is not None  # the KDS that gave it the key, as it verified it
        assert kds_info.code_hash == kds.service.host.enclave_instance_info.code_hash


def test_a_client_talks_to_the_cluster_through_either_host(cluster: Cluster) -> None:
    client = cluster.client(0)
    first = client.send_mail(b"one")
    assert first is not None
    assert first.body == b"one #1"
    client.start(InProcessTransport(cluster.hosts[1]))  # the load balancer picks the other host
    second = client.send_mail(b"two")  # its number (1) is a gap for this instance: accepted
    assert second is not None
    assert second.body == b"two #1"
    client.start(InProcessTransport(cluster.hosts[0]))
    third = client.send_mail(b"three")
    assert third is not None
    assert third.body == b"three #2"
    # Two lines of state, each checked apart: no false rollback. And the client's state keeps
    # the cluster: restored, it goes on.
    restored = EnclaveClient.restore(client.save())
    assert restored.cluster == cluster.key
    restored.start(InProcessTransport(cluster.hosts[1]))
    fourth = restored.send_mail(b"four")
    assert fourth is not None
    assert fourth.body == b"four #2"
    assert restored.save() != client.save()


def test_a_rollback_of_one_instance_is_still_detected(cluster: Cluster) -> None:
    client = cluster.client(0)
    client.send_mail(b"one")
    old_state = cluster.hosts[0].sealed_state
    client.send_mail(b"two")
    client.start(InProcessTransport(cluster.hosts[1]))
    client.send_mail(b"elsewhere")
    cluster.hosts[0].close()
    cluster.hosts[0] = cluster.start(old_state)  # host A restarts it from older state
    client.start(InProcessTransport(cluster.hosts[0]))
    with pytest.raises(EnclaveRollbackError):
        client.send_mail(b"three")


def test_replays_and_reorderings_are_refused_per_instance_and_change_nothing(
    cluster: Cluster,
) -> None:
    client = cluster.client()
    first, second, third = (client.seal(body) for body in (b"a", b"b", b"c"))
    host = cluster.hosts[0]
    host.deliver_mail(second.mail, "r")  # a gap: mail 0 went to another instance
    state = host.sealed_state
    with pytest.raises(MailReplayError):
        host.deliver_mail(second.mail, "r")
    with pytest.raises(MailReplayError):
        host.deliver_mail(first.mail, "r")  # older than one this instance took
    assert host.sealed_state == state
    assert _count(host) == b"1"
    host.deliver_mail(third.mail, "r")
    assert _count(host) == b"2"


def test_the_direct_and_the_cluster_streams_are_numbered_apart(cluster: Cluster) -> None:
    host = cluster.hosts[0]
    client = cluster.client()
    assert client.send_mail(b"to the cluster") is not None  # number 0 on the cluster's stream
    instance = host.enclave_instance_info.encryption_key
    direct = PostOffice(client.private_key, instance, "default")
    host.deliver_mail(direct.encrypt_mail(b"to this instance"), "r")  # number 0 again: its own
    assert _count(host) == b"2"
    direct.encrypt_mail(b"skipped")  # never delivered
    with pytest.raises(MailGapError):  # the direct stream still allows no gap
        host.deliver_mail(direct.encrypt_mail(b"late"), "r")


def test_a_tampered_key_spec_opens_nothing(cluster: Cluster) -> None:
    client = cluster.client()
    outgoing = client.seal(b"secret")
    spec = cluster.spec.canonical
    start = outgoing.mail.index(spec)
    looser = KeySpec("orders", MasterKeyType.DEVELOPMENT, " " + cluster.policy)
    # The host swaps in another spec (one space more in the policy: another key): the mail
    # is authenticated over its header, so no key opens it.
    swapped = outgoing.mail[:start] + looser.canonical + outgoing.mail[start + len(spec) :]
    swapped = swapped[: start - 4] + len(looser.canonical).to_bytes(4, "big") + swapped[start:]
    host = cluster.hosts[0]
    with pytest.raises(MailDecryptionError):
        host.deliver_mail(swapped, "r")
    flipped = bytearray(outgoing.mail)
    flipped[start + len(spec) - 1] ^= 1  # a byte of the policy: no longer a valid spec
    with pytest.raises(KdsError):
        host.deliver_mail(bytes(flipped), "r")
    assert _count(host) is None
    host.deliver_mail(outgoing.mail, "r")  # the real one still opens
    assert _count(host) == b"1"


def test_an_instance_that_fails_the_policy_gets_no_key_and_changes_nothing(
    kds: Kds, tmp_path: Path
) -> None:
    # The spec names another code hash: the KDS refuses these instances the key (403).
    strict = Cluster(kds, tmp_path / "member")
    try:
        spec = KeySpec("orders", MasterKeyType.DEVELOPMENT, "C:" + "ab" * 32 + " SEC:INSECURE")
        key = fetch_cluster_key(kds.url, spec, kds.constraint)
        client = EnclaveClient(strict.policy, cluster=key)
        client.start(InProcessTransport(strict.hosts[0]))
        with pytest.raises(MailRefusedError, match="does not meet the key's policy"):
            client.send_mail(b"for other enclaves only")
        assert _count(strict.hosts[0]) is None
        with pytest.raises(KdsError, match="does not meet the key's policy"):
            strict.hosts[0].deliver_mail(client.seal(b"again").mail, "r")
    finally:
        strict.close()


def test_an_enclave_without_a_kds_table_refuses_cluster_mail(
    cluster: Cluster, tmp_path: Path
) -> None:
    plain = _keeper(tmp_path / "plain", None, source=MEMBER, entry="Member")
    with EnclaveHost.load(plain).start(kds=cluster.configuration) as host:
        mail = cluster.client().seal(b"x").mail
        with pytest.raises(KdsError, match=r"no \[kds\] table"):
            host.deliver_mail(mail, "r")


STATELESS = """
from sanctorum import Enclave


class Echo(Enclave):
    def receive_mail(self, mail, routing_hint):
        self.post_mail(self.post_office(mail).encrypt_mail(mail.body), routing_hint)
"""


def test_a_stateless_member_needs_the_kds_only_for_cluster_mail(kds: Kds, tmp_path: Path) -> None:
    kds_code = kds.service.host.enclave_instance_info.code_hash
    echo = _keeper(
        tmp_path / "echo", kds_code, source=STATELESS, entry="Echo", persistent_map=False
    )
    with EnclaveHost.load(echo).start() as host:  # no state to seal: no KDS asked at start
        policy = f"C:{host.enclave_instance_info.code_hash} SEC:INSECURE"
        spec = KeySpec("echo", MasterKeyType.DEVELOPMENT, policy)
        client = EnclaveClient(policy, cluster=fetch_cluster_key(kds.url, spec, kds.constraint))
        client.start(InProcessTransport(host))
        mail = client.seal(b"x").mail
        with pytest.raises(KdsError, match=r"kds=KdsConfiguration\(url\)"):
            host.deliver_mail(mail, "r")
        host.restart()  # restart keeps the host's settings: still no KDS
    with EnclaveHost.load(echo).start(kds=KdsConfiguration(kds.url)) as host:
        client.start(InProcessTransport(host))
        answer = client.send_mail(b"hello")
        assert answer is not None
        assert answer.body == b"hello"


def test_a_web_host_without_a_kds_refuses_cluster_mail_and_logs_why(
    kds: Kds, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sanctorum.web")
    kds_code = kds.service.host.enclave_instance_info.code_hash
    echo = _keeper(
        tmp_path / "echo", kds_code, source=STATELESS, entry="Echo", persistent_map=False
    )
    service = EnclaveService(echo, EnclaveMode.MOCK, tmp_path / "state")  # no kds=
    service.start()
    running = serve(service)
    try:
        transport = WebTransport(running.url)
        info = EnclaveInstanceInfo.deserialize(transport.get_attestation())
        policy = f"C:{info.code_hash} SEC:INSECURE"
        spec = KeySpec("echo", MasterKeyType.DEVELOPMENT, policy)
        client = EnclaveClient(policy, cluster=fetch_cluster_key(kds.url, spec, kds.constraint))
        client.start(transport)
        with pytest.raises(MailRefusedError, match=r"kds=KdsConfiguration\(url\)"):
            client.send_mail(b"hello")
    finally:
        running.stop()
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "kds_refused"]
    assert "--kds-url" in record.getMessage()


def test_a_lying_host_cannot_hand_in_another_key(cluster: Cluster, kds: Kds) -> None:
    """The host hands the enclave KDS answers of its choosing: for another spec, for another
    instance, altered, or none at all. Each is refused, and nothing changes."""
    host = cluster.hosts[0]
    runtime: Any = host._platform.runtime  # type: ignore[attr-defined]
    mail = cluster.client().seal(b"x").mail
    with pytest.raises(KdsKeyRequiredError):
        runtime.deliver_mail(mail, "r")

    def answer(spec: KeySpec, requester: Any) -> bytes:
        body = {
            **spec.to_json(),
            "appAttestationReport": base64.b64encode(requester.serialize()).decode(),
        }
        return httpx.post(f"{kds.url}/private", json=body).content

    other_spec = KeySpec("other", MasterKeyType.DEVELOPMENT, cluster.policy)
    # (The KDS's cluster signature covers the spec: the pinned cluster refuses it first.)
    with pytest.raises(KdsError, match=r"another key spec|pinned KDS cluster key"):
        runtime.deliver_mail(mail, "r", answer(other_spec, host.enclave_instance_info))
    other_instance = cluster.hosts[1].enclave_instance_info
    with pytest.raises(KdsError, match="does not open with this enclave's key"):
        runtime.deliver_mail(mail, "r", answer(cluster.spec, other_instance))
    real = json.loads(answer(cluster.spec, host.enclave_instance_info))
    sealed = bytearray(base64.b64decode(real["encryptedPrivateKey"]))
    sealed[-1] ^= 1
    tampered = {**real, "encryptedPrivateKey": base64.b64encode(bytes(sealed)).decode()}
    with pytest.raises(KdsError):
        runtime.deliver_mail(mail, "r", json.dumps(tampered).encode())
    with pytest.raises(KdsError, match="not JSON"):
        runtime.deliver_mail(mail, "r", b"\xff")
    assert _count(host) is None
    runtime.deliver_mail(mail, "r", json.dumps(real).encode())
    assert _count(host) == b"1"


def test_a_client_checks_the_kds_before_sealing_anything(cluster: Cluster, kds: Kds) -> None:
    answer = httpx.post(f"{kds.url}/public", json=cluster.spec.to_json()).json()
    assert cluster_key_from_response(answer, cluster.spec, kds.constraint) == cluster.key
    with pytest.raises(KdsError, match="not one this requester trusts"):
        cluster_key_from_response(answer, cluster.spec, "C:" + "cd" * 32 + " SEC:INSECURE")
    swapped = {**answer, "publicKey": base64.b64encode(bytes(32)).decode()}
    with pytest.raises(KdsError, match="not signed by the attested KDS"):
        cluster_key_from_response(swapped, cluster.spec, kds.constraint)
    other = KeySpec("other", MasterKeyType.DEVELOPMENT, cluster.policy)
    with pytest.raises(KdsError, match="not signed by the attested KDS"):
        cluster_key_from_response(answer, other, kds.constraint)
    with pytest.raises(KdsError, match="could not reach the KDS"):
        fetch_cluster_key("http://127.0.0.1:9", cluster.spec, kds.constraint, timeout=1)
    with pytest.raises(KdsError, match=r"refused the public key of 'orders' \(404\)"):
        fetch_cluster_key(f"{kds.url}/elsewhere", cluster.spec, kds.constraint)
    with pytest.raises(KdsError, match="give the KDS's base URL"):
        fetch_cluster_key(f"{kds.url}/public", cluster.spec, kds.constraint)
    # The cluster key as sanctorum kds serve logs it, with 0x, raw: the same; else a KdsError.
    pin = answer["clusterKey"]
    for form in (pin, "0x" + pin.upper(), bytes.fromhex(pin)):
        assert cluster_key_from_response(answer, cluster.spec, kds.constraint, cluster_key=form)
    for bad in ("zz" * 32, pin[:-2], b"short"):
        with pytest.raises(KdsError, match="64 hex digits"):
            cluster_key_from_response(answer, cluster.spec, kds.constraint, cluster_key=bad)
    with pytest.raises(KdsError, match="the cluster_key given"):
        cluster_key_from_response(answer, cluster.spec, kds.constraint, cluster_key="ab" * 32)


def test_a_saved_cluster_client_is_refused_for_another_cluster(
    cluster: Cluster, tmp_path: Path
) -> None:
    path = tmp_path / "client.json"
    opened = EnclaveClient.open(path, cluster.policy, cluster=cluster.key)
    assert opened.cluster == cluster.key
    assert EnclaveClient.open(path).cluster == cluster.key
    other = KeySpec("x", MasterKeyType.CLUSTER, cluster.policy)
    elsewhere = ClusterKey(cluster.key.public_key, other.canonical)
    with pytest.raises(ClientStateError, match="another cluster"):
        EnclaveClient.open(path, cluster=elsewhere)
