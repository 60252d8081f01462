"""Attacks on the KDS (security review): a hostile requester, a hostile host carrying an
enclave's key request, a hostile KDS host and operator. A refused attack is a passing test that
checks the error and that nothing was given; a test that fails is a finding (see the review)."""

from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from sanctorum import EnclaveHost, EnclaveMode, KdsError, SealedStateError, SHA256Hash
from sanctorum.attestation.constraint import EnclaveConstraint
from sanctorum.attestation.instance_info import EnclaveInstanceInfo, key_binding
from sanctorum.attestation.mock import MockConfiguration, MockEvidenceProvider
from sanctorum.build import build
from sanctorum.common.errors import MailError
from sanctorum.common.keys import Curve25519PrivateKey, Ed25519PrivateKey
from sanctorum.host import KdsConfiguration
from sanctorum.host.platform import MockPlatform
from sanctorum.kds import KeySpec, MasterKeyType, derive_spec_key
from sanctorum.kds.access import PERSISTENCE_KEY_NAME
from sanctorum.kds.enclave import KdsEnclave
from sanctorum.kds.protocol import front_request, open_private_response, split_front_answer
from sanctorum.kds.server import DEFAULT_MAX_BODY_SIZE, kds_project
from sanctorum.mail.format import open_mail
from tests.kds.test_kds_enclave import APP_CODE, SPEC
from tests.kds.test_kds_enclave import Requester as _Requester
from tests.kds.test_kds_server import Kds

ATTACKER = "tests.kds.Attacker"
ATTACKER_CODE = SHA256Hash.of(ATTACKER.encode())
VICTIM_POLICY = SPEC.policy_constraint  # "C:<victim code> SEC:INSECURE"


class Requester(_Requester):
    """test_kds_enclave's requester, or one claiming ``code_hash`` (mock evidence)."""

    def __init__(
        self,
        name: str = "tests.kds.App",
        evidence_type: str | None = None,
        code_hash: SHA256Hash | None = None,
    ) -> None:
        super().__init__(name, evidence_type)
        if code_hash is not None:
            signing = Ed25519PrivateKey.generate()
            provider = MockEvidenceProvider.for_class(name, MockConfiguration(code_hash=code_hash))
            binding = key_binding(signing.public_key, self.key.public_key)
            self.info = EnclaveInstanceInfo(
                signing.public_key, self.key.public_key, "mock", provider.produce(binding)
            )


@pytest.fixture
def kds() -> Iterator[EnclaveHost]:
    host = EnclaveHost.load(KdsEnclave).start()
    yield host
    host.close()


def _raw(kds: EnclaveHost, path: str, body: str) -> tuple[int, dict[str, Any]]:
    """Ask with a body given as JSON text (so it may hold duplicate keys)."""
    answer = kds.call_enclave(front_request(path, body.encode()))
    assert answer is not None
    status, content = split_front_answer(answer)
    return status, json.loads(content)


def _ask(kds: EnclaveHost, path: str, body: object) -> tuple[int, dict[str, Any]]:
    return _raw(kds, path, json.dumps(body))


def _constraint(kds: EnclaveHost) -> EnclaveConstraint:
    return EnclaveConstraint.parse(f"C:{kds.enclave_instance_info.code_hash} SEC:INSECURE")


def _master_keys(kds: EnclaveHost) -> dict[str, bytes]:
    """What only the KDS enclave should hold (read here through mock mode's open memory)."""
    platform = kds._platform
    assert isinstance(platform, MockPlatform)
    enclave = platform.enclave
    assert isinstance(enclave, KdsEnclave)
    return {kind.value: enclave._master_key(kind) for kind in MasterKeyType}


def _victim_key(kds: EnclaveHost) -> bytes:
    victim = Requester()
    status, answer = _ask(
        kds, "/private", {**SPEC.to_json(), "appAttestationReport": victim.report}
    )
    assert status == 200
    return open_private_response(answer, SPEC, _constraint(kds), victim.key).key


# -- a requester that does not meet the policy ----------------------------------------------


def _spec_json(policy: str, kind: str = "cluster", name: str = "persistence") -> str:
    return (
        f'"name": {json.dumps(name)}, "masterKeyType": {json.dumps(kind)}, '
        f'"policyConstraint": {json.dumps(policy)}'
    )


ATTACKER_POLICY = f"C:{ATTACKER_CODE} SEC:INSECURE"


@pytest.mark.parametrize(
    ("fields", "status", "reason"),
    [
        # Duplicate keys: JSON's last one wins, for the check and the key alike.
        (
            _spec_json(VICTIM_POLICY) + f', "policyConstraint": "{ATTACKER_POLICY}"',
            200,
            None,
        ),
        (_spec_json(ATTACKER_POLICY) + f', "policyConstraint": "{VICTIM_POLICY}"', 403, "policy"),
        # A policy both meet: another spec, another key.
        (_spec_json(f"C:{APP_CODE} C:{ATTACKER_CODE} SEC:INSECURE"), 200, None),
        # The victim's policy spelled otherwise (lower case, other spacing): still the
        # victim's code, so refused.
        (_spec_json(VICTIM_POLICY.lower()), 403, "policy"),
        (_spec_json("  " + VICTIM_POLICY.replace(" ", "\t") + "\n"), 403, "policy"),
        # Unicode that upper-cases to a term (long s -> S, dotless i -> I): parsed, but another key.
        (_spec_json(f"\u017f:{SHA256Hash(bytes(32))} PROD:1 SEC:\u0131nsecure"), 200, None),
        (_spec_json(VICTIM_POLICY + "\x00"), 400, "policy constraint is not valid"),
        (_spec_json(VICTIM_POLICY, "Cluster"), 400, "masterKeyType must be one of"),
        (_spec_json(VICTIM_POLICY, " cluster"), 400, "masterKeyType must be one of"),
        (_spec_json(VICTIM_POLICY, name="persistence\u200b"), 400, "printable"),
        # Extra fields are ignored: they neither widen the check nor change the key.
        (
            _spec_json(ATTACKER_POLICY) + ', "masterKey": "AAAA", "requester": "tests.kds.App"',
            200,
            None,
        ),
        ('"name": "persistence", "masterKeyType": "cluster"', 400, "policyConstraint"),
    ],
)
def test_json_tweaks_never_give_an_outsider_the_victims_key(
    kds: EnclaveHost, fields: str, status: int, reason: str | None
) -> None:
    victim_key = _victim_key(kds)
    attacker = Requester(ATTACKER)
    body = "{" + fields + f', "appAttestationReport": "{attacker.report}"}}'
    got, answer = _raw(kds, "/private", body)
    assert got == status, answer
    if reason is not None:
        assert set(answer) == {"reason"}
        assert reason in answer["reason"]
        return
    spec = KeySpec.from_json(json.loads(body))  # what JSON's own rules make of the body
    key = open_private_response(answer, spec, _constraint(kds), attacker.key).key
    assert key != victim_key
    assert key == derive_spec_key(_master_keys(kds)["cluster"], spec)


def test_a_captured_attestation_of_the_victim_gives_a_key_only_the_victim_opens(
    kds: EnclaveHost,
) -> None:
    victim, attacker = Requester(), Requester(ATTACKER)
    status, answer = _ask(
        kds, "/private", {**SPEC.to_json(), "appAttestationReport": victim.report}
    )
    assert status == 200  # the KDS answers: but sealed to the victim's attested key
    with pytest.raises(KdsError, match="does not open with this enclave's key"):
        open_private_response(answer, SPEC, _constraint(kds), attacker.key)
    with pytest.raises(MailError):
        open_mail(attacker.key, base64.b64decode(answer["encryptedPrivateKey"]))
    # The victim's evidence with the attacker's encryption key swapped in: does not verify.
    forged = bytearray(victim.info.serialize())
    victim_public = victim.key.public_key.encoded
    at = bytes(forged).index(victim_public)
    forged[at : at + len(victim_public)] = attacker.key.public_key.encoded
    status, answer = _ask(
        kds,
        "/private",
        {**SPEC.to_json(), "appAttestationReport": base64.b64encode(bytes(forged)).decode()},
    )
    assert status == 400
    assert "appAttestationReport does not verify" in answer["reason"]


@pytest.mark.parametrize("kind", ["development", "DEVELOPMENT", "development "])
def test_a_release_enclave_gets_no_development_key_however_it_is_spelled(
    kds: EnclaveHost, kind: str
) -> None:
    release = Requester(evidence_type="test-release")
    body = "{" + _spec_json(VICTIM_POLICY, kind) + f', "appAttestationReport": "{release.report}"}}'
    status, answer = _raw(kds, "/private", body)
    assert set(answer) == {"reason"}
    assert (status, "never given a key" in answer["reason"]) == (403, True) or (
        status == 400 and "masterKeyType" in answer["reason"]
    )
    # Nor through a duplicate key: the last one (development) is what is checked.
    body = (
        "{"
        + _spec_json(VICTIM_POLICY)
        + ', "masterKeyType": "development"'
        + f', "appAttestationReport": "{release.report}"}}'
    )
    assert _raw(kds, "/private", body)[0] == 403


# -- the host carrying the answer --------------------------------------------------------------


_SOURCE = """
from sanctorum import Enclave


class Keeper(Enclave):
    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        if data:
            self.persistent_map["text"] = data
            return None
        return self.persistent_map["text"]
"""
_names = itertools.count()


def _keeper(
    directory: Path,
    kds_code: SHA256Hash | None,
    cluster_key: str = "",
    source: str = _SOURCE,
    entry: str = "Keeper",
    persistent_map: bool = True,
) -> type[Any]:
    """A mock enclave class (``entry`` in ``source``) whose enclave.toml has a [kds] table
    naming a KDS (or none), its cluster key pinned if given."""
    name = f"attack_keeper_{next(_names)}"
    directory.mkdir()
    (directory / f"{name}.py").write_text(source)
    table = (
        ""
        if kds_code is None
        else f'[kds]\nconstraint = "C:{kds_code} SEC:INSECURE"\n'
        + (
            'policy_constraint = "SEC:INSECURE"\nuse_own_code_hash = true\n'
            if persistent_map
            else ""
        )
        + (f'cluster_key = "{cluster_key}"\n' if cluster_key else "")
    )
    (directory / "enclave.toml").write_text(
        f'[enclave]\nname = "k"\nentry = "{name}:{entry}"\nproduct_id = 1\n'
        f'revocation_level = 0\nsources = ["{name}.py"]\n'
        f"persistent_map = {str(persistent_map).lower()}\n"
        f"max_persistent_map_size = 4096\n{table}"
    )
    spec = importlib.util.spec_from_file_location(name, directory / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return getattr(module, entry)  # type: ignore[no-any-return]


class HostileHost:
    """Carries the enclave's key request as it likes: ``answer(request body) -> bytes``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.requests: list[bytes] = []
        self.answer: Callable[[bytes], bytes] = lambda body: b""
        monkeypatch.setattr("sanctorum.host.host.kds_fetcher", lambda configuration: self._fetch)

    def _fetch(self, body: bytes) -> bytes:
        self.requests.append(body)
        return self.answer(body)


def _carry(kds: EnclaveHost) -> Callable[[bytes], bytes]:
    """The honest carrier: the request to ``kds``'s /private, its answer back."""

    def carry(body: bytes) -> bytes:
        return json.dumps(_ask(kds, "/private", json.loads(body))[1]).encode()

    return carry


KDS_URL = KdsConfiguration("http://kds.invalid", timeout=1)


@pytest.fixture
def hostile(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileHost]:
    yield HostileHost(monkeypatch)
    for name in [name for name in sys.modules if name.startswith("attack_keeper_")]:
        del sys.modules[name]


def test_a_fresh_enclave_pinned_to_a_cluster_refuses_the_hosts_own_kds(
    kds: EnclaveHost, hostile: HostileHost, tmp_path: Path
) -> None:
    """The host carries a fresh enclave's request to a KDS of the same code that it runs
    itself: the answer meets the KDS constraint, but not the pinned cluster key."""
    _, public = _ask(kds, "/public", SPEC.to_json())
    keeper = _keeper(tmp_path / "app", kds.enclave_instance_info.code_hash, public["clusterKey"])
    with EnclaveHost.load(KdsEnclave).start() as rogue:
        hostile.answer = _carry(rogue)
        with pytest.raises(KdsError, match="not signed by the pinned KDS cluster key"):
            EnclaveHost.load(keeper).start(kds=KDS_URL).close()
    hostile.answer = _carry(kds)  # the cluster it is pinned to: it starts
    with EnclaveHost.load(keeper).start(kds=KDS_URL) as host:
        host.call_enclave(b"sealed with the cluster's key")


def test_state_sealed_under_one_kds_does_not_open_under_another(
    kds: EnclaveHost, hostile: HostileHost, tmp_path: Path
) -> None:
    keeper = _keeper(tmp_path / "app", kds.enclave_instance_info.code_hash)
    hostile.answer = _carry(kds)
    with EnclaveHost.load(keeper).start(kds=KDS_URL) as host:
        host.call_enclave(b"secret")
        state = host.sealed_state
    with EnclaveHost.load(KdsEnclave).start() as rogue:
        hostile.answer = _carry(rogue)
        with pytest.raises(SealedStateError, match="does not open"):
            EnclaveHost.load(keeper).start(sealed_state=state, kds=KDS_URL)


def _answer_for_another_instance(kds: EnclaveHost, body: bytes) -> bytes:
    """A valid answer for another instance of the same enclave (its own keys)."""
    request = json.loads(body)
    asking = EnclaveInstanceInfo.deserialize(base64.b64decode(request["appAttestationReport"]))
    other = Requester(evidence_type="mock", code_hash=asking.code_hash)
    request["appAttestationReport"] = other.report
    return json.dumps(_ask(kds, "/private", request)[1]).encode()


def _answer_for_another_spec(kds: EnclaveHost, body: bytes) -> bytes:
    """Sealed to this very enclave, by the real KDS: but the key of another spec it meets."""
    request = json.loads(body)
    request["name"] = "not-" + PERSISTENCE_KEY_NAME
    status, answer = _ask(kds, "/private", request)
    assert status == 200
    return json.dumps(answer).encode()


def _refused_with_a_valid_answer(kds: EnclaveHost, body: bytes) -> bytes:
    answer = json.loads(_carry(kds)(body))
    return json.dumps({**answer, "reason": "a 200 that says no"}).encode()


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (lambda kds, body: b"", "not JSON"),
        (lambda kds, body: b"\xff\xfe{}", "not JSON"),
        (lambda kds, body: b"[" * 200_000, "not JSON"),
        (lambda kds, body: b'{"a": 1e999999, "b": NaN}', "kdsAttestationReport is a base64"),
        (lambda kds, body: b"null", "not a JSON object"),
        (lambda kds, body: b'"reason"', "not a JSON object"),
        (lambda kds, body: b'{"reason": 5}', "kdsAttestationReport is a base64 string"),
        (lambda kds, body: b'{"reason": "go away"}', "refused this enclave.*: go away"),
        (_refused_with_a_valid_answer, "refused this enclave.*a 200 that says no"),
        (
            lambda kds, body: b'{"kdsAttestationReport": "' + b"A" * 20_000_000 + b'"}',
            "over 1048576 characters",
        ),
        (
            lambda kds, body: json.dumps(
                {**json.loads(_carry(kds)(body)), "encryptedPrivateKey": "A" * 4000}
            ).encode(),
            "does not open",
        ),
        (_answer_for_another_instance, "does not open with this enclave's key"),
        (_answer_for_another_spec, "for another key spec"),
    ],
)
def test_whatever_the_host_answers_the_enclave_stops_with_a_kds_error(
    kds: EnclaveHost,
    hostile: HostileHost,
    tmp_path: Path,
    answer: Callable[[EnclaveHost, bytes], bytes],
    problem: str,
) -> None:
    keeper = _keeper(tmp_path / "app", kds.enclave_instance_info.code_hash)
    hostile.answer = lambda body: answer(kds, body)
    host = EnclaveHost.load(keeper)
    with pytest.raises(KdsError, match=problem):
        host.start(kds=KDS_URL)
    assert len(hostile.requests) == 1
    assert host.sealed_state is None  # nothing was sealed, with any key
    host.close()
    # The KDS itself is unharmed.
    assert _ask(kds, "/public", SPEC.to_json())[0] == 200


def test_an_answer_replayed_from_the_enclaves_previous_start_is_refused(
    kds: EnclaveHost, hostile: HostileHost, tmp_path: Path
) -> None:
    keeper = _keeper(tmp_path / "app", kds.enclave_instance_info.code_hash)
    answers: list[bytes] = []

    def record(body: bytes) -> bytes:
        answers.append(_carry(kds)(body))
        return answers[-1]

    hostile.answer = record
    with EnclaveHost.load(keeper).start(kds=KDS_URL) as host:
        host.call_enclave(b"secret")
        state = host.sealed_state
    hostile.answer = lambda body: answers[0]
    with pytest.raises(KdsError, match="does not open with this enclave's key"):
        EnclaveHost.load(keeper).start(sealed_state=state, kds=KDS_URL)


def test_the_host_cannot_make_a_kds_enclave_use_the_platform_key(
    kds: EnclaveHost, hostile: HostileHost, tmp_path: Path
) -> None:
    keeper = _keeper(tmp_path / "app", kds.enclave_instance_info.code_hash)
    plain = _keeper(tmp_path / "plain", None)  # same signer and product id, no [kds]
    with pytest.raises(KdsError, match=r"kds=KdsConfiguration\(url\)"):
        EnclaveHost.load(keeper).start()
    assert hostile.requests == []
    # State sealed with the platform key does not open in the [kds] enclave, nor the reverse.
    with EnclaveHost.load(plain).start() as host:
        host.call_enclave(b"platform")
        platform_state = host.sealed_state
    hostile.answer = _carry(kds)
    with pytest.raises(SealedStateError, match="does not open"):
        EnclaveHost.load(keeper).start(sealed_state=platform_state, kds=KDS_URL)
    with EnclaveHost.load(keeper).start(kds=KDS_URL) as host:
        host.call_enclave(b"kds")
        kds_state = host.sealed_state
    with pytest.raises(SealedStateError, match="does not open"):
        EnclaveHost.load(plain).start(sealed_state=kds_state)


# -- the KDS's master keys -----------------------------------------------------------------


def test_no_answer_holds_or_gives_away_a_master_key(
    kds: EnclaveHost, caplog: pytest.LogCaptureFixture
) -> None:
    masters = _master_keys(kds)
    assert masters["development"] != masters["cluster"]
    spec = KeySpec("k", MasterKeyType.DEVELOPMENT, f"C:{APP_CODE} SEC:INSECURE")
    requester = Requester()
    answers = [
        kds.call_enclave(front_request(path, json.dumps(body).encode()))
        for path, body in [
            ("/public", SPEC.to_json()),
            ("/public", spec.to_json()),
            ("/private", {**SPEC.to_json(), "appAttestationReport": requester.report}),
            ("/private", {**spec.to_json(), "appAttestationReport": requester.report}),
            ("/private", {**SPEC.to_json(), "appAttestationReport": "AAAA"}),
            ("/master-key/cluster", {}),
            ("/public", {"name": "master-key/cluster"}),
        ]
    ]
    everything = b"".join(answer or b"" for answer in answers) + caplog.text.encode()
    for master in masters.values():
        for form in (master, master.hex().encode(), base64.b64encode(master)):
            assert form not in everything
    # What the requester gets is the spec's key, not a master key.
    opened = open_private_response(
        json.loads(split_front_answer(answers[2] or b"")[1]), SPEC, _constraint(kds), requester.key
    ).key
    assert opened not in masters.values()


def test_an_enclave_of_the_kds_signer_cannot_read_the_kds_master_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The KDS's persistent map is sealed with the SIGNER policy, and `kds serve` signs the KDS
    with the public dummy key, product id 1 (the defaults of every simulation build): another
    enclave of that signer and product opens the KDS's sealed state on its machine. The master
    keys inside are sealed again to the KDS's code hash, so it reads only ciphertext."""
    monkeypatch.setenv("SANCTORUM_SIMULATION_SECRET_FILE", str(tmp_path / "machine"))
    kds_bundle = build(kds_project(), tmp_path / "kds-build").path
    project = tmp_path / "reader"
    project.mkdir()
    (project / "reader.py").write_text(
        "from sanctorum import Enclave\n\n\nclass Reader(Enclave):\n"
        "    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:\n"
        "        return self.persistent_map[data.decode()]\n"
    )
    (project / "enclave.toml").write_text(
        '[enclave]\nname = "reader"\nentry = "reader:Reader"\nproduct_id = 1\n'
        'revocation_level = 0\nsources = ["reader.py"]\npersistent_map = true\n'
        "max_persistent_map_size = 65536\n"
    )
    reader_bundle = build(project, tmp_path / "reader-build").path
    with EnclaveHost.load(kds_bundle, "simulation").start() as kds:
        _, public = _ask(kds, "/public", SPEC.to_json())
        state = kds.sealed_state
    stolen: bytes | None = None
    try:
        with EnclaveHost.load(reader_bundle, "simulation").start(sealed_state=state) as reader:
            stolen = reader.call_enclave(b"master-key/cluster")
    except SealedStateError:
        pass  # what should happen: only the KDS's own code opens its state
    if stolen is not None:  # it reads only what is sealed again to the KDS's own code
        for start in range(len(stolen) - 31):
            candidate = stolen[start : start + 32]
            derived = Curve25519PrivateKey(derive_spec_key(candidate, SPEC)).public_key.encoded
            assert base64.b64encode(derived).decode() != public["publicKey"], (
                "another enclave of the KDS's signer read the KDS's cluster master key"
            )


# -- denial of service ---------------------------------------------------------------------


def test_the_kds_keeps_no_state_per_requester(kds: EnclaveHost) -> None:
    """Anyone who meets a policy of their own choosing (any mock attestation meets
    ``C:<its own code> SEC:INSECURE``) can ask for keys without end: the KDS keeps nothing per
    requester (its answers are sealed by post offices it does not keep)."""
    platform = kds._platform
    assert isinstance(platform, MockPlatform)
    own = KeySpec("mine", MasterKeyType.CLUSTER, ATTACKER_POLICY)
    before = len(platform.runtime._post_offices)
    for _ in range(200):
        attacker = Requester(ATTACKER)
        status, _ = _ask(
            kds, "/private", {**own.to_json(), "appAttestationReport": attacker.report}
        )
        assert status == 200
    assert len(platform.runtime._post_offices) - before < 10


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Kds]:
    running = Kds(KdsEnclave, tmp_path / "kds", EnclaveMode.MOCK, DEFAULT_MAX_BODY_SIZE)
    yield running
    running.stop()


def _chunks(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * 65536
        sent += 65536


@pytest.mark.parametrize(
    ("content", "headers", "status", "reason"),
    [
        (b"{" + b" " * (2 << 20) + b"}", {}, 413, "over the limit"),
        (b"[" * 500_000 + b"]" * 500_000, {}, 400, "not JSON"),
        (b"[" * 5_000, {}, 400, "not JSON"),
        (b'{"a": ' * 990 + b"1" + b"}" * 990, {}, 400, ""),
        (b'{"name": ' + b"9" * 900_000 + b"}", {}, 400, "not JSON"),
        (b'{"name": 1e999, "masterKeyType": NaN}', {}, 400, "name is a string"),
        (b'{"name": "' + "\u00e9".encode() * 500_000 + b'"}', {}, 400, ""),
        (b"\xff\xfe", {}, 400, "not JSON"),
        (b"[]", {}, 400, "JSON object"),
    ],
)
def test_hostile_bodies_get_a_reason_and_the_kds_keeps_serving(
    front: Kds, content: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    for path in ("/public", "/private"):
        answer = httpx.post(f"{front.url}{path}", content=content, headers=headers, timeout=30)
        assert answer.status_code == status, answer.text
        assert set(answer.json()) == {"reason"}
        assert reason in answer.json()["reason"]
    assert httpx.post(f"{front.url}/public", json=SPEC.to_json()).status_code == 200


def test_a_huge_declared_length_is_refused_at_once(front: Kds) -> None:
    port = int(front.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            b"POST /private HTTP/1.1\r\nHost: kds\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1099511627776\r\n\r\n{}"
        )
        head = b""
        while b"over the limit" not in head and len(head) < 65536:
            received = connection.recv(65536)
            if not received:
                break
            head += received
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b"over the limit" in head
    assert httpx.post(f"{front.url}/public", json=SPEC.to_json()).status_code == 200


def test_a_streamed_body_over_the_limit_is_cut_off(front: Kds) -> None:
    answer = httpx.post(f"{front.url}/private", content=_chunks(64 << 20), timeout=30)
    assert answer.status_code == 413
    assert httpx.post(f"{front.url}/public", json=SPEC.to_json()).status_code == 200


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (b"", "not JSON"),
        (b"[" * 200_000, "not JSON"),
        (b'{"kdsAttestationReport": "' + b"A" * 30_000_000 + b'"}', "over 1048576 characters"),
        (b'{"reason": "no"}', "refused this enclave its persistence key: no"),
    ],
)
def test_a_simulation_enclave_survives_what_the_host_answers(
    hostile: HostileHost,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    answer: bytes,
    problem: str,
) -> None:
    """The same through the simulation boundary: the answer crosses as a frame to the enclave
    process, which stops with a KdsError of its own, not a crash."""
    monkeypatch.setenv("SANCTORUM_SIMULATION_SECRET_FILE", str(tmp_path / "machine"))
    project = tmp_path / "app"
    project.mkdir()
    (project / "keeper.py").write_text(_SOURCE)
    (project / "enclave.toml").write_text(
        '[enclave]\nname = "keeper"\nentry = "keeper:Keeper"\nproduct_id = 1\n'
        'revocation_level = 0\nsources = ["keeper.py"]\npersistent_map = true\n'
        f'max_persistent_map_size = 4096\n[kds]\nconstraint = "C:{"AB" * 32} SEC:INSECURE"\n'
        'policy_constraint = "SEC:INSECURE"\nuse_own_code_hash = true\n'
    )
    bundle = build(project, tmp_path / "build").path
    hostile.answer = lambda body: answer
    host = EnclaveHost.load(bundle, "simulation")
    with pytest.raises(KdsError, match=problem):
        host.start(kds=KDS_URL)
    assert len(hostile.requests) == 1
    assert host.sealed_state is None
    host.close()
