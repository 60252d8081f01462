"""The intersection sample: the enclave's rules (in every mode the run selects), and two
parties as separate processes over the real web host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from psi_enclave import COMMAND_TOPIC, RESULT_TOPIC

from sanctorum import EnclaveClient
from sanctorum.build import BuildResult
from sanctorum.enclave.sealing import SIMULATION_SECRET_ENV
from sanctorum.testing.servers import WebHostProcess

SAMPLE = Path(__file__).resolve().parents[1]


def _ask(client: EnclaveClient, command: object) -> dict[str, Any]:
    reply = client.send_mail(json.dumps(command).encode(), topic=COMMAND_TOPIC)
    assert reply is not None
    answer: dict[str, Any] = json.loads(reply.body)
    return answer


def test_each_party_learns_the_shared_items_and_nothing_else(
    enclave_client_factory: Callable[[], EnclaveClient],
) -> None:
    alice, bob, eve = (enclave_client_factory() for _ in range(3))
    assert _ask(alice, {"result": True}) == {
        "refused": "only the two parties may ask for the result"
    }
    assert _ask(alice, {"submit": ["ann", "ben", "cat"]}) == {"waiting": True}
    assert _ask(alice, {"result": True}) == {"waiting": True}
    assert _ask(alice, {"submit": ["zed"]}) == {"refused": "each party submits once"}
    bad_items: list[object] = [[1, 2], "ann", [["x"]], ["x" * 257], ["a"] * 10_001]
    for items in bad_items:
        assert "refused" in _ask(bob, {"submit": items}), items
    bad_commands: list[object] = [{"submit": [], "result": True}, {"share": ["x"]}, []]
    for command in bad_commands:
        assert "error" in _ask(bob, command), command
    assert _ask(bob, {"submit": ["ben", "cat", "dan", "ben"]}) == {"shared": ["ben", "cat"]}
    notice = alice.poll_mail()  # the first party is told too, unasked
    assert notice is not None
    assert (notice.topic, json.loads(notice.body)) == (RESULT_TOPIC, {"shared": ["ben", "cat"]})
    assert _ask(alice, {"result": True}) == {"shared": ["ben", "cat"]}
    assert _ask(eve, {"submit": ["ann"]}) == {"refused": "two parties have submitted already"}
    assert _ask(eve, {"result": True}) == {"refused": "only the two parties may ask for the result"}
    assert eve.poll_mail() is None


@pytest.fixture
def web_host(
    enclave_bundle: BuildResult, enclave_mode: str, tmp_path: Path
) -> Iterator[WebHostProcess]:
    env = {**os.environ, SIMULATION_SECRET_ENV: str(tmp_path / "platform-secret")}
    with WebHostProcess(enclave_bundle.path, enclave_mode, tmp_path / "state", env) as host:
        yield host


def _party(host: WebHostProcess, identity: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SAMPLE / "party.py"), host.url, str(identity), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=host.env,
    )


def _output(process: subprocess.Popen[str], status: int = 0) -> str:
    out, err = process.communicate(timeout=60)
    assert process.returncode == status, (process.returncode, out, err)
    return out.strip()


def test_two_parties_as_processes_over_the_web_host(
    web_host: WebHostProcess, enclave_bundle: BuildResult, tmp_path: Path
) -> None:
    constraint = ("--constraint", enclave_bundle.constraints["code"])
    alice, bob, eve = (tmp_path / name for name in ("alice", "bob", "eve"))
    assert _output(_party(web_host, alice, *constraint, "submit", "ann", "ben", "cat")) == "waiting"
    waiting = _party(web_host, alice, "result", "--wait", "30")  # alice waits in a process
    assert _output(_party(web_host, bob, *constraint, "submit", "cat", "ben", "dan")) == (
        "shared: ben, cat"
    )
    assert _output(waiting) == "shared: ben, cat"
    refused = _party(web_host, eve, *constraint, "submit", "ann")
    assert _output(refused, status=3) == "refused: two parties have submitted already"
