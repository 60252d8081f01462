"""The vault sample: two enclaves of different code, each on its own web host, trusting each
other by signer and product id; the owner, a user and the courier as separate processes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sanctorum import (
    EnclaveCallError,
    EnclaveClient,
    EnclaveConstraint,
    EnclaveInstanceInfo,
    WebTransport,
)
from sanctorum.build import BuildResult, build, generate_key
from sanctorum.enclave.sealing import SIMULATION_SECRET_ENV
from sanctorum.testing.servers import WebHostProcess

SAMPLE = Path(__file__).resolve().parents[1]
SECRET = "correct horse battery staple"


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuildResult]:
    """The vault and the worker signed with one key; a worker signed with another."""
    keys = tmp_path_factory.mktemp("keys")
    ours, theirs = generate_key(keys / "ours.pem"), generate_key(keys / "theirs.pem")
    out = tmp_path_factory.mktemp("builds")
    return {
        "vault": build(SAMPLE / "vault", out / "vault", key=ours),
        "worker": build(SAMPLE / "worker", out / "worker", key=ours),
        "stranger": build(SAMPLE / "worker", out / "stranger", key=theirs),
    }


@pytest.fixture(scope="module")
def hosts(
    builds: dict[str, BuildResult], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, WebHostProcess]]:
    state = tmp_path_factory.mktemp("state")
    env = {**os.environ, SIMULATION_SECRET_ENV: str(state / "platform-secret")}
    started: dict[str, WebHostProcess] = {}
    try:
        for name, result in builds.items():
            started[name] = WebHostProcess(result.path, "simulation", state / name, env)
            started[name].__enter__()
        yield started
    finally:
        for host in started.values():
            host.__exit__(None, None, None)


def _run(script: str, *args: str, status: int = 0) -> str:
    done = subprocess.run(
        [sys.executable, str(SAMPLE / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, SIMULATION_SECRET_ENV: "unused-by-clients"},
    )
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    return done.stdout.strip()


def test_the_secret_reaches_only_the_worker_signed_by_the_vaults_key(
    hosts: dict[str, WebHostProcess], builds: dict[str, BuildResult], tmp_path: Path
) -> None:
    vault_url, worker_url = hosts["vault"].url, hosts["worker"].url
    vault_c, worker_c = builds["vault"].constraints["code"], builds["worker"].constraints["code"]
    owner, user = str(tmp_path / "owner"), str(tmp_path / "user")
    deposited = json.loads(
        _run("owner.py", vault_url, owner, "--constraint", vault_c, "deposit", SECRET)
    )
    assert deposited["deposited"] is True
    owner_key = deposited["owner"]
    waiting = _run("user.py", worker_url, user, "--constraint", worker_c, "sign", "hi", status=4)
    assert waiting.startswith("waiting: ")
    # A worker signed by another key is refused by the vault itself, even when the owner vouches
    # for it with its own constraint.
    stranger = hosts["stranger"].url
    stranger_c = builds["stranger"].constraints["code"]
    refused = _run(
        "owner.py",
        vault_url,
        owner,
        "release",
        stranger,
        "--worker-constraint",
        stranger_c,
        status=3,
    )
    assert json.loads(refused)["refused"].startswith("not a worker this vault trusts")
    released = _run(
        "owner.py", vault_url, owner, "release", worker_url, "--worker-constraint", worker_c
    )
    worker_key = json.loads(released)["released_to"]
    with WebTransport(worker_url) as transport:
        assert worker_key == _instance_key(transport.get_attestation())
    assert _run("courier.py", vault_url, worker_url) == "carried 1"
    signature = _run("user.py", worker_url, user, "sign", "pay 100 to bob", "--owner", owner_key)
    expected = hmac.new(SECRET.encode(), b"pay 100 to bob", hashlib.sha256).hexdigest()
    assert signature == f"{expected} owner {owner_key}"  # the owner can check it too
    someone_else = "00" * 32
    refused = _run("user.py", worker_url, user, "sign", "x", "--owner", someone_else, status=3)
    assert refused == f"refused: signed with the secret of another owner, {owner_key}"
    assert json.loads(_run("owner.py", vault_url, owner, "audit")) == {"released_to": [worker_key]}
    # Nobody else may use the vault.
    other = str(tmp_path / "other")
    answer = _run("owner.py", vault_url, other, "--constraint", vault_c, "audit", status=3)
    assert json.loads(answer) == {"refused": "only the vault's owner may use it"}


def _instance_key(attestation: bytes) -> str:
    return EnclaveInstanceInfo.deserialize(attestation).encryption_key.encoded.hex()


def test_a_secret_mailed_by_anyone_but_the_vault_is_not_taken(
    hosts: dict[str, WebHostProcess], builds: dict[str, BuildResult]
) -> None:
    """A client (or a host) that mails the worker a 'secret' naming the real vault's
    attestation is refused: the mail's sender is not the vault instance."""
    worker_c = EnclaveConstraint.parse(builds["worker"].constraints["code"])
    with WebTransport(hosts["vault"].url) as transport:
        vault_attestation = base64.b64encode(transport.get_attestation()).decode()
    forger = EnclaveClient(worker_c)
    with WebTransport(hosts["worker"].url) as transport:
        forger.start(transport)
        body = json.dumps({"secret": "forged", "vault": vault_attestation}).encode()
        with pytest.raises(EnclaveCallError, match="not sent by the vault it names"):
            forger.send_mail(body, topic="vault-release")
        reply = forger.send_mail(json.dumps({"sign": "x"}).encode(), topic="sign")
    assert reply is not None
    answer = json.loads(reply.body)
    forged = hmac.new(b"forged", b"x", hashlib.sha256).hexdigest()
    real = hmac.new(SECRET.encode(), b"x", hashlib.sha256).hexdigest()
    assert "waiting" in answer or answer["hmac"] == real  # whichever test ran first
    assert answer.get("hmac") != forged
