"""Pooled model training: parties pool labelled rows; the enclave trains a logistic regression
on all of them with numpy and answers the contributors' predictions. No party, and not the
host, sees another party's rows or the model's weights.

Parties send JSON commands as mail (the clients here use ``COMMAND_TOPIC``):

``{"train": {"rows": [[X, ...], ...], "labels": [0 or 1, ...]}, "parties": N}``
    A party's training rows (numbers of magnitude at most ``MAX_MAGNITUDE``, each row as long
    as the first party's, at most ``MAX_ROWS``) and their labels, once. The first submission
    fixes N, how many parties take part (``MIN_PARTIES`` to ``MAX_PARTIES``), and the number of
    features. Until N have submitted the answer is ``{"waiting": K}``; the N-th submission
    trains the model and is answered ``{"trained": SUMMARY}``, and every other party is mailed
    the same on ``TRAINED_TOPIC``. No rows are taken after that.
``{"predict": [[X, ...], ...]}``
    Probabilities that each row's label is 1: ``{"probabilities": [P, ...]}``. Only parties that
    contributed rows may ask, for at most ``MAX_PREDICTIONS`` rows in all (every answer tells a
    little about the rows the model was trained on; the budget bounds how much).
``{"status": true}``
    ``{"waiting": K}`` or ``{"trained": SUMMARY}``.

SUMMARY is ``{"parties": N, "rows": R, "features": F, "training_accuracy": A}``: counts and the
share of all training rows the model labels right; nothing per party.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from sanctorum import Enclave, EnclaveMail
from sanctorum.common import Curve25519PublicKey

COMMAND_TOPIC = "ml"
TRAINED_TOPIC = "ml-trained"
MIN_PARTIES = 2
MAX_PARTIES = 10
MAX_ROWS = 2_000
MAX_FEATURES = 32
MAX_PREDICTIONS = 10_000
MAX_MAGNITUDE = 1e9  # far beyond any feature, and far from overflowing float64 sums of squares
PENALTY = 1e-3  # L2 regularisation: keeps the weights finite on separable data
_PARTY = "party:"
_SPENT = "spent:"
_SETUP = "setup"
_MODEL = "model"
_USAGE = 'a command is {"train": ..., "parties": N}, {"predict": [...]} or {"status": true}'


class PooledModelEnclave(Enclave):
    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        answer = self._answer(mail, routing_hint)
        office = self.post_office(mail)
        self.post_mail(office.encrypt_mail(json.dumps(answer).encode()), routing_hint)

    def _answer(self, mail: EnclaveMail, routing_hint: str | None) -> dict[str, Any]:
        try:
            command = json.loads(mail.body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return {"error": "a command is a JSON object"}
        if not isinstance(command, dict) or len(command) not in (1, 2):
            return {"error": "a command is a JSON object"}
        me = mail.authenticated_sender.encoded.hex()
        if command == {"status": True}:
            return self._status()
        if set(command) == {"predict"}:
            return self._predict(me, command["predict"])
        if set(command) == {"train", "parties"}:
            return self._train(me, command["train"], command["parties"], routing_hint)
        return {"error": _USAGE}

    # -- pooling the rows --------------------------------------------------------------------

    def _train(
        self, me: str, data: object, parties: object, routing_hint: str | None
    ) -> dict[str, Any]:
        setup = self._setup()
        if _MODEL in self.persistent_map:
            return {"refused": "the model is trained; no more rows are taken"}
        if type(parties) is not int or not MIN_PARTIES <= parties <= MAX_PARTIES:
            return {"refused": f"parties is a whole number from {MIN_PARTIES} to {MAX_PARTIES}"}
        if setup is not None and setup["parties"] != parties:
            return {"refused": f"this model is for {setup['parties']} parties"}
        if _PARTY + me in self.persistent_map:
            return {"refused": "each party submits once"}
        width = None if setup is None else setup["features"]
        if not isinstance(data, dict) or set(data) != {"rows", "labels"}:
            return {"error": 'train is {"rows": [[X, ...], ...], "labels": [0 or 1, ...]}'}
        rows, labels = _rows(data["rows"], width, MAX_ROWS), data["labels"]
        if rows is None:
            features = width or f"1 to {MAX_FEATURES}"
            return {
                "refused": f"rows: 1 to {MAX_ROWS} rows of {features} numbers, each of "
                f"magnitude at most {MAX_MAGNITUDE:g}"
            }
        if (
            not isinstance(labels, list)
            or len(labels) != len(rows)
            or not all(type(label) is int and label in (0, 1) for label in labels)
        ):
            return {"refused": "labels: one 0 or 1 for each row"}
        if setup is None:
            setup = {"parties": parties, "features": len(rows[0])}
            self.persistent_map[_SETUP] = json.dumps(setup).encode()
        record = {"hint": routing_hint, "rows": rows, "labels": labels}
        self.persistent_map[_PARTY + me] = json.dumps(record).encode()
        contributors = self._contributors()
        if len(contributors) < parties:
            return {"waiting": len(contributors)}
        summary = self._fit(contributors)
        for other, theirs in contributors.items():  # trained: everyone else is told
            if other != me:
                office = self.post_office(Curve25519PublicKey(bytes.fromhex(other)), TRAINED_TOPIC)
                notice = json.dumps({"trained": summary}).encode()
                self.post_mail(office.encrypt_mail(notice), theirs["hint"])
        return {"trained": summary}

    def _fit(self, contributors: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Logistic regression on every party's rows, by Newton's method on standardised
        features; the rows themselves are then dropped, and only the model kept."""
        x = np.array([row for c in contributors.values() for row in c["rows"]], dtype=np.float64)
        y = np.array([label for c in contributors.values() for label in c["labels"]], dtype=float)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0] = 1.0
        design = _design(x, mean, scale)
        weights = np.zeros(design.shape[1])
        penalty = PENALTY * np.eye(design.shape[1])
        penalty[0, 0] = 0.0  # the intercept is not penalised
        for _ in range(50):
            p = _sigmoid(design @ weights)
            gradient = design.T @ (p - y) + penalty @ weights
            hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty
            step = np.linalg.solve(hessian + 1e-9 * np.eye(len(weights)), gradient)
            weights -= step
            if np.max(np.abs(step)) < 1e-10:
                break
        accuracy = float(np.mean((_sigmoid(design @ weights) >= 0.5) == (y == 1)))
        summary = {
            "parties": len(contributors),
            "rows": len(y),
            "features": x.shape[1],
            "training_accuracy": round(accuracy, 4),
        }
        model = {"mean": mean.tolist(), "scale": scale.tolist(), "weights": weights.tolist()}
        self.persistent_map[_MODEL] = json.dumps({**model, "summary": summary}).encode()
        for party in contributors:  # the rows served their purpose; keep only who took part
            self.persistent_map[_PARTY + party] = b"{}"
        return summary

    # -- answering ---------------------------------------------------------------------------

    def _predict(self, me: str, data: object) -> dict[str, Any]:
        if _PARTY + me not in self.persistent_map:
            return {"refused": "only parties that contributed rows may ask"}
        stored = self.persistent_map.get(_MODEL)
        if stored is None:
            return {"refused": "the model is not trained yet", **self._status()}
        model = json.loads(stored)
        width = len(model["mean"])
        spent = int(self.persistent_map.get(_SPENT + me, b"0"))
        rows = _rows(data, width, MAX_PREDICTIONS)
        if rows is None:
            most = f"{MAX_MAGNITUDE:g}"
            return {"refused": f"predict: rows of {width} numbers of magnitude at most {most}"}
        if spent + len(rows) > MAX_PREDICTIONS:
            return {"refused": f"over the budget of {MAX_PREDICTIONS} predictions ({spent} spent)"}
        self.persistent_map[_SPENT + me] = str(spent + len(rows)).encode()
        x = np.array(rows, dtype=np.float64)
        design = _design(x, np.array(model["mean"]), np.array(model["scale"]))
        probabilities = _sigmoid(design @ np.array(model["weights"]))
        return {"probabilities": [round(float(p), 6) for p in probabilities]}

    def _status(self) -> dict[str, Any]:
        stored = self.persistent_map.get(_MODEL)
        if stored is not None:
            return {"trained": json.loads(stored)["summary"]}
        return {"waiting": len(self._contributors())}

    def _setup(self) -> dict[str, int] | None:
        stored = self.persistent_map.get(_SETUP)
        return None if stored is None else dict(json.loads(stored))

    def _contributors(self) -> dict[str, dict[str, Any]]:
        return {
            key[len(_PARTY) :]: json.loads(value)
            for key, value in self.persistent_map.items()
            if key.startswith(_PARTY)
        }


def _rows(data: object, width: int | None, limit: int) -> list[list[float]] | None:
    """``data`` as rows of ``width`` (or 1 to MAX_FEATURES) numbers within MAX_MAGNITUDE, or
    None."""
    if not isinstance(data, list) or not 0 < len(data) <= limit:
        return None
    width = width or (len(data[0]) if isinstance(data[0], list) else 0)
    if not 0 < width <= MAX_FEATURES:
        return None
    rows = []
    for row in data:
        if not isinstance(row, list) or len(row) != width:
            return None
        if not all(type(value) in (int, float) for value in row):  # not bool, not str
            return None
        try:
            converted = [float(value) for value in row]
        except OverflowError:  # an int too large for a float
            return None
        if not all(abs(value) <= MAX_MAGNITUDE for value in converted):  # NaN fails too
            return None
        rows.append(converted)
    return rows


def _design(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Standardised features with a leading column of ones (the intercept)."""
    return np.hstack([np.ones((len(x), 1)), (x - mean) / scale])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
    return result
