"""Migration, end to end in simulation mode: an enclave's persistent map and filesystem, sealed
with a key from a KDS running in its own process behind HTTP, move from "machine A" to
"machine B" (another platform secret) and open there; without the KDS the same move fails. And
the ways a KDS can fail an enclave, each with its own clear error."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from sanctorum import EnclaveHost, KdsError, SealedStateError
from sanctorum.build import build
from sanctorum.host import KdsConfiguration
from tests.web.conftest import free_port

_SOURCE = '''
from sanctorum import Enclave


class Keeper(Enclave):
    """``write TEXT`` keeps TEXT in the map and in a file; ``read`` gives both back."""

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        if data.startswith(b"write "):
            self.persistent_map["text"] = data[6:]
            self.filesystem.write_bytes("/text", data[6:])
            return None
        return self.persistent_map["text"] + b"|" + self.filesystem.read_bytes("/text")
'''


def _bundle(directory: Path, kds_table: str) -> Path:
    directory.mkdir()
    (directory / "keeper.py").write_text(_SOURCE)
    (directory / "enclave.toml").write_text(
        '[enclave]\nname = "keeper"\nentry = "keeper:Keeper"\nproduct_id = 1\n'
        'revocation_level = 0\nsources = ["keeper.py"]\npersistent_map = true\n'
        f"max_persistent_map_size = 65536\nfilesystem_size = 1048576\n{kds_table}"
    )
    return build(directory, directory / "build").path


def _machine(monkeypatch: pytest.MonkeyPatch, secret: Path) -> None:
    monkeypatch.setenv("SANCTORUM_SIMULATION_SECRET_FILE", str(secret))


OWN_CODE = 'policy_constraint = "SEC:INSECURE"\nuse_own_code_hash = true'


def _kds_table(code_hash: str, extra: str = OWN_CODE) -> str:
    return f'[kds]\nconstraint = "C:{code_hash} SEC:INSECURE"\n{extra}\n'


def test_state_sealed_with_a_kds_key_opens_on_another_machine(
    kds_process: tuple[str, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, kds_code, cluster_key = kds_process
    table = _kds_table(kds_code, f'{OWN_CODE}\ncluster_key = "{cluster_key}"')
    bundle = _bundle(tmp_path / "app", table)
    configuration = KdsConfiguration(url, timeout=10)
    _machine(monkeypatch, tmp_path / "machine-a")
    with EnclaveHost.load(bundle, "simulation").start(
        filesystem_file=tmp_path / "a.fs", kds=configuration
    ) as host:
        host.call_enclave(b"write kept across machines")
        state = host.sealed_state
    shutil.copy(tmp_path / "a.fs", tmp_path / "b.fs")  # the state files move to machine B
    _machine(monkeypatch, tmp_path / "machine-b")
    with EnclaveHost.load(bundle, "simulation").start(
        sealed_state=state, filesystem_file=tmp_path / "b.fs", kds=configuration
    ) as host:
        assert host.call_enclave(b"read") == b"kept across machines|kept across machines"


def test_without_a_kds_the_same_move_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = _bundle(tmp_path / "app", "")
    _machine(monkeypatch, tmp_path / "machine-a")
    with EnclaveHost.load(bundle, "simulation").start(filesystem_file=tmp_path / "a.fs") as host:
        host.call_enclave(b"write stays on machine A")
        state = host.sealed_state
    shutil.copy(tmp_path / "a.fs", tmp_path / "b.fs")
    _machine(monkeypatch, tmp_path / "machine-b")
    with pytest.raises(SealedStateError, match="on another platform"):
        EnclaveHost.load(bundle, "simulation").start(
            sealed_state=state, filesystem_file=tmp_path / "b.fs"
        )


def test_an_enclave_with_a_kds_table_needs_a_kds(
    kds_process: tuple[str, str, str], tmp_path: Path
) -> None:
    bundle = _bundle(tmp_path / "app", _kds_table(kds_process[1]))
    with pytest.raises(KdsError, match=r"start it with kds=KdsConfiguration\(url\)"):
        EnclaveHost.load(bundle, "simulation").start(filesystem_file=tmp_path / "a.fs")


def test_a_kds_that_is_down_gives_a_clear_error_after_the_timeout(
    kds_process: tuple[str, str, str], tmp_path: Path
) -> None:
    bundle = _bundle(tmp_path / "app", _kds_table(kds_process[1]))
    nowhere = KdsConfiguration(f"http://127.0.0.1:{free_port()}", timeout=1)
    started = time.monotonic()
    with pytest.raises(KdsError, match="did not give the enclave its key within 1 s"):
        EnclaveHost.load(bundle, "simulation").start(filesystem_file=tmp_path / "a.fs", kds=nowhere)
    assert 0.5 < time.monotonic() - started < 10  # it retried, then gave up


def test_an_enclave_refuses_a_kds_that_fails_its_kds_constraint(
    kds_process: tuple[str, str, str], tmp_path: Path
) -> None:
    bundle = _bundle(tmp_path / "app", _kds_table("AB" * 32))
    with pytest.raises(KdsError, match="not one this requester trusts"):
        EnclaveHost.load(bundle, "simulation").start(
            filesystem_file=tmp_path / "a.fs", kds=KdsConfiguration(kds_process[0], timeout=10)
        )


def test_an_enclave_outside_its_own_policy_is_refused_by_the_kds(
    kds_process: tuple[str, str, str], tmp_path: Path
) -> None:
    """A policy naming another code hash: the KDS says 403, the enclave says why."""
    table = _kds_table(kds_process[1], f'policy_constraint = "C:{"CD" * 32} SEC:INSECURE"')
    bundle = _bundle(tmp_path / "app", table)
    with pytest.raises(KdsError, match=r"refused this enclave its persistence key.*policy"):
        EnclaveHost.load(bundle, "simulation").start(
            filesystem_file=tmp_path / "a.fs", kds=KdsConfiguration(kds_process[0], timeout=10)
        )
