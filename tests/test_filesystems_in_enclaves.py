"""Enclave filesystems through the host, in mock and simulation mode."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sanctorum import (
    Enclave,
    EnclaveCallError,
    EnclaveHost,
    EnclaveLoadError,
    EnclaveStateError,
    FileSystemRollbackError,
    PersistentMapFullError,
    SealedStateError,
)
from sanctorum.host import MailCommand, StoreSealedState

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
        load("Files").start(sealed_state=host.sealed_state, filesystem_file=disk).call_enclave(
            b"read /data.txt"
        )


def test_a_persistent_filesystem_needs_its_file(load: Load) -> None:
    with pytest.raises(EnclaveStateError, match="filesystem_file"):
        load("Files").start()


# -- the filesystem is bound to the sealed state (issue 10, observation 1) ---------------------


def test_an_emptied_filesystem_file_is_refused(load: Load, tmp_path: Path) -> None:
    disk = tmp_path / "files.fs"
    host = load("Files").start(filesystem_file=disk)
    host.call_enclave(b"write /balance=100")
    host.close()
    disk.write_bytes(b"")  # the host "resets" the filesystem
    with pytest.raises(FileSystemRollbackError, match="emptied"):
        host.restart()


def test_an_older_copy_of_the_filesystem_file_is_refused(load: Load, tmp_path: Path) -> None:
    disk = tmp_path / "files.fs"
    host = load("Files").start(filesystem_file=disk)
    host.call_enclave(b"write /balance=100")
    older = disk.read_bytes()
    host.call_enclave(b"write /balance=50")
    host.call_enclave(b"write /balance=0")
    host.close()
    disk.write_bytes(older)  # put back the file from when the balance was 100
    with pytest.raises(FileSystemRollbackError, match="older or newer copy"):
        host.restart()


def test_a_file_without_its_sealed_state_is_refused_not_overwritten(
    load: Load, tmp_path: Path
) -> None:
    disk = tmp_path / "files.fs"
    host = load("Files").start(filesystem_file=disk)
    host.call_enclave(b"write /kept=yes")
    host.close()
    before = disk.read_bytes()
    with pytest.raises(FileSystemRollbackError, match="records no filesystem"):
        load("Files").start(filesystem_file=disk)
    assert disk.read_bytes() == before


def test_a_new_filesystem_is_committed_before_start_returns(load: Load, tmp_path: Path) -> None:
    """Its key lives in the sealed state: a host that stops before any call restarts fine."""
    host = load("Files").start(filesystem_file=tmp_path / "files.fs")
    assert host.sealed_state is not None
    host.restart()
    assert json.loads(host.call_enclave(b"list /") or b"") == ["tmp"]


def test_after_a_crash_the_files_are_those_of_the_last_stored_state(
    load: Load, tmp_path: Path
) -> None:
    """The host crashed after the enclave wrote files but before it stored the sealed state:
    the enclave comes back from the state the host has, with the files as they were then."""
    disk = tmp_path / "files.fs"
    host = load("Files").start(filesystem_file=disk)
    host.call_enclave(b"write /report=first")
    stored = host.sealed_state
    host.call_enclave(b"write /report=second")  # its sealed state is lost in the crash
    host.close()
    again = load("Files").start(sealed_state=stored, filesystem_file=disk)
    assert again.call_enclave(b"read /report") == b"first"
    assert json.loads(again.call_enclave(b"list /") or b"") == ["report", "tmp"]


def test_a_sealed_state_older_than_the_files_by_two_commits_is_refused(
    load: Load, tmp_path: Path
) -> None:
    """The host stored later states and then starts from an old one (a rollback)."""
    disk = tmp_path / "files.fs"
    host = load("Files").start(filesystem_file=disk)
    host.call_enclave(b"write /report=first")
    old = host.sealed_state
    host.call_enclave(b"write /report=second")
    host.call_enclave(b"write /report=third")
    host.close()
    with pytest.raises(FileSystemRollbackError, match="older or newer copy"):
        load("Files").start(sealed_state=old, filesystem_file=disk)


class _MapAndFiles(Enclave):
    persistent_map_size = 64
    filesystem_size = 1 << 20

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        self.filesystem.write_bytes("/f", data)
        self.persistent_map["k"] = data  # over the map's maximum for long data
        return None


def test_a_call_whose_map_is_over_its_limit_commits_no_files_either(tmp_path: Path) -> None:
    """The map is checked before the filesystem commits, so a failing call never leaves the
    filesystem ahead of the sealed state the host stores."""
    disk = tmp_path / "files.fs"
    host = EnclaveHost.load(_MapAndFiles).start(filesystem_file=disk)
    stored = host.sealed_state
    for _ in range(2):
        with pytest.raises(PersistentMapFullError):
            host.call_enclave(b"x" * 100)
    assert host.sealed_state == stored
    host.restart()  # from the state stored at start: the filesystem still matches it
    host.call_enclave(b"short")
    host.restart()
    assert host.mock_enclave.filesystem.read_bytes("/f") == b"short"


def test_calls_that_return_out_of_order_reach_the_host_in_commit_order(
    tmp_path: Path,
) -> None:
    """Two threads call a single-threaded enclave; the first call's commands reach the host's
    dispatch after the second's. The host still passes them on in commit order (a journal
    record must never be stored before the one it follows), so a restart finds the newest
    files."""
    disk = tmp_path / "files.fs"
    stored: list[int] = []

    def on_mail_commands(commands: list[MailCommand]) -> None:
        stored.extend(c.commit_number for c in commands if isinstance(c, StoreSealedState))

    host = EnclaveHost.load(_MapAndFiles).start(
        filesystem_file=disk, on_mail_commands=on_mail_commands
    )
    dispatch = host._dispatch
    first, second_arrived = threading.Event(), threading.Event()

    def late_first(commands: list[MailCommand], generation: int) -> None:
        if not first.is_set():
            first.set()
            assert second_arrived.wait(10)  # the first call's commands arrive last
        else:
            second_arrived.set()
        dispatch(commands, generation)

    host._dispatch = late_first  # type: ignore[method-assign]
    one = threading.Thread(target=host.call_enclave, args=(b"older",))
    one.start()
    assert first.wait(10)
    two = threading.Thread(target=host.call_enclave, args=(b"newer",))
    two.start()
    for thread in (one, two):
        thread.join(10)
        assert not thread.is_alive()
    assert len(stored) >= 2
    assert stored == list(range(stored[0], stored[0] + len(stored)))
    host.restart()
    assert host.mock_enclave.filesystem.read_bytes("/f") == b"newer"


def test_thread_safe_enclaves_cannot_have_a_persistent_filesystem() -> None:
    class ThreadSafeFiles(Enclave):
        thread_safe = True
        filesystem_size = 1 << 20

    with pytest.raises(EnclaveLoadError, match="cannot have a persistent map or filesystem"):
        EnclaveHost.load(ThreadSafeFiles)
