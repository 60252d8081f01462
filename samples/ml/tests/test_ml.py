"""The pooled-training sample: the enclave's rules (in every mode the run selects: in
simulation, numpy runs as a measured native dependency), and three parties as separate
processes over the real web host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from contributor import read_rows
from ml_enclave import COMMAND_TOPIC, MAX_PREDICTIONS, TRAINED_TOPIC

from sanctorum import EnclaveClient
from sanctorum.build import BuildResult
from sanctorum.enclave.sealing import SIMULATION_SECRET_ENV
from sanctorum.testing.servers import WebHostProcess

SAMPLE = Path(__file__).resolve().parents[1]
DATA = SAMPLE / "data"
CLINICS = ("clinic_a", "clinic_b", "clinic_c")
ANSWERS = {"waiting", "trained", "probabilities", "refused", "error"}


def _ask(client: EnclaveClient, command: object) -> dict[str, Any]:
    reply = client.send_mail(json.dumps(command).encode(), topic=COMMAND_TOPIC)
    assert reply is not None
    answer: dict[str, Any] = json.loads(reply.body)
    assert set(answer) <= ANSWERS, answer  # nothing else ever leaves: no rows, no weights
    return answer


def _training(clinic: str) -> dict[str, Any]:
    rows = read_rows(DATA / f"{clinic}.csv")
    return {"rows": [row[:-1] for row in rows], "labels": [int(row[-1]) for row in rows]}


def test_parties_train_one_model_and_only_contributors_get_predictions(
    enclave_client_factory: Callable[[], EnclaveClient],
) -> None:
    a, b, c, outsider = (enclave_client_factory() for _ in range(4))
    data = _training("clinic_a")
    assert _ask(a, {"train": data, "parties": 1}) == {
        "refused": "parties is a whole number from 2 to 10"
    }
    bad_rows: list[object] = [[], [[]], [[1, 2], [3]], [["1", 2]], [[True, 2]], "rows"]
    bad_rows += [[[float("nan"), 1]], [[10**400, 1]], [[1e308, 1]], [[1.0] * 33]]
    for rows in bad_rows:
        answer = _ask(a, {"train": {"rows": rows, "labels": [0]}, "parties": 3})
        assert answer["refused"].startswith("rows: "), rows
    for labels in ([0], [2] * 40, [True] * 40, "0" * 40):
        answer = _ask(a, {"train": {"rows": data["rows"], "labels": labels}, "parties": 3})
        assert answer == {"refused": "labels: one 0 or 1 for each row"}
    assert "error" in _ask(a, {"train": data["rows"], "parties": 3})
    assert "error" in _ask(a, {"status": True, "predict": []})
    assert _ask(a, {"train": data, "parties": 3}) == {"waiting": 1}
    assert _ask(a, {"train": data, "parties": 3}) == {"refused": "each party submits once"}
    assert _ask(a, {"predict": [[1.0, 2.0]]}) == {
        "refused": "the model is not trained yet",
        "waiting": 1,
    }
    assert _ask(outsider, {"predict": [[1.0, 2.0]]}) == {
        "refused": "only parties that contributed rows may ask"
    }
    assert _ask(b, {"train": _training("clinic_b"), "parties": 4}) == {
        "refused": "this model is for 3 parties"
    }
    wide = {"rows": [[1.0, 2.0, 3.0]], "labels": [1]}
    assert _ask(b, {"train": wide, "parties": 3})["refused"].startswith("rows: 1 to 2000 rows of 2")
    assert _ask(b, {"train": _training("clinic_b"), "parties": 3}) == {"waiting": 2}
    trained = _ask(c, {"train": _training("clinic_c"), "parties": 3})["trained"]
    assert trained["parties"] == 3
    assert trained["rows"] == 120
    assert trained["features"] == 2
    assert trained["training_accuracy"] >= 0.85
    for party in (a, b):
        notice = party.poll_mail()
        assert notice is not None
        assert notice.topic == TRAINED_TOPIC
        assert json.loads(notice.body) == {"trained": trained}
        assert _ask(party, {"status": True}) == {"trained": trained}
    assert _ask(outsider, {"train": data, "parties": 3}) == {
        "refused": "the model is trained; no more rows are taken"
    }
    # The pooled model generalises: fresh rows from the same rule are mostly labelled right.
    generator = np.random.default_rng(1)
    dose, marker = generator.uniform(0, 10, 500), generator.normal(0, 1, 500)
    truth = 1.5 * (dose - 5) + 2.0 * marker > 0
    fresh = [[float(x), float(y)] for x, y in zip(dose, marker, strict=True)]
    probabilities = np.array(_ask(b, {"predict": fresh})["probabilities"])
    assert np.mean((probabilities >= 0.5) == truth) >= 0.9
    # A budget of predictions per party bounds what the answers tell of the training rows.
    spend = MAX_PREDICTIONS - 500 - 1
    assert len(_ask(b, {"predict": [[1.0, 1.0]] * spend})["probabilities"]) == spend
    assert _ask(b, {"predict": [[1.0, 1.0]] * 2}) == {
        "refused": f"over the budget of {MAX_PREDICTIONS} predictions ({MAX_PREDICTIONS - 1} spent)"
    }
    assert len(_ask(b, {"predict": [[1.0, 1.0]]})["probabilities"]) == 1
    assert _ask(b, {"predict": [[1.0, 2.0, 3.0]]}) == {
        "refused": "predict: rows of 2 numbers of magnitude at most 1e+09"
    }


@pytest.fixture
def web_host(
    enclave_bundle: BuildResult, enclave_mode: str, tmp_path: Path
) -> Iterator[WebHostProcess]:
    env = {**os.environ, SIMULATION_SECRET_ENV: str(tmp_path / "platform-secret")}
    with WebHostProcess(enclave_bundle.path, enclave_mode, tmp_path / "state", env) as host:
        yield host


def _contributor(host: WebHostProcess, identity: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SAMPLE / "contributor.py"), host.url, str(identity), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=host.env,
    )


def _output(process: subprocess.Popen[str], status: int = 0) -> str:
    out, err = process.communicate(timeout=60)
    assert process.returncode == status, (process.returncode, out, err)
    return out.strip()


def test_three_clinics_as_processes_over_the_web_host(
    web_host: WebHostProcess, enclave_bundle: BuildResult, tmp_path: Path
) -> None:
    first_use = ("--constraint", enclave_bundle.constraints["code"])
    a, b, c = (tmp_path / clinic for clinic in CLINICS)

    def train(identity: Path, clinic: str) -> str:
        csv = str(DATA / f"{clinic}.csv")
        return _output(_contributor(web_host, identity, *first_use, "train", csv, "--parties", "3"))

    assert train(a, "clinic_a") == "waiting 1"
    waiting = _contributor(web_host, a, "status", "--wait", "30")  # clinic a waits in a process
    assert train(b, "clinic_b") == "waiting 2"
    summary = train(c, "clinic_c")
    assert summary.startswith("trained ")
    assert _output(waiting) == summary
    predictions = _output(_contributor(web_host, a, "predict", str(DATA / "patients.csv")))
    likely, unlikely, *_ = (float(line) for line in predictions.splitlines())
    assert likely > 0.9  # a high dose and marker
    assert unlikely < 0.1
    assert _output(_contributor(web_host, tmp_path / "outsider", *first_use, "status")) == summary
