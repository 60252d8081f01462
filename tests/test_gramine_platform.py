"""The SGX path end to end, minus the CPU: the host launches the Gramine entry point (as
``gramine-sgx`` would, but as a plain process), the enclave code reads a fake
``/dev/attestation``, asks its host for collateral, and attests with the recorded quote."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sanctorum import EnclaveLoadError, InvalidEnclaveError
from sanctorum.attestation.collateral import CollateralFetcher
from sanctorum.common.bundle import read_bundle
from sanctorum.common.mode import EnclaveMode
from sanctorum.common.progress import ProgressCallback
from sanctorum.host import EnclaveHost
from sanctorum.host.gramine import GraminePlatform
from tests.conftest import vector_file
from tests.pccs import FakePccs

QUOTE = vector_file("dcap/sgx_quote_v3.bin").read_bytes()


def _fake_attestation(directory: Path) -> Path:
    (directory / "keys").mkdir(parents=True)
    (directory / "attestation_type").write_text("dcap")
    (directory / "quote").write_bytes(QUOTE)
    (directory / "keys" / "_sgx_mrenclave").write_bytes(bytes(16))
    (directory / "keys" / "_sgx_mrsigner").write_bytes(bytes(16))
    return directory


def test_the_whole_chain_runs_and_refuses_a_quote_not_made_for_its_keys(
    bundle_for: Callable[[str], Path], pccs: str, tmp_path: Path
) -> None:
    bundle_path = bundle_for("Recorder")
    data = bundle_path.read_bytes()
    attestation = _fake_attestation(tmp_path / "attestation")
    platform = GraminePlatform(
        read_bundle(data),
        b"",  # under SGX the enclave runs the bundle Gramine measured, not what the host sends
        EnclaveMode.RELEASE,
        CollateralFetcher(pccs),
        [sys.executable, "-m", "sanctorum.enclave.gramine", str(bundle_path)],
        environment={"SANCTORUM_ATTESTATION_DIR": str(attestation)},
    )
    with pytest.raises(InvalidEnclaveError, match="DCAP quote verification failed"):
        platform.start(None, None)
    # The enclave wrote its key binding, read the quote, and its host fetched the collateral.
    assert len((attestation / "user_report_data").read_bytes()) == 64
    assert sorted(set(FakePccs.requests)) == [
        "/sgx/certification/v4/pckcrl",
        "/sgx/certification/v4/qe/identity",
        "/sgx/certification/v4/rootcacrl",
        "/sgx/certification/v4/tcb",
    ]
    assert platform.process is not None
    assert platform.process.poll() is not None  # the enclave process was stopped


def test_release_and_debug_are_refused_here_with_the_reason(
    bundle_for: Callable[[str], Path],
) -> None:
    for mode in ("debug", "release"):
        with pytest.raises(EnclaveLoadError, match=f"{mode} mode is not available here: no SGX"):
            EnclaveHost.load(bundle_for("Recorder"), mode=mode)


def test_the_filesystem_file_is_linked_under_the_allowed_mount(
    bundle_for: Callable[[str], Path], tmp_path: Path
) -> None:
    bundle_path = bundle_for("Recorder")
    platform = GraminePlatform(
        read_bundle(bundle_path.read_bytes()),
        b"",
        EnclaveMode.RELEASE,
        CollateralFetcher("http://127.0.0.1:9"),
        ["gramine-sgx", "recorder"],
        working_directory=tmp_path / "build",
    )
    (tmp_path / "build").mkdir()
    target = tmp_path / "state" / "filesystem.bin"
    inside = platform._enclave_path(target)
    assert inside == Path("/sanctorum/files/filesystem.bin")  # what the manifest mounts
    link = tmp_path / "build" / "files" / "filesystem.bin"
    assert link.is_symlink()
    assert link.resolve() == target.resolve()
    assert platform._enclave_path(None) is None


def test_the_host_hands_its_progress_callback_to_the_collateral_fetcher(
    bundle_for: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So `EnclaveHost.load(..., progress=...)` shows the collateral requests of SGX hosts."""
    import sanctorum.host.host as host_module

    given: list[ProgressCallback | None] = []

    class Recording(CollateralFetcher):
        def __init__(self, base_url: str, *, progress: ProgressCallback | None = None) -> None:
            given.append(progress)
            super().__init__(base_url, progress=progress)

    monkeypatch.setattr(host_module, "CollateralFetcher", Recording)
    monkeypatch.setattr(host_module, "sgx_problems", list)  # as if this machine had SGX
    bundle = tmp_path / "recorder.enclave"
    bundle.write_bytes(bundle_for("Recorder").read_bytes())
    (tmp_path / "recorder.manifest.sgx").write_text("")
    steps: list[str] = []
    EnclaveHost.load(bundle, mode="debug", progress=steps.append)
    assert given == [steps.append]
