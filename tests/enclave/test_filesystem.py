"""The enclave filesystems: contents, POSIX-like errors, persistence and tampering."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from sanctorum.enclave.filesystem import (
    SECTOR_SIZE,
    SLOT_SIZE,
    EnclaveFileSystem,
    FileSystemCorruptError,
    SectorStorage,
    _walk_files,
    memory_volume,
    persistent_volume,
)

KEY = bytes(range(32))
CAPACITY = 16 << 20
Mount = Callable[[], EnclaveFileSystem]


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    return tmp_path / "enclave.fs"


@pytest.fixture
def mount(disk: Path) -> Mount:
    """Mounts the persistent filesystem in ``disk`` with /tmp in memory, as an enclave does."""
    mounted: list[EnclaveFileSystem] = []

    def make() -> EnclaveFileSystem:
        for previous in mounted:
            previous.close()
        mounted.clear()
        fs = EnclaveFileSystem(persistent_volume(disk, KEY, CAPACITY), memory_volume(1 << 20))
        mounted.append(fs)
        return fs

    return make


@pytest.mark.parametrize(
    "size", [0, 1, SECTOR_SIZE - 1, SECTOR_SIZE, SECTOR_SIZE + 1, 3 * SECTOR_SIZE, 5 << 20]
)
def test_files_read_back_the_same_bytes_after_a_restart(mount: Mount, size: int) -> None:
    data = os.urandom(size)
    fs = mount()
    fs.write_bytes("/file.bin", data)
    assert fs.read_bytes("/file.bin") == data
    again = mount()
    assert again.read_bytes("/file.bin") == data
    assert again.stat("/file.bin").size == size


def test_modes_seek_and_text(mount: Mount) -> None:
    fs = mount()
    with fs.open("/notes.txt", "w") as file:
        file.write("héllo\n")
    with fs.open("/notes.txt", "a") as file:
        file.write("world\n")
    assert fs.read_text("/notes.txt") == "héllo\nworld\n"
    with fs.open("/data.bin", "wb") as file:
        file.write(b"0123456789")
    with fs.open("/data.bin", "r+b") as file:
        file.seek(4)
        file.write(b"xy")
        file.seek(0)
        assert file.read() == b"0123xy6789"
        assert file.tell() == 10
    with fs.open("/data.bin", "rb") as file:
        file.seek(-3, os.SEEK_END)
        assert file.read(2) == b"78"
    with pytest.raises(FileExistsError):
        fs.open("/data.bin", "x")
    with fs.open("/data.bin", "rb") as file, pytest.raises(io.UnsupportedOperation):
        file.write(b"no")
    with pytest.raises(ValueError, match="invalid mode"):
        fs.open("/data.bin", "rw")


def test_directories(mount: Mount) -> None:
    fs = mount()
    fs.mkdir("/a/b/c", parents=True)
    fs.write_text("/a/b/c/f.txt", "x")
    fs.mkdir("/a/b", exist_ok=True)
    assert fs.listdir("/a/b") == ["c"]
    assert fs.is_dir("/a/b")
    assert fs.is_file("/a/b/c/f.txt")
    fs.rename("/a/b/c/f.txt", "/a/g.txt")
    fs.rename("/a/b", "/z")
    assert fs.listdir("/a") == ["g.txt"]
    assert fs.exists("/z/c")
    assert not fs.exists("/a/b")
    fs.rmdir("/z/c")
    fs.remove("/a/g.txt")
    again = mount()
    assert again.listdir("/") == ["a", "tmp", "z"]
    assert again.listdir("/a") == []


@pytest.mark.parametrize(
    ("action", "error"),
    [
        (lambda fs: fs.read_bytes("/missing"), FileNotFoundError),
        (lambda fs: fs.open("/dir"), IsADirectoryError),
        (lambda fs: fs.read_bytes("/file/inside"), NotADirectoryError),
        (lambda fs: fs.mkdir("/dir"), FileExistsError),
        (lambda fs: fs.mkdir("/file/sub"), NotADirectoryError),
        (lambda fs: fs.mkdir("/x/y"), FileNotFoundError),
        (lambda fs: fs.remove("/dir"), IsADirectoryError),
        (lambda fs: fs.rmdir("/file"), NotADirectoryError),
        (lambda fs: fs.listdir("/file"), NotADirectoryError),
        (lambda fs: fs.rename("/missing", "/other"), FileNotFoundError),
        (lambda fs: fs.rename("/file", "/tmp/file"), OSError),
    ],
)
def test_posix_errors(
    mount: Mount, action: Callable[[EnclaveFileSystem], object], error: type[OSError]
) -> None:
    fs = mount()
    fs.mkdir("/dir")
    fs.write_text("/dir/inner", "x")
    fs.write_text("/file", "x")
    with pytest.raises(error):
        action(fs)


def test_removing_a_full_directory(mount: Mount) -> None:
    fs = mount()
    fs.mkdir("/dir")
    fs.write_text("/dir/inner", "x")
    with pytest.raises(OSError, match="not empty") as caught:
        fs.rmdir("/dir")
    assert caught.value.errno == errno.ENOTEMPTY


def test_full_filesystems_say_so(tmp_path: Path) -> None:
    small = EnclaveFileSystem(persistent_volume(tmp_path / "s.fs", KEY, 4 * SECTOR_SIZE), None)
    with pytest.raises(OSError, match="full") as caught:
        small.write_bytes("/big", bytes(4 * SECTOR_SIZE))
    assert caught.value.errno == errno.ENOSPC
    memory = EnclaveFileSystem(None, memory_volume(100))
    with pytest.raises(OSError, match="full") as caught:
        memory.write_bytes("/big", bytes(101))
    assert caught.value.errno == errno.ENOSPC


def test_tmp_is_in_memory_and_empty_at_every_start(mount: Mount, disk: Path) -> None:
    fs = mount()
    fs.write_text("/tmp/scratch", "gone soon")
    fs.write_text("/kept", "stays")
    assert fs.read_text("/tmp/scratch") == "gone soon"
    before = disk.read_bytes()
    fs.write_text("/tmp/more", "x" * 100_000)
    assert disk.read_bytes() == before  # /tmp never touches the host file
    again = mount()
    assert not again.exists("/tmp/scratch")
    assert again.read_text("/kept") == "stays"


def test_sectors_are_shuffled_and_sealed(mount: Mount, disk: Path) -> None:
    fs = mount()
    empty = disk.read_bytes()
    assert empty.count(bytes(64)) < 4  # no tell-tale zeros: free slots look used
    secret = b"SECRET" * 50_000
    fs.write_bytes("/f", secret)
    assert b"SECRET" not in disk.read_bytes()
    slots = _live_slots(fs)[2:]  # the file's sectors, in file order
    assert len(slots) == 5
    assert slots != sorted(slots)  # not laid out in order


def _live_slots(fs: EnclaveFileSystem) -> list[int]:
    """Physical slots of the superblock, the tree and every file sector."""
    volume = fs._persistent
    assert volume is not None
    storage = volume.storage
    assert isinstance(storage, SectorStorage)
    sectors = [0, *storage._metadata_sectors]
    for node in _walk_files(volume.root):
        sectors += node.sectors
    return [storage._slot[sector] for sector in sectors]


def test_every_tampered_sector_is_detected_naming_the_file(mount: Mount, disk: Path) -> None:
    fs = mount()
    fs.write_bytes("/f", os.urandom(3 * SECTOR_SIZE))
    original = disk.read_bytes()
    live = _live_slots(fs)
    assert len(live) == 5
    for slot in live:
        for offset in (0, 20, SLOT_SIZE - 1):  # nonce, ciphertext, tag
            tampered = bytearray(original)
            tampered[slot * SLOT_SIZE + offset] ^= 0x01
            disk.write_bytes(bytes(tampered))
            with pytest.raises(FileSystemCorruptError, match=str(disk)):
                mount().read_bytes("/f")
    disk.write_bytes(original)
    assert mount().read_bytes("/f") == fs.read_bytes("/f")


def test_swapped_sectors_are_detected(mount: Mount, disk: Path) -> None:
    fs = mount()
    fs.write_bytes("/f", os.urandom(3 * SECTOR_SIZE))
    data = bytearray(disk.read_bytes())
    first, second = _live_slots(fs)[-2:]  # two sectors of the file
    a = data[first * SLOT_SIZE : (first + 1) * SLOT_SIZE]
    data[first * SLOT_SIZE : (first + 1) * SLOT_SIZE] = data[
        second * SLOT_SIZE : (second + 1) * SLOT_SIZE
    ]
    data[second * SLOT_SIZE : (second + 1) * SLOT_SIZE] = a
    disk.write_bytes(bytes(data))
    with pytest.raises(FileSystemCorruptError, match="swapped"):
        mount().read_bytes("/f")


def test_truncated_file_is_refused_at_mount(mount: Mount, disk: Path) -> None:
    mount().write_bytes("/f", b"x")
    with open(disk, "r+b") as file:
        file.truncate(disk.stat().st_size - 1)
    with pytest.raises(FileSystemCorruptError, match="truncated or extended"):
        mount()


def test_another_key_cannot_mount(mount: Mount, disk: Path) -> None:
    mount().write_bytes("/f", b"x")
    with pytest.raises(FileSystemCorruptError, match="does not open"):
        persistent_volume(disk, bytes(32), CAPACITY)


def test_fsspec_view(mount: Mount) -> None:
    fs = mount().fsspec()
    fs.makedirs("/data", exist_ok=True)
    fs.pipe_file("/data/a.csv", b"x,y\n1,2\n")
    with fs.open("/data/b.txt", "w") as file:
        file.write("text mode")
    assert fs.ls("/data", detail=False) == ["/data/a.csv", "/data/b.txt"]
    assert fs.info("/data/a.csv") == {"name": "/data/a.csv", "size": 8, "type": "file"}
    assert fs.cat_file("sanctorum:///data/a.csv") == b"x,y\n1,2\n"
    assert fs.read_text("/data/b.txt") == "text mode"
    fs.mv("/data/b.txt", "/data/c.txt")
    fs.cp_file("/data/c.txt", "/data/d.txt")
    fs.rm("/data/c.txt")
    assert fs.exists("/data/d.txt")
    assert not fs.exists("/data/c.txt")
    with pytest.raises(FileNotFoundError):
        fs.cat_file("/data/missing")
