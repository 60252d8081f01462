"""Enclave filesystems through the host, in mock and simulation mode."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sanctorum import EnclaveCallError, EnclaveHost, EnclaveStateError, SealedStateError

Load = Callable[[str], EnclaveHost]


def test_files_survive_a_restart_and_tmp_does_not(load: Load, tmp_path: Path) -> None:
    disk = tmp_path / "files.fs"
    host = load("Files").start(filesystem_file=disk)
    assert host.call_enclave(b"write /data/report.txt=quarterly numbers") == b"ok"
    assert host.call_enclave(b"write /tmp/scratch.txt=temporary") == b"ok"
    assert json.loads(host.call_enclave(b"list /") or b"") == ["data", "tmp"]
    host.restart()
    assert host.call_enclave(b"read /data/report.txt") == b"quarterly numbers"
    with pytest.raises(EnclaveCallError, match="FileNotFoundError"):
        host.call_enclave(b"read /tmp/scratch.txt")
    assert b"quarterly" not in disk.read_bytes()


@pytest.mark.parametrize("size", [0, 1, 65536, 3 << 20])
def test_files_of_every_size_read_back_after_a_restart(
    load: Load, tmp_path: Path, size: int
) -> None:
    host = load("Files").start(filesystem_file=tmp_path / "files.fs")
    written = host.call_enclave(f"make /file.bin={size}".encode())
    host.restart()
    assert host.call_enclave(b"hash /file.bin") == written


def test_a_tampered_filesystem_file_is_detected(load: Load, tmp_path: Path) -> None:
    disk = tmp_path / "files.fs"
    host = load("Files").start(filesystem_file=disk)
    host.call_enclave(b"write /data.txt=" + b"x" * 1000)
    host.close()
    data = bytearray(disk.read_bytes())
    for position in range(0, len(data), 12 + 65536 + 16):
        if any(data[position : position + 12]):  # a sector in use: flip one byte of it
            data[position + 100] ^= 1
    disk.write_bytes(bytes(data))
    with pytest.raises(SealedStateError, match=str(disk)):
        load("Files").start(filesystem_file=disk).call_enclave(b"read /data.txt")


def test_a_persistent_filesystem_needs_its_file(load: Load) -> None:
    with pytest.raises(EnclaveStateError, match="filesystem_file"):
        load("Files").start()
