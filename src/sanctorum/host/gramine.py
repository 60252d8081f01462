"""Debug and release modes: the enclave runs in SGX under ``gramine-sgx``.

The enclave process cannot inherit a socket through Gramine, so the host listens on a loopback
TCP port and passes its address in ``SANCTORUM_HOST_ADDRESS``; from there on the frames are the
same as in simulation. While loading, the enclave asks the host for the DCAP collateral of its
quote (fetched from a PCCS or Intel PCS, cached); clients verify it against Intel's root.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

from sanctorum.attestation.collateral import CollateralFetcher
from sanctorum.attestation.instance_info import EnclaveInstanceInfo
from sanctorum.common.bundle import FILES_MOUNT, Bundle
from sanctorum.common.errors import EnclaveLoadError
from sanctorum.common.mode import EnclaveMode
from sanctorum.host.simulation import START_TIMEOUT, SimulationPlatform

COLLATERAL_REQUEST = b"sanctorum:collateral\0"
HOST_ADDRESS_ENV = "SANCTORUM_HOST_ADDRESS"


class GraminePlatform(SimulationPlatform):
    """Runs a bundle in SGX through Gramine (the manifest comes from ``sanctorum build``).

    ``launcher`` is the command that starts the enclave: ``gramine-sgx NAME`` in the manifest's
    directory by default; tests run the same enclave code outside SGX against a fake
    ``/dev/attestation``.
    """

    def __init__(
        self,
        bundle: Bundle,
        bundle_bytes: bytes,
        mode: EnclaveMode,
        collateral: CollateralFetcher,
        launcher: list[str],
        working_directory: Path | None = None,
        environment: dict[str, str] | None = None,
    ) -> None:
        super().__init__(bundle, bundle_bytes)
        self.mode = mode.value
        self._collateral = collateral
        self._launcher = launcher
        self._working_directory = working_directory
        self._environment = environment or {}

    def _spawn(self) -> socket.socket:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(START_TIMEOUT)
            host, port = listener.getsockname()[:2]
            environment = {**os.environ, **self._environment, HOST_ADDRESS_ENV: f"{host}:{port}"}
            try:
                self._process = subprocess.Popen(  # noqa: S603  (a fixed command, no shell)
                    self._launcher,
                    cwd=self._working_directory,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                )
            except OSError as error:
                raise EnclaveLoadError(f"could not start {self._launcher[0]}: {error}") from None
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                self._process.kill()
                raise EnclaveLoadError(
                    f"the enclave did not connect within {START_TIMEOUT} s"
                ) from None
        connection.settimeout(None)
        return connection

    def _enclave_path(self, filesystem_file: Path | None) -> Path | None:
        """Gramine lets the enclave open host files only under the manifest's ``files``
        mount: link the file there and name it by its path inside the enclave."""
        if filesystem_file is None:
            return None
        files = (self._working_directory or Path.cwd()) / "files"
        files.mkdir(exist_ok=True)
        link = files / filesystem_file.name
        if link.is_symlink() or link.exists():
            link.unlink()
        filesystem_file.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(filesystem_file.resolve())
        return Path(FILES_MOUNT) / filesystem_file.name

    def _serve_load_request(self, data: bytes) -> bytes | None:
        if not data.startswith(COLLATERAL_REQUEST):
            return super()._serve_load_request(data)  # a KDS request, or unknown
        quote = data[len(COLLATERAL_REQUEST) :]
        return json.dumps(self._collateral.collateral_for(quote)).encode()

    def _check_attested(self, info: EnclaveInstanceInfo) -> None:
        """SGX measures MRENCLAVE, not the bundle hash; check the mode instead."""
        if info.enclave_mode.value != self.mode:
            raise EnclaveLoadError(
                f"asked for {self.mode} mode, but the enclave attests {info.enclave_mode.value}"
            )
