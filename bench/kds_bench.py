"""The KDS's ``/private`` against an honest floor, same run, load from another process (issue 13).

The candidate is ``sanctorum kds serve`` (the KDS enclave in simulation mode behind its REST
front), asked for a key by requesters whose attestation meets the key's policy. The floor is a
bare uvicorn ASGI app doing the least any KDS must do per request, with `cryptography` only:
parse the JSON, verify an Ed25519 signature over the requester's attestation (what checking
simulated evidence costs), derive the key (HKDF), seal it to the requester's key (ephemeral
X25519, one DH, HKDF, AES-GCM) and answer JSON. Both run in their own processes; the load comes
from ``load_generator.py`` in a third. At 1 connection the figure is the round trip (goal: at
most 2x the floor's); at 16, key requests per second with p50/p99, for information.
"""

from __future__ import annotations

import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from results import Figure, Report
from web_bench import _free_port, _load, _percentile, _wait

from sanctorum.attestation.instance_info import EnclaveInstanceInfo, key_binding
from sanctorum.attestation.mock import MockEvidenceProvider
from sanctorum.common.hashes import SHA256Hash
from sanctorum.common.keys import Curve25519PrivateKey, Ed25519PrivateKey

BENCH = "kds"
LEVELS = {1: 60, 16: 10}  # connections: requests each per round
ROUNDS = 7
GOAL = 2.0
APP = "bench.App"

_FLOOR_SERVER = r"""
import base64, json, os, sys, uvicorn
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

quoting = Ed25519PrivateKey.generate()
verifier = quoting.public_key()
master = os.urandom(32)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/health":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    request = json.loads(body)
    report = base64.b64decode(request["appAttestationReport"])
    signature = quoting.sign(report)  # stands for the quote's signature, made ahead in a real
    verifier.verify(signature, report)  # KDS; only the verify is the floor's cost
    spec = (request["name"] + request["masterKeyType"] + request["policyConstraint"]).encode()
    key = HKDF(hashes.SHA256(), 32, b"salt", spec).derive(master)
    ephemeral = X25519PrivateKey.generate()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(report[:32]))
    sealing = HKDF(hashes.SHA256(), 32, None, b"mail").derive(shared)
    sealed = AESGCM(sealing).encrypt(bytes(12), key, spec)
    answer = json.dumps({"encryptedPrivateKey": base64.b64encode(sealed).decode()}).encode()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(answer)).encode())],
    })
    await send({"type": "http.response.body", "body": answer})


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _serve(state_dir: Path, port: int) -> list[str]:
    return ["kds", "serve", "--state-dir", str(state_dir), "--port", str(port)]


def _requests(count: int) -> list[bytes]:
    """``/private`` bodies of requesters (mock evidence) the policy accepts."""
    provider = MockEvidenceProvider.for_class(APP, None)
    policy = f"C:{SHA256Hash.of(APP.encode())} SEC:INSECURE"
    bodies = []
    for _ in range(count):
        signing, encryption = Ed25519PrivateKey.generate(), Curve25519PrivateKey.generate()
        evidence = provider.produce(key_binding(signing.public_key, encryption.public_key))
        info = EnclaveInstanceInfo(
            signing.public_key, encryption.public_key, provider.evidence_type, evidence
        )
        report = base64.b64encode(info.serialize()).decode()
        bodies.append(
            json.dumps(
                {
                    "name": "bench",
                    "masterKeyType": "cluster",
                    "policyConstraint": policy,
                    "appAttestationReport": report,
                }
            ).encode()
        )
    return bodies


def report() -> Report:
    print(
        "KDS /private (simulation, behind `sanctorum kds serve`) vs a bare ASGI app doing the "
        f"least a KDS must; load from another process; {ROUNDS} rounds per level after a warm-up"
    )
    result = Report()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        kds_port, floor_port = _free_port(), _free_port()
        with (work / "kds.log").open("wb") as log:
            servers = [
                subprocess.Popen(
                    [sys.executable, "-m", "sanctorum", *_serve(work / "kds", kds_port)],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                ),
                subprocess.Popen(
                    [sys.executable, "-c", _FLOOR_SERVER, str(floor_port)],
                    stdout=subprocess.DEVNULL,
                ),
            ]
            try:
                for port in (kds_port, floor_port):
                    _wait(f"http://127.0.0.1:{port}")
                probe = httpx.post(f"http://127.0.0.1:{kds_port}/private", content=_requests(1)[0])
                if probe.status_code != 200:
                    raise RuntimeError(f"the KDS refused the bench's request: {probe.text}")
                for connections, per_round in LEVELS.items():
                    result.add(_level(connections, per_round, kds_port, floor_port, work))
            finally:
                for server in servers:
                    server.terminate()
                    server.wait()
    return result


def _level(connections: int, per_round: int, kds_port: int, floor_port: int, work: Path) -> Figure:
    bodies = _requests(connections * per_round)
    plan = [
        (bodies[number * per_round : (number + 1) * per_round], f"r{number}")
        for number in range(connections)
    ]
    targets = {"kds": kds_port, "floor": floor_port}
    rates: dict[str, list[float]] = {name: [] for name in targets}
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    for round_number in range(ROUNDS + 1):
        names = list(targets) if round_number % 2 else list(reversed(targets))
        for name in names:
            outcome = _load(targets[name], "/private", plan, work)
            if round_number == 0:
                continue  # warm-up
            rates[name].append(connections * per_round / float(outcome["seconds"]))  # type: ignore[arg-type]
            latencies[name].extend(outcome["latencies"])  # type: ignore[arg-type]
    print(f"  {connections:>2} connection(s)")
    for name in targets:
        print(
            f"    {name:5}  requests/s min {min(rates[name]):6.0f} median "
            f"{statistics.median(rates[name]):6.0f}   p50 "
            f"{_percentile(latencies[name], 0.5) * 1e3:6.2f} ms   p99 "
            f"{_percentile(latencies[name], 0.99) * 1e3:6.2f} ms"
        )
    ratio = statistics.median(f / k for k, f in zip(rates["kds"], rates["floor"], strict=True))
    if connections == 1:  # the round trip: time per request, kds / floor
        met = ratio <= GOAL
        print(f"    round trip, kds / floor: {ratio:.2f}x  {'met' if met else 'MISSED'} (≤{GOAL}x)")
        return Figure(
            BENCH,
            "kds/private/round-trip",
            1 / statistics.median(rates["kds"]),
            floor=1 / statistics.median(rates["floor"]),
            ratio=ratio,
            ratio_of="value/floor",
            goal=f"at most {GOAL:g}x a bare app verifying, deriving and sealing",
            met=met,
            min=1 / max(rates["kds"]),
            rounds=ROUNDS,
        )
    print(f"    requests/s, kds / floor: {1 / ratio:.0%} (for information)")
    return Figure(
        BENCH,
        f"kds/private/requests-per-second/{connections}-connections",
        statistics.median(rates["kds"]),
        floor=statistics.median(rates["floor"]),
        ratio=1 / ratio,
        ratio_of="value/floor",
        min=min(rates["kds"]),
        rounds=ROUNDS,
        unit="requests/s",
    )


if __name__ == "__main__":
    started = time.perf_counter()
    outcome = report()
    print(f"({time.perf_counter() - started:.0f} s)")
    sys.exit(0 if outcome.ok else 1)
