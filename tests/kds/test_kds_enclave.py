"""The KDS enclave (mock mode) and the checks a requester makes of its answers: keys for
entitled enclaves only, answers that cannot be altered, redirected or replayed."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from sanctorum import EnclaveHost, KdsError, SHA256Hash
from sanctorum.attestation.constraint import EnclaveConstraint
from sanctorum.attestation.evidence import EvidenceClaims, register_verifier, verify_evidence
from sanctorum.attestation.instance_info import EnclaveInstanceInfo, key_binding
from sanctorum.attestation.mock import MockEvidenceProvider
from sanctorum.common.keys import Curve25519PrivateKey, Ed25519PrivateKey, Ed25519PublicKey
from sanctorum.common.mode import EnclaveMode
from sanctorum.kds import KeySpec, MasterKeyType
from sanctorum.kds.enclave import KdsEnclave
from sanctorum.kds.protocol import (
    front_request,
    open_private_response,
    split_front_answer,
    verify_public_response,
)

APP = "tests.kds.App"
APP_CODE = SHA256Hash.of(APP.encode())


class Requester:
    """An enclave instance asking for keys: its attestation, and the key that opens what the
    KDS seals to it (mock evidence, or ``evidence_type`` of a test's own)."""

    def __init__(self, name: str = APP, evidence_type: str | None = None) -> None:
        self.key = Curve25519PrivateKey.generate()
        signing = Ed25519PrivateKey.generate()
        binding = key_binding(signing.public_key, self.key.public_key)
        provider = MockEvidenceProvider.for_class(name, None)
        evidence = provider.produce(binding)
        self.info = EnclaveInstanceInfo(
            signing.public_key,
            self.key.public_key,
            evidence_type or provider.evidence_type,
            evidence,
        )

    @property
    def report(self) -> str:
        return base64.b64encode(self.info.serialize()).decode()


def _release_mock(evidence: bytes, at: datetime | None) -> EvidenceClaims:
    """Mock evidence that claims release mode: what a release enclave's attestation says."""
    return replace(verify_evidence("mock", evidence, at), mode=EnclaveMode.RELEASE)


register_verifier("test-release", _release_mock)


@pytest.fixture
def kds() -> Any:
    host = EnclaveHost.load(KdsEnclave).start()
    yield host
    host.close()


def _ask(kds: EnclaveHost, path: str, body: object) -> tuple[int, dict[str, Any]]:
    answer = kds.call_enclave(front_request(path, json.dumps(body).encode()))
    assert answer is not None
    status, content = split_front_answer(answer)
    return status, json.loads(content)


def _constraint(kds: EnclaveHost) -> EnclaveConstraint:
    return EnclaveConstraint.parse(f"C:{kds.enclave_instance_info.code_hash} SEC:INSECURE")


SPEC = KeySpec("persistence", MasterKeyType.CLUSTER, f"C:{APP_CODE} SEC:INSECURE")


def test_an_entitled_enclave_gets_the_key_whose_public_half_anyone_can_have(
    kds: EnclaveHost,
) -> None:
    status, public = _ask(kds, "/public", SPEC.to_json())
    assert status == 200
    public_key = verify_public_response(public, SPEC, _constraint(kds))
    requester = Requester()
    status, private = _ask(
        kds, "/private", {**SPEC.to_json(), "appAttestationReport": requester.report}
    )
    assert status == 200
    key = open_private_response(private, SPEC, _constraint(kds), requester.key).key
    assert Curve25519PrivateKey(key).public_key == public_key
    # Another instance of the same code gets the same key: data moves between them.
    other = Requester()
    _, again = _ask(kds, "/private", {**SPEC.to_json(), "appAttestationReport": other.report})
    assert open_private_response(again, SPEC, _constraint(kds), other.key).key == key


def test_the_master_keys_survive_a_restart_and_differ_between_kds_instances(
    kds: EnclaveHost,
) -> None:
    _, before = _ask(kds, "/public", SPEC.to_json())
    kds.restart()
    _, after = _ask(kds, "/public", SPEC.to_json())
    assert verify_public_response(after, SPEC, _constraint(kds)) == verify_public_response(
        before, SPEC, _constraint(kds)
    )
    with EnclaveHost.load(KdsEnclave).start() as another:  # its own master keys
        _, theirs = _ask(another, "/public", SPEC.to_json())
        assert verify_public_response(theirs, SPEC, _constraint(another)) != (
            verify_public_response(after, SPEC, _constraint(kds))
        )


def test_an_enclave_that_fails_the_policy_gets_403_and_no_key(kds: EnclaveHost) -> None:
    stranger = Requester("tests.kds.Stranger")
    status, body = _ask(
        kds, "/private", {**SPEC.to_json(), "appAttestationReport": stranger.report}
    )
    assert status == 403
    assert set(body) == {"reason"}
    assert "does not meet the key's policy" in body["reason"]


def test_a_release_enclave_is_refused_the_development_master_key(kds: EnclaveHost) -> None:
    release = Requester(evidence_type="test-release")
    development = KeySpec("k", MasterKeyType.DEVELOPMENT, f"C:{APP_CODE} SEC:INSECURE")
    status, body = _ask(
        kds, "/private", {**development.to_json(), "appAttestationReport": release.report}
    )
    assert (status, "never given a key of the development" in body["reason"]) == (403, True)
    status, _ = _ask(kds, "/private", {**SPEC.to_json(), "appAttestationReport": release.report})
    assert status == 200  # the cluster type is for release enclaves


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (b"/public\nnot json", "not JSON"),
        (b"/public\n" + b"[" * 100_000, "not JSON"),
        (b"/public\n[]", "JSON object"),
        (b"not a request", "unknown request"),
        (b"/secret\n{}", "unknown request"),
        (front_request("/public", json.dumps({"name": "k"}).encode()), "masterKeyType"),
        (
            front_request("/private", json.dumps(SPEC.to_json()).encode()),
            "appAttestationReport is a base64 string, not missing",
        ),
        (
            front_request(
                "/private", json.dumps({**SPEC.to_json(), "appAttestationReport": "%%"}).encode()
            ),
            "not valid base64",
        ),
        (
            front_request(
                "/private", json.dumps({**SPEC.to_json(), "appAttestationReport": "AAAA"}).encode()
            ),
            "does not verify",
        ),
    ],
)
def test_malformed_requests_get_400_and_the_kds_keeps_serving(
    kds: EnclaveHost, request_: bytes, reason: str
) -> None:
    answer = kds.call_enclave(request_)
    assert answer is not None
    status, content = split_front_answer(answer)
    assert status == 400
    assert reason in json.loads(content)["reason"]
    assert _ask(kds, "/public", SPEC.to_json())[0] == 200


def test_a_requester_refuses_a_kds_that_fails_its_kds_constraint(kds: EnclaveHost) -> None:
    _, public = _ask(kds, "/public", SPEC.to_json())
    elsewhere = EnclaveConstraint.parse(f"C:{SHA256Hash.of(b'another KDS')} SEC:INSECURE")
    with pytest.raises(KdsError, match="not one this requester trusts"):
        verify_public_response(public, SPEC, elsewhere)
    requester = Requester()
    _, private = _ask(kds, "/private", {**SPEC.to_json(), "appAttestationReport": requester.report})
    with pytest.raises(KdsError, match="not one this requester trusts"):
        open_private_response(private, SPEC, elsewhere, requester.key)


def test_an_answer_for_another_spec_is_refused(kds: EnclaveHost) -> None:
    other = KeySpec("other", MasterKeyType.CLUSTER, SPEC.policy_constraint)
    _, public = _ask(kds, "/public", other.to_json())
    with pytest.raises(KdsError, match="not signed by the attested KDS for this key spec"):
        verify_public_response(public, SPEC, _constraint(kds))
    requester = Requester()
    _, private = _ask(
        kds, "/private", {**other.to_json(), "appAttestationReport": requester.report}
    )
    with pytest.raises(KdsError, match="for another key spec"):
        open_private_response(private, SPEC, _constraint(kds), requester.key)


def test_a_tampered_or_redirected_answer_is_refused(kds: EnclaveHost) -> None:
    _, public = _ask(kds, "/public", SPEC.to_json())
    forged_key = base64.b64encode(Curve25519PrivateKey.generate().public_key.encoded).decode()
    with pytest.raises(KdsError, match="not signed"):
        verify_public_response({**public, "publicKey": forged_key}, SPEC, _constraint(kds))
    requester, eavesdropper = Requester(), Requester()
    _, private = _ask(kds, "/private", {**SPEC.to_json(), "appAttestationReport": requester.report})
    sealed = bytearray(base64.b64decode(private["encryptedPrivateKey"]))
    sealed[-5] ^= 1
    tampered = {**private, "encryptedPrivateKey": base64.b64encode(bytes(sealed)).decode()}
    with pytest.raises(KdsError, match="does not open"):
        open_private_response(tampered, SPEC, _constraint(kds), requester.key)
    # An answer for one instance, replayed to another (a restarted one has new keys): refused.
    with pytest.raises(KdsError, match="does not open"):
        open_private_response(private, SPEC, _constraint(kds), eavesdropper.key)


def test_a_key_sealed_by_anyone_but_the_attested_kds_is_refused(kds: EnclaveHost) -> None:
    """The host swaps in a mail it sealed itself to the requester, with the right envelope."""
    requester = Requester()
    _, private = _ask(kds, "/private", {**SPEC.to_json(), "appAttestationReport": requester.report})
    office = requester.info.create_post_office(Curve25519PrivateKey.generate(), "kds")
    forged = office.encrypt_mail(bytes(32), SPEC.canonical)
    swapped = {**private, "encryptedPrivateKey": base64.b64encode(forged).decode()}
    with pytest.raises(KdsError, match="not sealed by the attested KDS"):
        open_private_response(swapped, SPEC, _constraint(kds), requester.key)


def test_answers_are_signed_by_a_cluster_key_that_names_the_master_keys(
    kds: EnclaveHost,
) -> None:
    """Another KDS of the same code meets the KDS constraint, but has its own master keys and
    so its own cluster key: a requester that pins the cluster key refuses its answers."""
    _, public = _ask(kds, "/public", SPEC.to_json())
    pinned = Ed25519PublicKey(bytes.fromhex(public["clusterKey"]))
    verify_public_response(public, SPEC, _constraint(kds), cluster_key=pinned)
    requester = Requester()
    request = {**SPEC.to_json(), "appAttestationReport": requester.report}
    _, private = _ask(kds, "/private", request)
    key = open_private_response(private, SPEC, _constraint(kds), requester.key, cluster_key=pinned)
    kds.restart()  # the same master keys, the same cluster key
    _, again = _ask(kds, "/public", SPEC.to_json())
    assert again["clusterKey"] == public["clusterKey"]
    with EnclaveHost.load(KdsEnclave).start() as rogue:
        _, theirs = _ask(rogue, "/private", request)
        assert open_private_response(theirs, SPEC, _constraint(rogue), requester.key) != key
        with pytest.raises(KdsError, match="pinned KDS cluster key"):
            open_private_response(
                theirs, SPEC, _constraint(rogue), requester.key, cluster_key=pinned
            )
        _, their_public = _ask(rogue, "/public", SPEC.to_json())
        with pytest.raises(KdsError, match="pinned KDS cluster key"):
            verify_public_response(their_public, SPEC, _constraint(rogue), cluster_key=pinned)
    # A cluster signature moved to an answer for another requester does not verify either.
    other = Requester()
    _, other_answer = _ask(
        kds, "/private", {**SPEC.to_json(), "appAttestationReport": other.report}
    )
    forged = {**other_answer, "clusterSignature": private["clusterSignature"]}
    with pytest.raises(KdsError, match="pinned KDS cluster key"):
        open_private_response(forged, SPEC, _constraint(kds), other.key, cluster_key=pinned)
