"""The persistent map, sealed state and rollback detection, in mock and simulation mode."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sanctorum import (
    EnclaveCallError,
    EnclaveClient,
    EnclaveHost,
    EnclaveLoadError,
    EnclaveRollbackError,
    InProcessTransport,
    MockConfiguration,
    PersistentMapFullError,
    SealedStateError,
    SHA256Hash,
)
from sanctorum.host import MailCommand, StoreSealedState

Load = Callable[[str], EnclaveHost]


def _dump(host: EnclaveHost) -> dict[str, str]:
    answer = host.call_enclave(b"dump")
    assert answer is not None
    result: dict[str, str] = json.loads(answer)
    return result


def _client(host: EnclaveHost, rollback_detection: bool = True) -> EnclaveClient:
    client = EnclaveClient(
        f"C:{host.enclave_instance_info.code_hash} SEC:INSECURE",
        rollback_detection=rollback_detection,
    )
    client.start(InProcessTransport(host))
    return client


def _count(client: EnclaveClient) -> int:
    reply = client.send_mail(b"inc")
    assert reply is not None
    return int(reply.body)


@pytest.fixture
def host(load: Load) -> EnclaveHost:
    return load("Counter").start()


def test_changes_are_committed_as_one_sealed_blob_per_call(load: Load) -> None:
    batches: list[list[MailCommand]] = []
    host = load("Counter").start(on_mail_commands=batches.append)
    assert host.call_enclave(b"set a=1") == b"ok"
    assert host.call_enclave(b"dump") == b'{"a": "1"}'
    (commands,) = batches[0:1]
    (command,) = commands
    assert isinstance(command, StoreSealedState)
    assert command.snapshot  # the first commit: nothing to follow
    assert host.sealed_state == (command.blob,)
    assert len(batches) == 1  # reading the map commits nothing


def test_map_survives_a_restart_with_exactly_the_committed_content(host: EnclaveHost) -> None:
    host.call_enclave(b"set a=1")
    host.call_enclave(b"set b=2")
    host.call_enclave(b"delete a")
    host.restart()
    assert _dump(host) == {"b": "2"}


def test_changes_are_discarded_when_the_handler_raises(host: EnclaveHost) -> None:
    host.call_enclave(b"set a=1")
    before = host.sealed_state
    with pytest.raises(EnclaveCallError, match="failed after changing the map"):
        host.call_enclave(b"set-then-fail")
    assert _dump(host) == {"a": "1"}
    assert host.sealed_state == before
    host.restart()
    assert _dump(host) == {"a": "1"}


def test_exceeding_the_maximum_size_fails_the_call_and_commits_nothing(host: EnclaveHost) -> None:
    host.call_enclave(b"set a=1")
    before = host.sealed_state
    with pytest.raises(PersistentMapFullError, match="over its maximum of 4096"):
        host.call_enclave(b"big 5000")
    assert _dump(host) == {"a": "1"}
    assert host.sealed_state == before
    assert host.call_enclave(b"big 3000") == b"ok"  # under the limit it fits


def test_a_flipped_byte_in_the_sealed_state_is_refused(host: EnclaveHost, load: Load) -> None:
    host.call_enclave(b"set a=1")
    assert host.sealed_state is not None
    (snapshot,) = host.sealed_state
    for position in range(0, len(snapshot), max(1, len(snapshot) // 10)):
        tampered = bytearray(snapshot)
        tampered[position] ^= 0x01
        with pytest.raises(SealedStateError):
            load("Counter").start(sealed_state=bytes(tampered))
    tampered = bytearray(snapshot)
    tampered[-1] ^= 0x01
    with pytest.raises(SealedStateError, match="refusing to start rather than lose"):
        load("Counter").start(sealed_state=bytes(tampered))
    with pytest.raises(SealedStateError, match="not a Sanctorum sealed blob"):
        load("Counter").start(sealed_state=b"junk")


def test_sealed_state_for_an_enclave_without_a_map_is_refused(load: Load) -> None:
    with pytest.raises(Exception, match="no persistent map"):
        load("Recorder").start(sealed_state=b"anything")


def test_thread_safe_enclaves_cannot_have_a_map(load: Load) -> None:
    with pytest.raises(EnclaveLoadError, match="thread-safe enclave cannot have a persistent map"):
        load("ThreadSafeCounter")


def test_rollback_is_detected_by_the_next_client_that_hears_back(host: EnclaveHost) -> None:
    client = _client(host)
    assert _count(client) == 1
    old_state = host.sealed_state
    assert _count(client) == 2
    # The host restarts the enclave from the older blob: the map says count 1 again.
    host.sealed_state = old_state
    host.restart()
    client.start(InProcessTransport(host))
    with pytest.raises(EnclaveRollbackError, match="rolled back"):
        client.send_mail(b"inc")
    # Another client that never heard of the newer state sees nothing wrong.
    assert _count(_client(host)) == 3


def test_rollback_detection_can_be_switched_off(host: EnclaveHost) -> None:
    client = _client(host, rollback_detection=False)
    _count(client)
    old_state = host.sealed_state
    _count(client)
    host.sealed_state = old_state
    host.restart()
    client.start(InProcessTransport(host))
    assert _count(client) == 2


def test_honest_restarts_are_not_rollbacks(host: EnclaveHost) -> None:
    client = _client(host)
    assert _count(client) == 1
    host.restart()
    client.start(InProcessTransport(host))
    assert _count(client) == 2
    assert _count(client) == 3


def test_rollback_state_survives_client_save_and_restore(host: EnclaveHost) -> None:
    client = _client(host)
    _count(client)
    old_state = host.sealed_state
    _count(client)
    saved = client.save()
    host.sealed_state = old_state
    host.restart()
    restored = EnclaveClient.restore(saved)
    restored.start(InProcessTransport(host))
    with pytest.raises(EnclaveRollbackError):
        restored.send_mail(b"inc")


def test_losing_the_state_entirely_is_a_rollback(host: EnclaveHost, load: Load) -> None:
    client = _client(host)
    _count(client)
    fresh = load("Counter").start()  # the host "forgot" the sealed state
    client.start(InProcessTransport(fresh))
    with pytest.raises(EnclaveRollbackError):
        client.send_mail(b"inc")


# -- identities and platforms (mode-specific) -------------------------------------------------


def test_mock_blob_from_another_identity_is_refused() -> None:
    from behaviour_enclave import Counter

    with EnclaveHost.load(Counter).start() as host:
        host.call_enclave(b"set a=1")
        blob = host.sealed_state
    other = MockConfiguration(signer_hash=SHA256Hash.of(b"someone else"))
    with pytest.raises(SealedStateError, match="another enclave identity"):
        EnclaveHost.load(Counter, mock_config=other).start(sealed_state=blob)
    upgraded = MockConfiguration(code_hash=SHA256Hash.of(b"version 2"))  # same signer, product
    with EnclaveHost.load(Counter, mock_config=upgraded).start(sealed_state=blob) as host:
        assert _dump(host) == {"a": "1"}


def test_simulation_blob_from_another_machine_is_refused(
    bundle_for: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EnclaveHost.load(bundle_for("Counter")).start() as host:
        host.call_enclave(b"set a=1")
        blob = host.sealed_state
    monkeypatch.setenv("SANCTORUM_SIMULATION_SECRET_FILE", str(tmp_path / "other-machine"))
    with pytest.raises(SealedStateError, match="another enclave identity or on another platform"):
        EnclaveHost.load(bundle_for("Counter")).start(sealed_state=blob)
    assert (tmp_path / "other-machine").stat().st_mode & 0o077 == 0


def test_simulation_blob_from_another_product_is_refused(
    bundle_for: Callable[[str], Path], tmp_path: Path
) -> None:
    from sanctorum.build import build
    from tests.conftest import write_project

    with EnclaveHost.load(bundle_for("Counter")).start() as host:
        host.call_enclave(b"set a=1")
        blob = host.sealed_state
    project = write_project(
        tmp_path, "Counter", product_id="2", persistent_map="true", max_persistent_map_size="4096"
    )
    other = build(project).path
    with pytest.raises(SealedStateError):
        EnclaveHost.load(other).start(sealed_state=blob)


def test_per_client_bookkeeping_cannot_grow_the_sealed_state_past_its_limit(
    load: Load,
) -> None:
    # Issue 10, observation 4: the runtime's per-client records once were not counted, so
    # inventing client keys grew the sealed state without bound. Now they fill the map like
    # any entry; a new client is then refused, and clients it already knows go on.
    host = load("Counter").start()  # max_persistent_map_size = 4096
    first = _client(host)
    assert _count(first) == 1
    refused = 0
    for _ in range(60):
        try:
            _count(_client(host))
        except PersistentMapFullError:
            refused += 1
    assert refused > 0
    assert host.sealed_state is not None
    assert len(host.sealed_state) < 4096 + 256  # the limit plus fixed framing and sealing
    assert _count(first) == 62 - refused  # a known client is not locked out
