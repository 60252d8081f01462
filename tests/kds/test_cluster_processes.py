"""Cluster mail end to end, as users run it: a KDS (`sanctorum kds serve`) and two web hosts
(`sanctorum host --kds-url`), each in its own process and each running an instance of the same
simulation enclave with state of its own; one client seals its requests to the cluster's key and
both hosts' instances open them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sanctorum import EnclaveClient, EnclaveInstanceInfo, WebTransport
from sanctorum.build import build
from sanctorum.common.keys import Ed25519PublicKey
from sanctorum.kds import KeySpec, MasterKeyType
from sanctorum.kds.client import fetch_cluster_key
from sanctorum.testing.servers import WebHostProcess
from tests.kds.test_cluster_mail import MEMBER


def _member_bundle(directory: Path, kds_code: str, cluster_key: str) -> Path:
    directory.mkdir()
    (directory / "member.py").write_text(MEMBER)
    (directory / "enclave.toml").write_text(
        '[enclave]\nname = "member"\nentry = "member:Member"\nproduct_id = 1\n'
        'revocation_level = 0\nsources = ["member.py"]\npersistent_map = true\n'
        "max_persistent_map_size = 65536\n"
        f'[kds]\nconstraint = "C:{kds_code} SEC:INSECURE"\ncluster_key = "{cluster_key}"\n'
        'policy_constraint = "SEC:INSECURE"\nuse_own_code_hash = true\n'
    )
    return build(directory, directory / "build").path


def _member_host(bundle: Path, state_dir: Path, kds_url: str) -> WebHostProcess:
    return WebHostProcess(bundle, "simulation", state_dir, None, "--kds-url", kds_url)


@pytest.fixture
def cluster(
    kds_process: tuple[str, str, str], tmp_path: Path
) -> Iterator[tuple[list[WebHostProcess], Path]]:
    url, kds_code, cluster_key = kds_process
    bundle = _member_bundle(tmp_path / "member", kds_code, cluster_key)
    hosts = [_member_host(bundle, tmp_path / f"host-{n}", url) for n in range(2)]
    try:
        yield hosts, bundle
    finally:
        for host in hosts:
            host.stop()


def test_two_web_hosts_open_one_clients_cluster_mail(
    kds_process: tuple[str, str, str], cluster: tuple[list[WebHostProcess], Path], tmp_path: Path
) -> None:
    kds_url, kds_code, cluster_key = kds_process
    hosts, bundle = cluster
    transports = [WebTransport(host.url) for host in hosts]
    code = EnclaveInstanceInfo.deserialize(transports[0].get_attestation()).code_hash
    policy = f"C:{code} SEC:INSECURE"
    spec = KeySpec("orders", MasterKeyType.CLUSTER, policy)
    key = fetch_cluster_key(
        kds_url,
        spec,
        f"C:{kds_code} SEC:INSECURE",
        cluster_key=Ed25519PublicKey(bytes.fromhex(cluster_key)),
    )
    client = EnclaveClient(policy, cluster=key)
    answers = []
    for number, body in ((0, b"one"), (1, b"two"), (0, b"three"), (1, b"four")):
        client.start(transports[number])  # the load balancer sends each request somewhere
        answer = client.send_mail(body)
        assert answer is not None
        answers.append(answer.body)
    # Each instance opened the mail that reached it, counting in its own state.
    assert answers == [b"one #1", b"two #1", b"three #2", b"four #2"]

    # The very same sealed bytes open on both hosts' instances (a host, or a load balancer
    # that retries, may deliver a request twice: a cluster applies it once per instance).
    mail = client.seal(b"to everyone").mail
    for host in hosts:
        response = httpx.post(
            f"{host.url}/deliver-mail",
            content=mail,
            headers={"Correlation-ID": client.correlation_id},
        )
        assert response.status_code == 200, response.text
    client.start(transports[0])
    first = client.poll_mail()
    assert first is not None
    assert first.body == b"to everyone #3"
    client.start(transports[1])
    assert client.poll_mail() is None  # the second answer to one request is dropped
    answer = client.send_mail(b"five")  # and no false rollback: its commit was heard of
    assert answer is not None
    assert answer.body == b"five #4"

    # A host restarts (a new instance, a new key): the client's requests need no new key, and
    # the new instance's replies are accepted once its attestation checks out.
    hosts[0].stop()
    hosts[0] = _member_host(bundle, tmp_path / "host-0", kds_url)
    transports[0] = WebTransport(hosts[0].url)
    client.start(transports[0])
    answer = client.send_mail(b"after the restart")
    assert answer is not None
    # Its state, sealed with its KDS key, was kept: instance 0 had counted 3 mails.
    assert answer.body == b"after the restart #4"
