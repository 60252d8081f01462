"""Sealed state across upgrades (issue 10, observation 6).

Sealing keys depend on the security versions — the revocation level, and the TCB level in mock
mode — as SGX's do on ISVSVN and CPUSVN. An enclave opens state sealed by its own or older
versions and seals it again under its own at start; it never opens state newer versions wrote.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from sanctorum import (
    Enclave,
    EnclaveHost,
    MockConfiguration,
    NewerSealedStateError,
    SealedStateError,
)
from sanctorum.build import build
from sanctorum.enclave.sealing import SecurityVersions, sealed_versions
from tests.conftest import write_project


class Keeper(Enclave):
    """Keeps a value in its persistent map and a file in its persistent filesystem."""

    persistent_map_size = 1 << 16
    filesystem_size = 1 << 20

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        if data:
            self.persistent_map["value"] = data
            self.filesystem.write_bytes("/value", data)
            return None
        return self.persistent_map["value"] + b"|" + self.filesystem.read_bytes("/value")


def _mock(revocation_level: int = 0, tcb_level: int = 1) -> EnclaveHost:
    config = MockConfiguration(revocation_level=revocation_level, tcb_level=tcb_level)
    return EnclaveHost.load(Keeper, mock_config=config)


@pytest.mark.parametrize(
    ("old", "new"),
    [((0, 1), (1, 1)), ((0, 1), (0, 2)), ((2, 3), (5, 7))],
    ids=["revocation level", "TCB level", "both"],
)
def test_state_survives_raising_each_level_in_mock_mode(
    tmp_path: Path, old: tuple[int, int], new: tuple[int, int]
) -> None:
    disk = tmp_path / "files"
    with _mock(*old).start(filesystem_file=disk) as before:
        before.call_enclave(b"kept across the upgrade")
        state = before.sealed_state
    assert _sealed_at(state) == SecurityVersions(*old)
    with _mock(*new).start(sealed_state=state, filesystem_file=disk) as after:
        assert after.call_enclave(b"") == b"kept across the upgrade|kept across the upgrade"
        # Sealed again under the new versions at start, without waiting for a change.
        resealed = after.sealed_state
        assert _sealed_at(resealed) == SecurityVersions(*new)
    with pytest.raises(NewerSealedStateError, match="never reads state a newer version wrote"):
        _mock(*old).start(sealed_state=resealed, filesystem_file=disk)


def test_a_lower_level_is_refused_newer_state_whichever_level_it_is(tmp_path: Path) -> None:
    with _mock(1, 2).start(filesystem_file=tmp_path / "files") as host:
        host.call_enclave(b"x")
        state = host.sealed_state
    # Lower in either level refuses, even when the other level is higher.
    for revocation_level, tcb_level in ((0, 2), (0, 9), (5, 1)):
        with pytest.raises(NewerSealedStateError):
            _mock(revocation_level, tcb_level).start(
                sealed_state=state, filesystem_file=tmp_path / "files"
            )


def test_a_forged_header_naming_older_versions_does_not_open(tmp_path: Path) -> None:
    """The versions in the header are authenticated: rewriting them to an older level (which
    the enclave may derive) gives the wrong key and an altered header, so it never opens."""
    with _mock(3, 1).start(filesystem_file=tmp_path / "files") as host:
        host.call_enclave(b"x")
        state = host.sealed_state
    assert state is not None
    forged = bytearray(state[0])
    forged[5:7] = (2).to_bytes(2, "big")  # revocation level 3 → 2
    with pytest.raises(SealedStateError, match="does not open"):
        _mock(3, 1).start(sealed_state=bytes(forged), filesystem_file=tmp_path / "files")


def test_state_survives_raising_the_revocation_level_in_simulation(tmp_path: Path) -> None:
    bundles = {}
    for level in (0, 1):
        directory = tmp_path / f"v{level}"
        directory.mkdir()
        project = write_project(
            directory,
            "Keeper",
            revocation_level=str(level),
            persistent_map="true",
            max_persistent_map_size=str(1 << 16),
            filesystem_size=str(1 << 20),
            sources='["behaviour_enclave.py", "upgrade_keeper.py"]',
            entry='"upgrade_keeper:Keeper"',
        )
        (project / "upgrade_keeper.py").write_text(_KEEPER_SOURCE)
        bundles[level] = build(project).path
    disk = tmp_path / "files"
    with EnclaveHost.load(bundles[0], mode="simulation").start(filesystem_file=disk) as before:
        before.call_enclave(b"kept")
        state = before.sealed_state
    assert _sealed_at(state).revocation_level == 0
    upgraded = EnclaveHost.load(bundles[1], mode="simulation")
    with upgraded.start(sealed_state=state, filesystem_file=disk) as after:
        assert after.call_enclave(b"") == b"kept|kept"
        resealed = after.sealed_state
    assert _sealed_at(resealed).revocation_level == 1
    with pytest.raises(NewerSealedStateError):
        EnclaveHost.load(bundles[0], mode="simulation").start(
            sealed_state=resealed, filesystem_file=disk
        )


def _sealed_at(state: tuple[bytes, ...] | None) -> SecurityVersions:
    """The security versions that sealed every blob of ``state`` (they must agree)."""
    assert state is not None
    (versions,) = {sealed_versions(blob) for blob in state}
    return versions


_KEEPER_SOURCE = """
from sanctorum import Enclave


class Keeper(Enclave):
    def receive_from_untrusted_host(self, data):
        if data:
            self.persistent_map["value"] = data
            self.filesystem.write_bytes("/value", data)
            return None
        return self.persistent_map["value"] + b"|" + self.filesystem.read_bytes("/value")
"""


def test_under_sgx_state_from_older_versions_is_refused_with_the_reason() -> None:
    """Gramine gives an enclave only its current versions' CPU keys (a callable platform
    secret): older state cannot be opened there, and the error says so rather than "altered"."""
    from sanctorum.attestation.mock import MockEvidenceProvider
    from sanctorum.common.commands import StoreSealedState
    from sanctorum.enclave.runtime import EnclaveRuntime
    from sanctorum.enclave.sealing import EnclaveIdentity, SealingPolicy

    class MapKeeper(Enclave):
        def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
            self.persistent_map["value"] = data
            return None

    def cpu_key(policy: SealingPolicy) -> bytes:
        return bytes(16)

    provider = MockEvidenceProvider.for_class("tests.MapKeeper", None)

    def runtime(revocation_level: int, sealed_state: list[bytes] | None) -> EnclaveRuntime:
        identity = EnclaveIdentity(
            provider.code_hash,
            provider.signer_hash,
            provider.product_id,
            SecurityVersions(revocation_level),
        )
        return EnclaveRuntime(
            MapKeeper(),
            provider,
            identity=identity,
            platform_secret=cpu_key,
            persistent_map_size=100,
            sealed_state=sealed_state,
        )

    first = runtime(0, None)
    first.start()
    _, commands = first.call(b"kept", None)
    (stored,) = [command for command in commands if isinstance(command, StoreSealedState)]
    first.close()
    again = runtime(0, [stored.blob])  # the same versions: opens
    again.close()
    with pytest.raises(SealedStateError, match="Gramine gives an enclave the keys of its current"):
        runtime(1, [stored.blob])


def test_files_written_after_an_upgrade_are_closed_to_the_retired_version(tmp_path: Path) -> None:
    """The host keeps the pre-upgrade sealed state; a retired release started from it (and
    exploited) has the filesystem keys it recorded. Files the upgraded release writes are
    sealed with a key added at the upgrade, which that state does not hold."""
    from cryptography.exceptions import InvalidTag

    from sanctorum.common.hashes import ZERO_HASH
    from sanctorum.enclave.filesystem import SLOT_SIZE, SectorStorage
    from sanctorum.enclave.sealing import (
        MOCK_PLATFORM_SECRET,
        EnclaveIdentity,
        SealingPolicy,
        derive_sealing_key,
        unseal,
    )
    from sanctorum.enclave.state import decode_state

    disk = tmp_path / "files"
    with _mock(1, 1).start(filesystem_file=disk) as before:
        before.call_enclave(b"written before the upgrade")
        retired_state = before.sealed_state
    with _mock(2, 1).start(sealed_state=retired_state, filesystem_file=disk) as after:
        after.call_enclave(b"TOP SECRET written after the upgrade")
        current_state = after.sealed_state
    assert retired_state is not None
    assert current_state is not None

    def plaintexts(state: tuple[bytes, ...], versions: SecurityVersions) -> list[bytes]:
        """Every sector of the current file that the keys ``state`` records open (its last
        blob holds the filesystem's latest record)."""
        identity = EnclaveIdentity(ZERO_HASH, ZERO_HASH, 1, versions)  # Keeper's in mock mode
        key = derive_sealing_key(
            MOCK_PLATFORM_SECRET, identity, SealingPolicy.SIGNER, b"sanctorum-sealed-state"
        )
        record = decode_state(unseal(key, state[-1], b"sanctorum-sealed-state")).filesystem
        assert record is not None
        storage = SectorStorage(disk, 1 << 20, record)
        opened = []
        data = disk.read_bytes()
        for sector in range(storage.sectors):
            slot = data[storage._slot[sector] * SLOT_SIZE :][:SLOT_SIZE]
            for aead in storage._aeads:
                with contextlib.suppress(InvalidTag):
                    opened.append(aead.decrypt(slot[:12], slot[12:], sector.to_bytes(8, "big")))
        storage.close()
        return opened

    def holds(found: list[bytes], secret: bytes) -> bool:
        return any(secret in plaintext for plaintext in found)

    current = plaintexts(current_state, SecurityVersions(2, 1))
    assert holds(current, b"TOP SECRET")  # the check finds it with the current keys
    assert not holds(plaintexts(retired_state, SecurityVersions(1, 1)), b"TOP SECRET")
