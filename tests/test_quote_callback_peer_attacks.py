"""Attacks on attestation quotes, host callbacks during mail and enclave-to-enclave
verification, as a hostile host, client or other enclave would make them.

Each test asserts the secure behaviour (a specific error, state left as it was). They run in
mock and in simulation mode through the ``load`` fixture, unless the attack needs an object
only mock mode exposes (then it loads the class itself).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from behaviour_enclave import Peer, Recorder

from sanctorum import (
    AttestationQuote,
    EnclaveCallError,
    EnclaveConstraint,
    EnclaveHost,
    EnclaveInstanceInfo,
    EnclaveMode,
    InvalidConstraintError,
    InvalidEnclaveError,
    MailReplayError,
)
from sanctorum.attestation import MockConfiguration, MockEvidenceProvider, key_binding
from sanctorum.attestation.instance_info import MAX_EVIDENCE_SIZE, MAX_SERIALIZED_SIZE
from sanctorum.attestation.quote import encode_quote, quote_report_data
from sanctorum.attestation.simulated import SimulatedEvidenceProvider
from sanctorum.common import Curve25519PrivateKey, Ed25519PrivateKey
from sanctorum.common.codec import Writer
from sanctorum.mail import PostOffice
from sanctorum.web.service import EnclaveService

Load = Callable[[str], EnclaveHost]


@pytest.fixture
def host(load: Load) -> EnclaveHost:
    return load("Recorder").start()


def _office(host: EnclaveHost, topic: str = "default") -> PostOffice:
    return host.enclave_instance_info.create_post_office(Curve25519PrivateKey.generate(), topic)


def _bodies(host: EnclaveHost) -> list[str]:
    state: dict[str, Any] = json.loads(host.call_enclave(b"state") or b"{}")
    return [mail[0] for mail in state["mails"]]


def _quote(host: EnclaveHost, report_data: bytes) -> bytes:
    answer = host.call_enclave(b"quote " + report_data)
    assert answer is not None
    return answer


def _info_bytes(signing: bytes, encryption: bytes, evidence_type: str, evidence: bytes) -> bytes:
    """A serialized EnclaveInstanceInfo of the host's making (not checked on the way)."""
    return (
        Writer()
        .raw(b"SNCI")
        .u8(1)
        .raw(signing)
        .raw(encryption)
        .text16(evidence_type)
        .bytes32(evidence)
        .getvalue()
    )


# -- quotes -----------------------------------------------------------------------------------


def test_quote_of_host_chosen_key_binding_is_no_attestation_of_host_keys(
    host: EnclaveHost, load: Load
) -> None:
    """The host makes the enclave quote the key binding of keys the host holds, then tries to
    pass them off as the enclave's instance keys, to a client and to another enclave."""
    signing, encryption = Ed25519PrivateKey.generate(), Curve25519PrivateKey.generate()
    binding = key_binding(signing.public_key, encryption.public_key)
    quote = AttestationQuote.deserialize(_quote(host, binding))
    assert quote.report_data == binding  # the enclave did quote the host's bytes...
    assert quote.evidence  # ...but its evidence is over the domain-separated hash
    with pytest.raises(InvalidEnclaveError, match="key binding mismatch"):
        EnclaveInstanceInfo(
            signing.public_key, encryption.public_key, quote.evidence_type, quote.evidence
        )
    forged = _info_bytes(
        signing.public_key.encoded,
        encryption.public_key.encoded,
        quote.evidence_type,
        quote.evidence,
    )
    with pytest.raises(InvalidEnclaveError, match="key binding mismatch"):
        EnclaveInstanceInfo.deserialize(forged)
    # Another enclave of the same code refuses it too, inside itself.
    peer = load("Peer").start()
    with pytest.raises(EnclaveCallError, match="InvalidEnclaveError"):
        peer.call_enclave(b"trust " + forged)


def test_attestation_evidence_is_no_quote_of_any_report_data(host: EnclaveHost) -> None:
    info = host.enclave_instance_info
    binding = key_binding(info.data_signing_key, info.encryption_key)
    for report_data in (binding, bytes(64), hashlib.sha512(binding).digest()):
        serialized = encode_quote(report_data, info.evidence_type, info.evidence)
        with pytest.raises(InvalidEnclaveError, match="not made over its report data"):
            AttestationQuote.deserialize(serialized)
    # The domain separation: no 64 bytes make the quote's evidence carry a key binding.
    assert quote_report_data(binding) != binding


def test_quote_evidence_cannot_be_transplanted_between_quotes(host: EnclaveHost) -> None:
    first = AttestationQuote.deserialize(_quote(host, b"\x01" * 64))
    second = AttestationQuote.deserialize(_quote(host, b"\x02" * 64))
    for report_data, evidence in (
        (first.report_data, second.evidence),
        (second.report_data, first.evidence),
    ):
        with pytest.raises(InvalidEnclaveError, match="not made over its report data"):
            AttestationQuote.deserialize(encode_quote(report_data, first.evidence_type, evidence))


def test_quote_of_one_enclave_fails_the_constraint_of_another(
    host: EnclaveHost, load: Load
) -> None:
    quote = AttestationQuote.deserialize(_quote(host, bytes(64)))
    peer = load("Peer").start().enclave_instance_info
    assert quote.code_hash != peer.code_hash
    with pytest.raises(InvalidEnclaveError, match="fails the constraint"):
        EnclaveConstraint.parse(f"C:{peer.code_hash} SEC:INSECURE").check(quote)
    # Nor does an insecure quote meet a constraint that asks for a secure enclave.
    for level in ("SECURE", "STALE"):
        with pytest.raises(InvalidEnclaveError, match=f"fails SEC:{level}"):
            EnclaveConstraint.parse(f"C:{quote.code_hash} SEC:{level}").check(quote)


def test_every_truncation_of_a_quote_is_refused(host: EnclaveHost) -> None:
    serialized = _quote(host, hashlib.sha512(b"result").digest())
    for length in range(len(serialized)):
        with pytest.raises(InvalidEnclaveError):
            AttestationQuote.deserialize(serialized[:length])


def test_every_byte_flip_of_a_quote_is_refused_or_harmless(host: EnclaveHost, mode: str) -> None:
    report_data = hashlib.sha512(b"result").digest()
    serialized = _quote(host, report_data)
    accepted = 0
    for position in range(len(serialized)):
        damaged = bytearray(serialized)
        damaged[position] ^= 0x41
        try:
            quote = AttestationQuote.deserialize(bytes(damaged))
        except InvalidEnclaveError:
            continue
        # Only mock evidence is unsigned: its claims can be changed, never its report data.
        accepted += 1
        assert quote.report_data == report_data
    if mode == "simulation":
        assert accepted == 0  # every byte of simulated evidence is signed or bound


def test_oversized_and_malformed_quotes_are_refused(host: EnclaveHost) -> None:
    quote = AttestationQuote.deserialize(_quote(host, bytes(64)))
    serialized = quote.serialize()
    header = serialized[:69]  # magic, version, report data
    evidence_type = quote.evidence_type.encode()
    type_field = len(evidence_type).to_bytes(2, "big") + evidence_type
    cases: dict[str, object] = {
        "trailing bytes": serialized + b"\x00",
        "megabytes of trailing bytes": serialized + bytes(2 << 20),
        "evidence length over the limit": header
        + type_field
        + (MAX_EVIDENCE_SIZE + 1).to_bytes(4, "big"),
        "evidence over the limit": encode_quote(
            bytes(64), quote.evidence_type, bytes(MAX_EVIDENCE_SIZE + 1)
        ),
        "evidence length past the end": header + type_field + (1 << 31).to_bytes(4, "big"),
        "evidence type of 65 characters": encode_quote(bytes(64), "m" * 65, quote.evidence),
        "evidence type not UTF-8": header
        + b"\x00\x02\xff\xfe"
        + serialized[71 + len(evidence_type) :],
        "unknown evidence type": encode_quote(bytes(64), "tpm", quote.evidence),
        "empty evidence type": encode_quote(bytes(64), "", quote.evidence),
        "empty evidence": encode_quote(bytes(64), quote.evidence_type, b""),
        "version 2": serialized[:4] + b"\x02" + serialized[5:],
        "version 0": serialized[:4] + b"\x00" + serialized[5:],
        "an attestation's magic": b"SNCI" + serialized[4:],
        "empty": b"",
        "a string": serialized.decode("latin-1"),
        "None": None,
        "an int": 7,
        "a list": list(serialized),
    }
    accepted = []
    for name, data in cases.items():
        try:
            AttestationQuote.deserialize(cast(bytes, data))
        except InvalidEnclaveError:
            continue
        accepted.append(name)
    assert accepted == []
    for size in (0, 63, 65, 128):
        with pytest.raises(InvalidEnclaveError, match="64 bytes"):
            AttestationQuote(bytes(size), quote.evidence_type, quote.evidence)


def test_quote_evidence_under_another_evidence_type_is_refused(host: EnclaveHost) -> None:
    quote = AttestationQuote.deserialize(_quote(host, bytes(64)))
    for other in ("mock", "simulated", "dcap"):
        if other == quote.evidence_type:
            continue
        with pytest.raises(InvalidEnclaveError):
            AttestationQuote.deserialize(encode_quote(bytes(64), other, quote.evidence))
    # DCAP evidence that is not DCAP, with the verifier's own collateral: still refused.
    with pytest.raises(InvalidEnclaveError):
        AttestationQuote.deserialize(
            encode_quote(bytes(64), "dcap", quote.evidence), collateral={"x": "y"}
        )


def test_forged_quotes_claiming_the_enclaves_code_hash_fail_a_secure_constraint(
    host: EnclaveHost,
) -> None:
    """Mock evidence is unsigned and the simulated quoting key is public: the host can forge a
    quote of any report data for the enclave's code hash. Only SEC:INSECURE accepts them."""
    info = host.enclave_instance_info
    report_data = hashlib.sha512(b"a result the enclave never published").digest()
    mock = MockEvidenceProvider.for_class(
        "x", MockConfiguration(code_hash=info.code_hash, signer_hash=info.signer_hash)
    )
    simulated = SimulatedEvidenceProvider(info.code_hash, info.signer_hash, 1, 0)
    for provider in (mock, simulated):
        evidence = provider.produce(quote_report_data(report_data))
        forged = AttestationQuote.deserialize(
            encode_quote(report_data, provider.evidence_type, evidence)
        )
        assert forged.code_hash == info.code_hash
        for constraint in (f"C:{info.code_hash}", f"C:{info.code_hash} SEC:STALE"):
            with pytest.raises(InvalidEnclaveError, match="fails SEC:"):
                EnclaveConstraint.parse(constraint).check(forged)


def test_quote_ages_like_an_attestation(host: EnclaveHost) -> None:
    quote = AttestationQuote.deserialize(_quote(host, bytes(64)))
    constraint = EnclaveConstraint.parse(f"C:{quote.code_hash} SEC:INSECURE EXPIRE:PT60S")
    constraint.check(quote)
    later = quote.security_info.timestamp.replace(year=quote.security_info.timestamp.year + 1)
    with pytest.raises(InvalidEnclaveError, match="fails EXPIRE"):
        constraint.check(quote, now=later)


def test_quotes_of_the_wrong_size_fail_inside_the_enclave_and_it_goes_on(
    host: EnclaveHost,
) -> None:
    for size in (0, 1, 63, 65, 4096):
        with pytest.raises(EnclaveCallError, match=f"report data is 64 bytes, not {size}"):
            host.call_enclave(b"quote " + b"q" * size)
    assert host.call_enclave(b"abc") == b"cba"
    assert host.exit_status is None


def test_create_attestation_quote_refuses_what_is_not_bytes() -> None:
    """``bytes(64)`` is 64 zero bytes: an enclave that passes a length (or any int) by mistake
    must get a TypeError, not a quote over zeros it never meant to vouch for."""
    with EnclaveHost.load(Recorder).start() as host:
        enclave = host.mock_enclave
        quoted = []
        for wrong in (64, "x" * 64, None, 3.0):
            try:
                enclave.create_attestation_quote(cast(bytes, wrong))
            except TypeError:
                continue
            quoted.append(wrong)
        assert quoted == []


# -- host callbacks while mail is handled -----------------------------------------------------


def test_callback_failure_posts_nothing_and_consumes_the_mail(host: EnclaveHost) -> None:
    office = _office(host)
    mail = office.encrypt_mail(b"ask price")

    def callback(data: bytes) -> bytes:
        raise OSError("price feed down")

    with pytest.raises(EnclaveCallError, match="price feed down"):
        host.deliver_mail(mail, "r", callback=callback)
    assert host.mailbox is not None
    assert host.mailbox.pending("r") == 0
    # As docs/decisions.md says: the incoming number is consumed, so a replay is refused...
    with pytest.raises(MailReplayError):
        host.deliver_mail(mail, "r", callback=lambda data: b"1")
    # ...and the next mail is served, its reply in sequence for the client.
    host.deliver_mail(office.encrypt_mail(b"ask again"), "r", callback=lambda data: b"42")
    queued = host.mailbox.next_mail("r")
    assert queued is not None
    assert office.decrypt_mail(queued[1]).body == b"42"
    assert host.mailbox.pending("r") == 1
    assert _bodies(host) == ["ask price", "ask again"]


@pytest.mark.parametrize("answer", ["text", 7, [1, 2], {"a": b"b"}, memoryview(b"x"), 1.5])
def test_callback_answers_that_are_not_bytes_are_refused(host: EnclaveHost, answer: object) -> None:
    office = _office(host)
    with pytest.raises(EnclaveCallError, match="not bytes or None"):
        host.deliver_mail(office.encrypt_mail(b"ask x"), "r", callback=lambda data: answer)  # type: ignore[arg-type, return-value]
    assert host.mailbox is not None
    assert host.mailbox.pending("r") == 0
    host.deliver_mail(
        office.encrypt_mail(b"ask y"), "r", callback=lambda data: cast(bytes, bytearray(b"ok"))
    )
    queued = host.mailbox.next_mail("r")
    assert queued is not None
    assert office.decrypt_mail(queued[1]).body == b"ok"


def test_callback_redelivering_the_same_mail_is_refused_as_a_replay(host: EnclaveHost) -> None:
    office = _office(host)
    mail = office.encrypt_mail(b"ask twice")
    refused: list[str] = []

    def callback(data: bytes) -> bytes:
        try:
            host.deliver_mail(mail, "r", callback=callback)
        except MailReplayError as error:
            refused.append(type(error).__name__)
        return b"answered once"

    host.deliver_mail(mail, "r", callback=callback)
    assert refused == ["MailReplayError"]
    assert _bodies(host) == ["ask twice"]
    assert host.mailbox is not None
    assert host.mailbox.pending("r") == 1


def test_nested_mail_does_not_inherit_the_outer_calls_callback(host: EnclaveHost) -> None:
    office = _office(host)
    asked: list[bytes] = []
    nested_errors: list[str] = []

    def callback(data: bytes) -> bytes:
        asked.append(data)
        try:  # the host re-enters with mail, giving no callback for it
            host.deliver_mail(office.encrypt_mail(b"ask inner"), "inner")
        except EnclaveCallError as error:
            nested_errors.append(str(error))
        return b"outer answer"

    assert host.call_enclave(b"ask outer", callback=callback) == b"outer answer"
    assert asked == [b"outer"]
    assert len(nested_errors) == 1
    assert "needs a host callback" in nested_errors[0]
    assert host.mailbox is not None
    assert host.mailbox.pending("inner") == 0


def test_callbacks_of_concurrent_mail_never_overlap_in_a_single_threaded_enclave(
    host: EnclaveHost,
) -> None:
    inside = most_inside = 0
    lock = threading.Lock()
    errors: list[BaseException] = []

    def callback(data: bytes) -> bytes:
        nonlocal inside, most_inside
        with lock:
            inside += 1
            most_inside = max(most_inside, inside)
        time.sleep(0.05)
        with lock:
            inside -= 1
        return data

    def deliver(office: PostOffice, hint: str) -> None:
        try:
            host.deliver_mail(office.encrypt_mail(b"ask " + hint.encode()), hint, callback)
        except BaseException as error:  # reported below
            errors.append(error)

    offices = [_office(host) for _ in range(4)]
    threads = [
        threading.Thread(target=deliver, args=(office, f"r{index}"))
        for index, office in enumerate(offices)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert most_inside == 1
    assert host.mailbox is not None
    for index, office in enumerate(offices):
        queued = host.mailbox.next_mail(f"r{index}")
        assert queued is not None
        assert office.decrypt_mail(queued[1]).body == f"r{index}".encode()


def test_a_hanging_callback_keeps_other_entries_out_until_it_returns(host: EnclaveHost) -> None:
    release = threading.Event()
    started = threading.Event()
    office, other = _office(host), _office(host)

    def callback(data: bytes) -> bytes:
        started.set()
        release.wait(10)
        return b"late"

    first = threading.Thread(
        target=host.deliver_mail, args=(office.encrypt_mail(b"ask hold"), "a", callback)
    )
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=host.deliver_mail, args=(other.encrypt_mail(b"plain"), "b"))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # waiting outside the enclave, not running inside it
    release.set()
    first.join(10)
    second.join(10)
    assert not first.is_alive()
    assert not second.is_alive()
    assert _bodies(host) == ["ask hold", "plain"]


def test_a_callback_raising_base_exception_does_not_wedge_the_enclave(host: EnclaveHost) -> None:
    """A host callback interrupted by SystemExit or KeyboardInterrupt (Ctrl-C in the host
    application): the enclave must learn that the callback failed, and serve the next call."""
    office = _office(host)

    def callback(data: bytes) -> bytes:
        raise SystemExit(7)

    with pytest.raises(SystemExit):
        host.deliver_mail(office.encrypt_mail(b"ask x"), "r", callback=callback)
    answers: list[bytes | None] = []

    def call() -> None:
        try:
            answers.append(host.call_enclave(b"abc"))
        except Exception:
            answers.append(None)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(5)
    wedged = thread.is_alive()
    if wedged and host.process_id is not None:
        os.kill(host.process_id, signal.SIGKILL)  # this test's own enclave process
        thread.join(5)
    assert not wedged, "the enclave still waits for the callback's answer: every call hangs"
    assert answers == [b"cba"]


def test_web_host_callback_failure_stores_no_mail(tmp_path: Path) -> None:
    def callback(data: bytes) -> bytes:
        raise RuntimeError("backend unavailable")

    service = EnclaveService(Recorder, EnclaveMode.MOCK, tmp_path, host_callback=callback)
    service.start()
    try:
        office = service.host.enclave_instance_info.create_post_office(
            Curve25519PrivateKey.generate()
        )
        with pytest.raises(EnclaveCallError, match="backend unavailable"):
            service.deliver(office.encrypt_mail(b"ask x"), "r", None)
        assert service.store.next_mail("r", None) is None
        answer = service.deliver(office.encrypt_mail(b"plain"), "r", None)
        assert answer is not None
        assert office.decrypt_mail(answer[1]).body == b"PLAIN"
    finally:
        service.close()


# -- enclave to enclave -----------------------------------------------------------------------


def test_malformed_attestations_fail_inside_the_enclave_and_leave_its_peer(
    load: Load,
) -> None:
    alice, bob = load("Peer").start(), load("Peer").start()
    bob_info = bob.enclave_instance_info
    assert alice.call_enclave(b"trust " + bob_info.serialize()) == b"trusted"
    serialized = bob_info.serialize()
    recorder = load("Recorder").start()
    quote = AttestationQuote.deserialize(_quote(recorder, bytes(64)))
    attacks = {
        "empty": b"",
        "truncated by one": serialized[:-1],
        "truncated to the header": serialized[:5],
        "trailing byte": serialized + b"\x00",
        "over the size limit": serialized + bytes(MAX_SERIALIZED_SIZE),
        "evidence length over the limit": serialized[:69]
        + serialized[69:71]
        + serialized[71 : 71 + int.from_bytes(serialized[69:71], "big")]
        + (MAX_EVIDENCE_SIZE + 1).to_bytes(4, "big"),
        "a quote": quote.serialize(),
        "keys swapped": serialized[:5] + serialized[37:69] + serialized[5:37] + serialized[69:],
        "a quote's evidence for bob's keys": _info_bytes(
            bob_info.data_signing_key.encoded,
            bob_info.encryption_key.encoded,
            quote.evidence_type,
            quote.evidence,
        ),
        "an invalid curve point": serialized[:37] + b"\xff" * 32 + serialized[69:],
        "garbage": os.urandom(300),
    }
    outcomes = {}
    for name, attestation in attacks.items():
        try:
            outcomes[name] = repr(alice.call_enclave(b"trust " + attestation))
        except EnclaveCallError as error:
            outcomes[name] = str(error).split(":")[0]
    refused = "the enclave's receive_from_untrusted_host raised InvalidEnclaveError"
    assert outcomes == dict.fromkeys(attacks, refused)
    assert alice.exit_status is None
    # The peer it verified before is still the one it mails.
    assert alice.mailbox is not None
    assert bob.mailbox is not None
    assert bob.call_enclave(b"trust " + alice.enclave_instance_info.serialize()) == b"trusted"
    alice.call_enclave(b"send ping after the attacks")
    ping = alice.mailbox.next_mail("peer")
    assert ping is not None
    bob.deliver_mail(ping[1], "peer")
    assert json.loads(bob.call_enclave(b"heard") or b"") == ["ping after the attacks"]


def test_forged_insecure_attestation_of_host_keys_fails_a_secure_constraint() -> None:
    """The host forges mock evidence claiming the peer's code hash for keys it holds: only a
    constraint that accepts insecure enclaves takes it."""
    with EnclaveHost.load(Peer).start() as host:
        enclave = host.mock_enclave
        own = host.enclave_instance_info
        signing, encryption = Ed25519PrivateKey.generate(), Curve25519PrivateKey.generate()
        provider = MockEvidenceProvider.for_class(
            "x", MockConfiguration(code_hash=own.code_hash, signer_hash=own.signer_hash)
        )
        evidence = provider.produce(key_binding(signing.public_key, encryption.public_key))
        forged = _info_bytes(
            signing.public_key.encoded, encryption.public_key.encoded, "mock", evidence
        )
        for constraint in (
            f"C:{own.code_hash}",
            f"C:{own.code_hash} SEC:STALE",
            f"S:{own.signer_hash} PROD:1",
        ):
            with pytest.raises(InvalidEnclaveError, match="fails SEC:"):
                enclave.verify_enclave(forged, constraint)


@pytest.mark.parametrize(
    "constraint",
    [
        "",
        "garbage",
        "C:nothex",
        "SEC:INSECURE",
        "C:" + "AB" * 32 + " SEC:NONE",
        "C:" + "AB" * 32 + " PROD:99999999",
        "C:" + "AB" * 32 + " EXPIRE:PT0S",
        "C:" + "AB" * 32 + " " * (64 * 1024),
        b"C:" + b"AB" * 32 + b" SEC:INSECURE",
        None,
        42,
        ["C:" + "AB" * 32],
    ],
    ids=[
        "empty",
        "garbage",
        "bad hash",
        "no hash",
        "bad level",
        "bad product",
        "zero expiry",
        "oversized",
        "bytes",
        "None",
        "int",
        "list",
    ],
)
def test_verify_enclave_refuses_malformed_constraints(constraint: object) -> None:
    with EnclaveHost.load(Peer).start() as host:
        attestation = host.enclave_instance_info.serialize()
        with pytest.raises(InvalidConstraintError):
            host.mock_enclave.verify_enclave(attestation, cast(str, constraint))


@pytest.mark.parametrize(
    "attestation", ["text", None, 7, bytearray(b"SNCI"), memoryview(b"")], ids=repr
)
def test_verify_enclave_refuses_attestations_that_are_not_bytes(attestation: object) -> None:
    with EnclaveHost.load(Peer).start() as host:
        constraint = f"C:{host.enclave_instance_info.code_hash} SEC:INSECURE"
        with pytest.raises(InvalidEnclaveError):
            host.mock_enclave.verify_enclave(cast(bytes, attestation), constraint)


@pytest.mark.parametrize(
    "destination",
    [
        SimpleNamespace(encryption_key=Curve25519PrivateKey.generate().public_key),
        b"\x09" * 32,
        "peer",
        None,
    ],
    ids=["an unverified object with an encryption_key", "raw bytes", "a string", "None"],
)
def test_post_office_refuses_a_destination_that_is_not_a_key_mail_or_attestation(
    destination: object,
) -> None:
    with EnclaveHost.load(Peer).start() as host, pytest.raises(TypeError):
        host.mock_enclave.post_office(cast(EnclaveInstanceInfo, destination), "peers")


def test_post_office_refuses_an_attestation_quote_as_destination() -> None:
    with EnclaveHost.load(Peer).start() as host:
        quote = AttestationQuote.deserialize(host.mock_enclave.create_attestation_quote(bytes(64)))
        with pytest.raises(TypeError):
            host.mock_enclave.post_office(cast(EnclaveInstanceInfo, quote), "peers")


def test_post_office_for_a_verified_peer_seals_to_its_key() -> None:
    with EnclaveHost.load(Peer).start() as alice, EnclaveHost.load(Peer).start() as bob:
        info = alice.mock_enclave.verify_enclave(
            bob.enclave_instance_info.serialize(),
            f"C:{bob.enclave_instance_info.code_hash} SEC:INSECURE",
        )
        office = alice.mock_enclave.post_office(info, "peers")
        assert office.destination == bob.enclave_instance_info.encryption_key
        assert office is alice.mock_enclave.post_office(info.encryption_key, "peers")
