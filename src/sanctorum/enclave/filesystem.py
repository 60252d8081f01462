"""Enclave filesystems: an in-memory scratch filesystem and a persistent encrypted one.

Both keep their directory tree in enclave memory and offer the same path-based API
(:class:`EnclaveFileSystem`) with POSIX-like errors. They differ in where file contents live:

- :class:`MemoryStorage`: in enclave memory, empty at every start, size-limited.
- :class:`SectorStorage`: in **one host file** of fixed-size sectors. Logical sector *i* is
  sealed with AES-GCM (a fresh random nonce each write, the sector number as associated data, so
  a sector moved elsewhere does not open) and stored in physical slot ``permutation[i]``, a
  key-derived shuffle, so the host cannot tell which slots belong together. The file is filled
  with random-looking bytes when it is created, so slots in use cannot be told from free ones.
  Logical sector 0 is the superblock; it points to the sectors that hold the serialised
  directory tree, which is rewritten copy-on-write whenever files are closed or the tree
  changes.

Known limit: the host can replace a sector with an *older* sealing of the same sector (a
per-sector rollback); detecting that needs a Merkle tree over the sectors, which is not built.
"""

from __future__ import annotations

import errno
import io
import json
import os
import posixpath
import secrets
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sanctorum.common.errors import SealedStateError

SECTOR_SIZE = 64 * 1024
_NONCE = 12
_TAG = 16
SLOT_SIZE = _NONCE + SECTOR_SIZE + _TAG
_SUPERBLOCK = struct.Struct(">4sBQI")  # magic, version, generation, metadata length
_MAGIC = b"SNFS"
_SCRATCH = "/tmp"  # noqa: S108  (a path inside the enclave's own filesystem, not the host's)


class FileSystemCorruptError(SealedStateError, OSError):
    """A sector of the filesystem file does not open: tampered, truncated or swapped."""


def _error(code: int, path: str) -> OSError:
    exception_class = {
        errno.ENOENT: FileNotFoundError,
        errno.EEXIST: FileExistsError,
        errno.EISDIR: IsADirectoryError,
        errno.ENOTDIR: NotADirectoryError,
    }.get(code, OSError)
    return exception_class(code, os.strerror(code), path)


# -- the tree ---------------------------------------------------------------------------------


@dataclass
class _File:
    size: int = 0
    sectors: list[int] = field(default_factory=list)  # SectorStorage
    data: bytearray = field(default_factory=bytearray)  # MemoryStorage


@dataclass
class _Dir:
    children: dict[str, _File | _Dir] = field(default_factory=dict)


@dataclass(frozen=True)
class FileStat:
    size: int
    is_dir: bool


def _normalise(path: str) -> str:
    if not isinstance(path, str) or not path:
        raise ValueError(f"a path is a non-empty string, not {path!r}")
    return posixpath.normpath("/" + path.lstrip("/"))


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


# -- storage ----------------------------------------------------------------------------------


class MemoryStorage:
    """File contents in enclave memory, up to ``capacity`` bytes in all."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0

    def read(self, node: _File, offset: int, size: int) -> bytes:
        return bytes(node.data[offset : offset + size])

    def write(self, node: _File, offset: int, data: bytes) -> None:
        end = offset + len(data)
        growth = max(0, end - len(node.data))
        if self.used + growth > self.capacity:
            raise _error(errno.ENOSPC, f"in-memory filesystem full ({self.capacity} bytes)")
        if offset > len(node.data):
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset:end] = data
        self.used += growth
        node.size = max(node.size, end)

    def truncate(self, node: _File, size: int) -> None:
        self.used -= max(0, len(node.data) - size)
        del node.data[size:]
        node.size = min(node.size, size)

    def release(self, node: _File) -> None:
        self.truncate(node, 0)

    def sync(self, root: _Dir) -> None:
        """Nothing to persist."""

    def close(self) -> None:
        """Nothing to release."""


class SectorStorage:
    """File contents in one host file of sealed, shuffled, fixed-size sectors."""

    def __init__(self, path: Path, key: bytes, capacity: int) -> None:
        self.path = path
        self.sectors = max(2, capacity // SECTOR_SIZE)
        self._aead = AESGCM(key)
        # A keyed pseudo-random permutation: order the sector numbers by an AES-CTR keystream.
        stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        sort_keys = stream.update(bytes(16 * self.sectors))
        self._slot = sorted(range(self.sectors), key=lambda i: sort_keys[16 * i : 16 * i + 16])
        expected = self.sectors * SLOT_SIZE
        new = not path.exists()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if new or os.fstat(self._fd).st_size == 0:
            self._fill(expected)
            self.fresh = True
        else:
            size = os.fstat(self._fd).st_size
            if size != expected:
                os.close(self._fd)
                raise FileSystemCorruptError(
                    errno.EIO,
                    f"the filesystem file {path} is {size} bytes, not {expected}: it was "
                    "truncated or extended, or belongs to a filesystem of another size",
                    str(path),
                )
            self.fresh = False
        self._free = set(range(1, self.sectors))
        self._generation = 0
        self._metadata_sectors: list[int] = []
        self._lock = threading.Lock()

    def _fill(self, size: int) -> None:
        """Write the whole file with random-looking bytes, so slots in use and slots never
        used look alike to the host (a sparse file would show which are which)."""
        noise = Cipher(algorithms.AES(secrets.token_bytes(32)), modes.CTR(bytes(16))).encryptor()
        block = bytes(4 << 20)
        for offset in range(0, size, len(block)):
            os.pwrite(self._fd, noise.update(block[: min(len(block), size - offset)]), offset)

    # sectors

    def _seal(self, sector: int, data: bytes) -> None:
        nonce = secrets.token_bytes(_NONCE)
        sealed = self._aead.encrypt(nonce, data, struct.pack(">Q", sector))
        os.pwritev(self._fd, [nonce, sealed], self._slot[sector] * SLOT_SIZE)

    def _open(self, sector: int) -> bytes:
        slot = os.pread(self._fd, SLOT_SIZE, self._slot[sector] * SLOT_SIZE)
        view = memoryview(slot)
        try:
            if len(slot) != SLOT_SIZE:
                raise InvalidTag
            return self._aead.decrypt(view[:_NONCE], view[_NONCE:], struct.pack(">Q", sector))
        except InvalidTag:
            raise FileSystemCorruptError(
                errno.EIO,
                f"sector {sector} of the filesystem file {self.path} does not open: it was "
                "tampered with, truncated, or swapped with another sector",
                str(self.path),
            ) from None

    def _allocate(self) -> int:
        try:
            return self._free.pop()
        except KeyError:
            raise _error(errno.ENOSPC, f"filesystem {self.path} is full") from None

    # files

    def read(self, node: _File, offset: int, size: int) -> bytes:
        end = min(offset + size, node.size)
        parts = []
        position = offset
        while position < end:
            index, within = divmod(position, SECTOR_SIZE)
            take = min(SECTOR_SIZE - within, end - position)
            sector = self._open(node.sectors[index])
            parts.append(sector[within : within + take] if take < SECTOR_SIZE else sector)
            position += take
        return b"".join(parts)

    def write(self, node: _File, offset: int, data: bytes) -> None:
        if offset > node.size:  # a hole: fill it with zeros
            self.write(node, node.size, bytes(offset - node.size))
        view = memoryview(data)
        position, end = offset, offset + len(data)
        while position < end:
            index, within = divmod(position, SECTOR_SIZE)
            take = min(SECTOR_SIZE - within, end - position)
            piece = view[position - offset : position - offset + take]
            if index == len(node.sectors):
                node.sectors.append(self._allocate())
            sector = node.sectors[index]
            if take == SECTOR_SIZE:
                self._seal(sector, bytes(piece))
            else:  # a partial sector: read, modify, write
                stored = index * SECTOR_SIZE < node.size
                current = bytearray(self._open(sector)) if stored else bytearray(SECTOR_SIZE)
                current[within : within + take] = piece
                self._seal(sector, bytes(current))
            position += take
        node.size = max(node.size, end)

    def truncate(self, node: _File, size: int) -> None:
        keep = -(-size // SECTOR_SIZE)
        self._free.update(node.sectors[keep:])
        del node.sectors[keep:]
        node.size = min(node.size, size)

    def release(self, node: _File) -> None:
        self.truncate(node, 0)

    # the tree on disk

    def sync(self, root: _Dir) -> None:
        """Write the tree copy-on-write, then the superblock that points to it."""
        with self._lock:
            metadata = json.dumps(_encode_tree(root), separators=(",", ":")).encode()
            count = -(-len(metadata) // SECTOR_SIZE)
            new = [self._allocate() for _ in range(count)]
            for number, sector in enumerate(new):
                chunk = metadata[number * SECTOR_SIZE : (number + 1) * SECTOR_SIZE]
                self._seal(sector, chunk.ljust(SECTOR_SIZE, b"\0"))
            self._generation += 1
            pointers = struct.pack(f">{count}I", *new)
            superblock = _SUPERBLOCK.pack(_MAGIC, 1, self._generation, len(metadata)) + pointers
            if len(superblock) > SECTOR_SIZE:
                raise _error(errno.EFBIG, "the directory tree is too large for this filesystem")
            self._seal(0, superblock.ljust(SECTOR_SIZE, b"\0"))
            self._free.update(self._metadata_sectors)
            self._metadata_sectors = new

    def load(self) -> _Dir:
        """Read the tree back; every sector it names is marked in use."""
        superblock = self._open(0)
        magic, version, generation, length = _SUPERBLOCK.unpack_from(superblock)
        if magic != _MAGIC or version != 1:
            raise FileSystemCorruptError(errno.EIO, f"{self.path} has no Sanctorum superblock")
        count = -(-length // SECTOR_SIZE)
        pointers = list(struct.unpack_from(f">{count}I", superblock, _SUPERBLOCK.size))
        metadata = b"".join(self._open(sector) for sector in pointers)[:length]
        root = _decode_tree(json.loads(metadata))
        self._generation = generation
        self._metadata_sectors = pointers
        used = set(pointers)
        for node in _walk_files(root):
            used.update(node.sectors)
        self._free = set(range(1, self.sectors)) - used
        return root

    def close(self) -> None:
        os.close(self._fd)


def _encode_tree(node: _File | _Dir) -> Any:
    if isinstance(node, _Dir):
        return {name: _encode_tree(child) for name, child in node.children.items()}
    return [node.size, node.sectors]


def _decode_tree(data: Any) -> _Dir:
    root = _Dir()
    for name, value in data.items():
        if isinstance(value, dict):
            root.children[name] = _decode_tree(value)
        else:
            root.children[name] = _File(size=value[0], sectors=list(value[1]))
    return root


def _walk_files(node: _Dir) -> Iterator[_File]:
    for child in node.children.values():
        if isinstance(child, _Dir):
            yield from _walk_files(child)
        else:
            yield child


Storage = MemoryStorage | SectorStorage


# -- open files -------------------------------------------------------------------------------


class EnclaveFile(io.RawIOBase):
    """A binary file on an enclave filesystem (wrapped for buffering and text by ``open``)."""

    def __init__(self, fs: _Volume, path: str, node: _File, mode: str) -> None:
        super().__init__()
        self._fs, self.name, self._node = fs, path, node
        self._readable = "r" in mode or "+" in mode
        self._writable = any(flag in mode for flag in "wa+")
        self._append = "a" in mode
        self._position = node.size if self._append else 0
        self._dirty = False

    def readable(self) -> bool:
        return self._readable

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._readable:
            raise io.UnsupportedOperation("file not open for reading")
        data = self._fs.storage.read(self._node, self._position, len(buffer))
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def readall(self) -> bytes:
        if not self._readable:
            raise io.UnsupportedOperation("file not open for reading")
        data = self._fs.storage.read(self._node, self._position, self._node.size)
        self._position += len(data)
        return data

    def write(self, data: Any) -> int:
        if not self._writable:
            raise io.UnsupportedOperation("file not open for writing")
        data = bytes(data)
        if self._append:
            self._position = self._node.size
        self._fs.storage.write(self._node, self._position, data)
        self._position += len(data)
        self._dirty = True
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._node.size}
        position = base[whence] + offset
        if position < 0:
            raise OSError(errno.EINVAL, "negative seek position", self.name)
        self._position = position
        return position

    def tell(self) -> int:
        return self._position

    def truncate(self, size: int | None = None) -> int:
        size = self._position if size is None else size
        self._fs.storage.truncate(self._node, size)
        self._dirty = True
        return size

    def close(self) -> None:
        if not self.closed and self._dirty:
            self._fs.sync()
        super().close()


# -- the path API -----------------------------------------------------------------------------


class _Volume:
    """One filesystem: a tree plus a storage."""

    def __init__(self, storage: Storage, root: _Dir | None = None) -> None:
        self.storage = storage
        self.root = root or _Dir()
        self.lock = threading.RLock()

    def sync(self) -> None:
        self.storage.sync(self.root)

    def lookup(self, path: str) -> _File | _Dir:
        node: _File | _Dir = self.root
        for part in _parts(path):
            if not isinstance(node, _Dir):
                raise _error(errno.ENOTDIR, path)
            child = node.children.get(part)
            if child is None:
                raise _error(errno.ENOENT, path)
            node = child
        return node

    def parent(self, path: str) -> tuple[_Dir, str]:
        head, name = posixpath.split(path)
        if not name:
            raise _error(errno.EEXIST, path)  # the root
        parent = self.lookup(head)
        if not isinstance(parent, _Dir):
            raise _error(errno.ENOTDIR, head)
        return parent, name


class EnclaveFileSystem:
    """The enclave's filesystem: ``open``, ``read_bytes``, ``listdir``, ``mkdir``, …

    With both filesystems enabled, ``/tmp`` is the in-memory one and everything else persists.
    Errors are the usual ``FileNotFoundError``, ``IsADirectoryError``, ``NotADirectoryError``,
    ``FileExistsError`` and ``OSError`` (ENOSPC, ENOTEMPTY, …).
    """

    def __init__(self, persistent: _Volume | None, memory: _Volume | None) -> None:
        if persistent is None and memory is None:
            raise ValueError("a filesystem needs at least one volume")
        self._persistent, self._memory = persistent, memory

    def _volume(self, path: str) -> tuple[_Volume, str]:
        path = _normalise(path)
        if self._memory is not None and (
            self._persistent is None or path == _SCRATCH or path.startswith(_SCRATCH + "/")
        ):
            if self._persistent is not None:
                path = "/" + path[len(_SCRATCH) :].lstrip("/")
            return self._memory, path
        assert self._persistent is not None
        return self._persistent, path

    def open(
        self,
        path: str,
        mode: str = "r",
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:
        """Like the built-in ``open``: modes r, w, a, x with optional b and +."""
        if not set(mode) <= set("rwaxb+t") or sum(mode.count(c) for c in "rwax") != 1:
            raise ValueError(f"invalid mode {mode!r}")
        volume, inner = self._volume(path)
        with volume.lock:
            try:
                node = volume.lookup(inner)
            except FileNotFoundError:
                if "r" in mode:
                    raise _error(errno.ENOENT, path) from None
                parent, name = volume.parent(inner)
                node = _File()
                parent.children[name] = node
            else:
                if isinstance(node, _Dir):
                    raise _error(errno.EISDIR, path)
                if "x" in mode:
                    raise _error(errno.EEXIST, path)
                if "w" in mode:
                    volume.storage.truncate(node, 0)
        raw = EnclaveFile(volume, path, node, mode.replace("x", "w"))
        if "w" in mode or "x" in mode:
            raw._dirty = True
        buffered: BinaryIO
        if raw.readable() and raw.writable():
            buffered = io.BufferedRandom(raw, SECTOR_SIZE)
        elif raw.writable():
            buffered = io.BufferedWriter(raw, SECTOR_SIZE)
        else:
            buffered = io.BufferedReader(raw, SECTOR_SIZE)
        if "b" in mode:
            return buffered
        return io.TextIOWrapper(buffered, encoding or "utf-8", errors, newline)

    def read_bytes(self, path: str) -> bytes:
        with self.open(path, "rb") as file:
            data: bytes = file.read()
            return data

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.open(path, "wb") as file:
            file.write(data)

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        with self.open(path, "r", encoding=encoding) as file:
            text: str = file.read()
            return text

    def write_text(self, path: str, text: str, encoding: str = "utf-8") -> None:
        with self.open(path, "w", encoding=encoding) as file:
            file.write(text)

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def is_dir(self, path: str) -> bool:
        return self.exists(path) and self.stat(path).is_dir

    def is_file(self, path: str) -> bool:
        return self.exists(path) and not self.stat(path).is_dir

    def stat(self, path: str) -> FileStat:
        volume, inner = self._volume(path)
        with volume.lock:
            node = volume.lookup(inner)
        if isinstance(node, _Dir):
            return FileStat(0, True)
        return FileStat(node.size, False)

    def listdir(self, path: str = "/") -> list[str]:
        volume, inner = self._volume(path)
        with volume.lock:
            node = volume.lookup(inner)
            if not isinstance(node, _Dir):
                raise _error(errno.ENOTDIR, path)
            names = sorted(node.children)
        if _normalise(path) == "/" and self._memory and self._persistent and "tmp" not in names:
            names = sorted([*names, "tmp"])
        return names

    def mkdir(self, path: str, parents: bool = False, exist_ok: bool = False) -> None:
        volume, inner = self._volume(path)
        with volume.lock:
            if parents:
                current = "/"
                for part in _parts(inner):
                    current = posixpath.join(current, part)
                    try:
                        node = volume.lookup(current)
                    except FileNotFoundError:
                        parent, name = volume.parent(current)
                        parent.children[name] = _Dir()
                        continue
                    if not isinstance(node, _Dir):
                        raise _error(errno.ENOTDIR, current)
                if not exist_ok and not _parts(inner):
                    raise _error(errno.EEXIST, path)
            else:
                try:
                    volume.lookup(inner)
                except FileNotFoundError:
                    parent, name = volume.parent(inner)
                    parent.children[name] = _Dir()
                else:
                    if not exist_ok:
                        raise _error(errno.EEXIST, path) from None
            volume.sync()

    def remove(self, path: str) -> None:
        """Remove a file (``rmdir`` removes an empty directory)."""
        volume, inner = self._volume(path)
        with volume.lock:
            node = volume.lookup(inner)
            if isinstance(node, _Dir):
                raise _error(errno.EISDIR, path)
            parent, name = volume.parent(inner)
            del parent.children[name]
            volume.storage.release(node)
            volume.sync()

    def rmdir(self, path: str) -> None:
        volume, inner = self._volume(path)
        with volume.lock:
            node = volume.lookup(inner)
            if not isinstance(node, _Dir):
                raise _error(errno.ENOTDIR, path)
            if node.children:
                raise _error(errno.ENOTEMPTY, path)
            parent, name = volume.parent(inner)
            del parent.children[name]
            volume.sync()

    def rename(self, source: str, target: str) -> None:
        volume, inner = self._volume(source)
        target_volume, target_inner = self._volume(target)
        if target_volume is not volume:
            raise OSError(errno.EXDEV, "cannot rename across the /tmp boundary", target)
        with volume.lock:
            node = volume.lookup(inner)
            parent, name = volume.parent(inner)
            new_parent, new_name = volume.parent(target_inner)
            existing = new_parent.children.get(new_name)
            if isinstance(existing, _Dir):
                if not isinstance(node, _Dir):
                    raise _error(errno.EISDIR, target)
                if existing.children:
                    raise _error(errno.ENOTEMPTY, target)
            elif existing is not None:
                if isinstance(node, _Dir):
                    raise _error(errno.ENOTDIR, target)
                volume.storage.release(existing)
            if isinstance(node, _Dir) and (target_inner + "/").startswith(inner.rstrip("/") + "/"):
                raise OSError(errno.EINVAL, "cannot move a directory into itself", target)
            del parent.children[name]
            new_parent.children[new_name] = node
            volume.sync()

    def fsspec(self) -> Any:
        """This filesystem as an ``fsspec`` filesystem (for pandas and friends)."""
        from sanctorum.enclave.fsspec_adapter import EnclaveFsspec

        return EnclaveFsspec(self)

    def close(self) -> None:
        for volume in (self._persistent, self._memory):
            if volume is not None:
                volume.storage.close()


def memory_volume(capacity: int) -> _Volume:
    return _Volume(MemoryStorage(capacity))


def persistent_volume(path: Path, key: bytes, capacity: int) -> _Volume:
    """Open (or create) the filesystem in ``path``; a damaged one raises when read."""
    storage = SectorStorage(path, key, capacity)
    if storage.fresh:
        volume = _Volume(storage)
        volume.sync()
        return volume
    try:
        return _Volume(storage, storage.load())
    except BaseException:
        storage.close()
        raise
