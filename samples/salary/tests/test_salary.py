"""The salary benchmark sample: the enclave's rules (in every mode the run selects), and three
employers as separate processes over the real web host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from salary_enclave import COMMAND_TOPIC, RESULT_TOPIC

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


def test_each_employer_learns_the_aggregate_and_its_own_standing_only(
    enclave_client_factory: Callable[[], EnclaveClient],
) -> None:
    acme, bolt, core, eve = (enclave_client_factory() for _ in range(4))
    assert _ask(acme, {"submit": [100], "employers": 2}) == {
        "refused": "employers is a whole number from 3 to 10000"
    }
    assert _ask(acme, {"submit": [50, 60, 70], "employers": 3}) == {"waiting": 1}
    assert _ask(acme, {"result": True}) == {"waiting": 1}  # nothing before all three
    assert _ask(acme, {"submit": [1], "employers": 3}) == {"refused": "each employer submits once"}
    assert _ask(bolt, {"submit": [80], "employers": 4}) == {
        "refused": "this benchmark is for 3 employers"
    }
    bad_salaries: list[object] = [[], [0], [-5], ["80"], [1.5], [True], "80"]
    for salaries in bad_salaries:
        assert "refused" in _ask(bolt, {"submit": salaries, "employers": 3}), salaries
    assert "error" in _ask(bolt, {"submit": [80]})
    assert "error" in _ask(bolt, {"result": True, "submit": [80]})
    assert _ask(eve, {"result": True}) == {"refused": "only employers that submitted may ask"}
    assert _ask(bolt, {"submit": [80, 90], "employers": 3}) == {"waiting": 2}
    everyone = {"employers": 3, "salaries": 8, "p25": 67.5, "median": 85.0, "p75": 102.5}
    everyone["mean"] = 85.0
    core_result = _ask(core, {"submit": [100, 110, 120], "employers": 3})
    assert core_result == {**everyone, "percentile": 75.0}  # 6 of 8 salaries below 110
    for client, percentile in ((acme, 12.5), (bolt, 50.0)):  # medians 60 and 85
        notice = client.poll_mail()
        assert notice is not None
        assert notice.topic == RESULT_TOPIC
        assert json.loads(notice.body) == {**everyone, "percentile": percentile}
        assert _ask(client, {"result": True}) == {**everyone, "percentile": percentile}
    assert _ask(eve, {"submit": [1], "employers": 3}) == {"refused": "the benchmark is complete"}
    assert eve.poll_mail() is None


@pytest.fixture
def web_host(
    enclave_bundle: BuildResult, enclave_mode: str, tmp_path: Path
) -> Iterator[WebHostProcess]:
    env = {**os.environ, SIMULATION_SECRET_ENV: str(tmp_path / "platform-secret")}
    with WebHostProcess(enclave_bundle.path, enclave_mode, tmp_path / "state", env) as host:
        yield host


def _employer(host: WebHostProcess, identity: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SAMPLE / "employer.py"), host.url, str(identity), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=host.env,
    )


def _output(process: subprocess.Popen[str], status: int = 0) -> str:
    out, err = process.communicate(timeout=60)
    assert process.returncode == status, (process.returncode, out, err)
    return out.strip()


def test_three_employers_as_processes_over_the_web_host(
    web_host: WebHostProcess, enclave_bundle: BuildResult, tmp_path: Path
) -> None:
    first_use = ("--constraint", enclave_bundle.constraints["code"])
    acme, bolt, core = (tmp_path / name for name in ("acme", "bolt", "core"))
    submit = ("submit", "--employers", "3")
    assert _output(_employer(web_host, acme, *first_use, *submit, "50", "60", "70")) == "waiting 1"
    waiting = _employer(web_host, acme, "result", "--wait", "30")  # acme waits in a process
    assert _output(_employer(web_host, bolt, *first_use, *submit, "80", "90")) == "waiting 2"
    core_result = json.loads(_output(_employer(web_host, core, *first_use, *submit, "100")))
    assert (core_result["median"], core_result["percentile"]) == (75.0, 83.3)
    # One of the six salaries (50) is below acme's median, 60.
    assert json.loads(_output(waiting))["percentile"] == 16.7
