"""The hello host: builds the enclave bundle and runs it."""

from __future__ import annotations

from pathlib import Path

from hello_enclave import ReverseEnclave

from sanctorum import EnclaveHost
from sanctorum.build import BuildResult, build

PROJECT = Path(__file__).parent


def build_enclave(output_dir: Path | None = None) -> BuildResult:
    """Build ``hello.enclave`` from this directory's ``enclave.toml`` (default: ``build/``)."""
    return build(PROJECT, output_dir)


def start_host(bundle: Path | None = None) -> EnclaveHost:
    """A started host: the bundle in simulation mode, or without one the class in mock mode."""
    if bundle is None:
        return EnclaveHost.load(ReverseEnclave, mode="mock").start()
    return EnclaveHost.load(bundle, mode="simulation").start()
