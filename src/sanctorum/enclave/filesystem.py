"""Enclave filesystems: an in-memory scratch filesystem and a persistent encrypted one.

Both keep their directory tree in enclave memory and offer the same path-based API
(:class:`EnclaveFileSystem`) with POSIX-like errors. They differ in where file contents live:

- :class:`MemoryStorage`: in enclave memory, empty at every start, size-limited.
- :class:`SectorStorage`: in **one host file** of fixed-size sectors. Logical sector *i* is
  sealed with AES-GCM (a fresh random nonce each write, the sector number as associated data, so
  a sector moved elsewhere does not open) and stored in physical slot ``permutation[i]``, a
  shuffle keyed by the filesystem's own key, so the host cannot tell which slots belong
  together. The file is filled with random-looking bytes when it is created, so slots in use
  cannot be told from free ones. Logical sectors 0 and 1 are the superblocks, used in turn by
  commits; each points to the sectors that hold the serialised directory tree.

The persistent filesystem is bound to the enclave's sealed state: each commit of the state
records the filesystem's key, generation and root hash (:class:`FileSystemRecord`), so a file
that was emptied, or put back from an older copy, or a single sector rolled back, is refused.
"""

from __future__ import annotations

import base64
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
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sanctorum.common.bundle import MIN_FILESYSTEM_SIZE
from sanctorum.common.errors import FileSystemRollbackError, SealedStateError

SECTOR_SIZE = 64 * 1024
_NONCE = 12
_SEALING = 1 + _NONCE  # which key, and the nonce: names one sealing of a sector
# What the directory tree grows by, at most, per sector ("4294967295," and 13 bytes in base64)
# and per entry besides its name ('"":{},' or '"":[0,[],""],' and a size).
_TREE_BYTES_PER_SECTOR = 11 + 18
_TREE_BYTES_PER_ENTRY = 32
_TAG = 16
SLOT_SIZE = _NONCE + SECTOR_SIZE + _TAG
# magic, format, generation, tree length, tree sector count; then the tree's sector numbers
# (u32 each) and the nonces of their sealings
_SUPERBLOCK = struct.Struct(">4sBQII")
_MAGIC = b"SNFS"
_FORMAT = 2
_FIRST_DATA_SECTOR = 2  # sectors 0 and 1 are the superblocks
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

    def changed(self) -> None:
        """Nothing to persist."""

    def add_entry(self, name: str) -> None:
        """Names take no room here."""

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class FileSystemRecord:
    """What the sealed state records of a persistent filesystem at a commit."""

    keys: tuple[bytes, ...]
    """The filesystem's own random keys, oldest first (kept in the sealed state, so they
    survive upgrades). Each upgrade adds one, which seals everything written from then on: the
    sealed state of the versions it retired does not hold it. The first also keys the layout."""
    sectors: int
    generation: int
    """How many commits the filesystem has had."""
    root: bytes
    """SHA-256 of the superblock of that commit: the root of the filesystem's tree."""


class SectorStorage:
    """File contents in one host file of sealed, shuffled, fixed-size sectors.

    Integrity is a tree rooted in the sealed state: the record names the superblock by hash;
    the superblock names each sector of the directory tree by its last sealing (the key's
    number and the nonce); the directory tree names each data sector the same way. Only the
    enclave can seal, and a nonce is never reused, so a nonce names exactly one sealing: an
    older sealing of a sector, or another sector's, is refused when read. (Hashing each 64 KiB
    sector instead would cost eight times the AES-GCM it guards: docs/decisions.md.)

    Changes are durable at :meth:`commit` only. Until then the committed tree stays intact on
    disk — its sectors are never overwritten (a write copies the sector elsewhere) and its
    superblock lives in the other of two superblock sectors — so the enclave can always be
    restarted from the last sealed state the host stored.
    """

    def __init__(self, path: Path, capacity: int, record: FileSystemRecord | None) -> None:
        self.path = path
        sectors = max(MIN_FILESYSTEM_SIZE, capacity) // SECTOR_SIZE
        if record is not None and record.sectors != sectors:
            raise FileSystemRollbackError(
                f"the filesystem in {path} has {record.sectors} sectors, but the enclave's "
                f"filesystem_size asks for {sectors}: resizing a persistent filesystem is not "
                "supported; keep the filesystem_size it was made with"
            )
        self.sectors = sectors
        self._keys = list(record.keys) if record is not None else [secrets.token_bytes(32)]
        self._aeads = [AESGCM(key) for key in self._keys]
        # A keyed pseudo-random permutation: order the sector numbers by an AES-CTR keystream.
        stream = Cipher(algorithms.AES(self._keys[0]), modes.CTR(bytes(16))).encryptor()
        sort_keys = stream.update(bytes(16 * sectors))
        self._slot = sorted(range(sectors), key=lambda i: sort_keys[16 * i : 16 * i + 16])
        expected = sectors * SLOT_SIZE
        self._fd = self._open_file(expected, fresh=record is None)
        # sector → its last sealing: the number of the key (u8) and the nonce
        self._sealings: dict[int, bytes] = {}
        self._committed: set[int] = set()  # sectors the last commit's tree uses
        self._free = set(range(_FIRST_DATA_SECTOR, sectors))
        self._generation = 0 if record is None else record.generation
        self.record = record  # the last commit's
        # What the next commit's directory tree will take, estimated: its size at the last
        # commit and what was added since. Writes keep room for it (see _keep_room).
        self._tree_bytes = 2
        self._lock = threading.Lock()
        self.dirty = record is None  # a new filesystem is committed at once

    def _open_file(self, expected: int, *, fresh: bool) -> int:
        path = self.path
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if fresh else 0), 0o600)
        except FileNotFoundError:
            raise FileSystemRollbackError(
                f"the filesystem file {path} is missing, but the sealed state records a "
                "filesystem in it: put back the file that goes with this sealed state"
            ) from None
        size = os.fstat(fd).st_size
        if fresh and size == 0:
            self._fd = fd
            self._fill(expected)
            return fd
        problem = None
        if fresh:
            problem = (
                f"the filesystem file {path} holds {size} bytes, but the sealed state records no "
                "filesystem: start the enclave with the sealed state that goes with the file, or "
                "remove the file to start with an empty filesystem"
            )
        elif size == 0:
            problem = (
                f"the filesystem file {path} is empty, but the sealed state records a filesystem "
                "in it: it was emptied; put back the file that goes with this sealed state"
            )
        elif size != expected:
            problem = (
                f"the filesystem file {path} is {size} bytes, not {expected}: it was truncated "
                "or extended, or belongs to a filesystem of another size"
            )
        if problem is not None:
            os.close(fd)
            raise FileSystemRollbackError(problem)
        return fd

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
        key = len(self._keys) - 1  # the newest
        sealed = self._aeads[key].encrypt(nonce, data, struct.pack(">Q", sector))
        os.pwritev(self._fd, [nonce, sealed], self._slot[sector] * SLOT_SIZE)
        self._sealings[sector] = bytes([key]) + nonce

    def _decrypt(self, sector: int, sealing: bytes | None) -> bytes:
        """The sector's contents if it holds ``sealing`` (None: any sealing with the newest
        key, for the superblock, which the sealed state checks by hash)."""
        slot = os.pread(self._fd, SLOT_SIZE, self._slot[sector] * SLOT_SIZE)
        view = memoryview(slot)
        try:
            if len(slot) != SLOT_SIZE:
                raise InvalidTag
            key = len(self._keys) - 1
            if sealing is not None:
                if len(sealing) != _SEALING or sealing[0] > key or view[:_NONCE] != sealing[1:]:
                    raise InvalidTag  # another sealing than the last: an older one, put back
                key = sealing[0]
            return self._aeads[key].decrypt(view[:_NONCE], view[_NONCE:], struct.pack(">Q", sector))
        except InvalidTag:
            raise FileSystemCorruptError(
                errno.EIO,
                f"sector {sector} of the filesystem file {self.path} does not hold its last "
                "sealing: it was tampered with, truncated, rolled back to an older version, or "
                "swapped with another sector",
                str(self.path),
            ) from None

    def _open(self, sector: int) -> bytes:
        return self._decrypt(sector, self._sealings.get(sector, b""))

    def _keep_room(self, tree_growth: int, sectors: int = 0) -> None:
        """Refuse (ENOSPC) a change that would leave too few free sectors for the next
        commit's directory tree (one more than its estimate), so a full filesystem can always
        commit the call that deletes files."""
        tree = -(-(self._tree_bytes + tree_growth) // SECTOR_SIZE) + 1
        if len(self._free) < tree + sectors:
            raise _error(errno.ENOSPC, f"filesystem {self.path} is full")
        self._tree_bytes += tree_growth

    def _allocate(self) -> int:
        """A free sector for file data."""
        self._keep_room(_TREE_BYTES_PER_SECTOR, 1)
        return self._free.pop()

    def add_entry(self, name: str) -> None:
        """A file or directory called ``name`` is about to join the tree."""
        self.dirty = True
        self._keep_room(len(name.encode()) + _TREE_BYTES_PER_ENTRY)

    def add_key(self) -> None:
        """Seal from now on with a new key (after an upgrade: see :class:`FileSystemRecord`)."""
        if len(self._keys) == 255:
            raise FileSystemCorruptError(
                errno.EOVERFLOW, f"the filesystem {self.path} has had 254 upgrades, its limit"
            )
        self._keys.append(secrets.token_bytes(32))
        self._aeads.append(AESGCM(self._keys[-1]))
        self.dirty = True

    def _discard(self, sector: int) -> None:
        # A sector of the committed tree stays untouched until the next commit.
        if sector not in self._committed:
            self._free.add(sector)

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
        self.dirty = True
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
                previous = node.sectors[index]
            else:
                previous = node.sectors[index]
                if previous in self._committed:  # copy on write: keep the committed tree
                    node.sectors[index] = self._allocate()
            sector = node.sectors[index]
            if take == SECTOR_SIZE:
                self._seal(sector, bytes(piece))
            else:  # a partial sector: read, modify, write
                stored = index * SECTOR_SIZE < node.size
                current = bytearray(self._open(previous)) if stored else bytearray(SECTOR_SIZE)
                current[within : within + take] = piece
                self._seal(sector, bytes(current))
            position += take
        node.size = max(node.size, end)

    def truncate(self, node: _File, size: int) -> None:
        self.dirty = True
        keep = -(-size // SECTOR_SIZE)
        for sector in node.sectors[keep:]:
            self._discard(sector)
        del node.sectors[keep:]
        node.size = min(node.size, size)

    def release(self, node: _File) -> None:
        self.truncate(node, 0)

    def changed(self) -> None:
        self.dirty = True

    # the tree on disk

    def commit(self, root: _Dir) -> FileSystemRecord:
        """Write the tree and a superblock pointing to it; the result goes in the sealed state.

        The file is flushed to the host's disk first: a sealed state the host stores must never
        name a superblock that a power cut could lose."""
        with self._lock:
            metadata = json.dumps(_encode_tree(root, self._sealings), separators=(",", ":"))
            encoded = metadata.encode()
            count = -(-len(encoded) // SECTOR_SIZE)
            if _SUPERBLOCK.size + count * (4 + _SEALING) > SECTOR_SIZE:
                raise _error(errno.EFBIG, "the directory tree is too large for this filesystem")
            if count > len(self._free):
                raise _error(errno.ENOSPC, f"filesystem {self.path} is full: delete files")
            tree_sectors = [self._free.pop() for _ in range(count)]
            for number, sector in enumerate(tree_sectors):
                chunk = encoded[number * SECTOR_SIZE : (number + 1) * SECTOR_SIZE]
                self._seal(sector, chunk.ljust(SECTOR_SIZE, b"\0"))
            generation = self._generation + 1
            superblock = b"".join(
                (
                    _SUPERBLOCK.pack(_MAGIC, _FORMAT, generation, len(encoded), count),
                    struct.pack(f">{count}I", *tree_sectors),
                    *(self._sealings[sector] for sector in tree_sectors),
                )
            ).ljust(SECTOR_SIZE, b"\0")
            # Two superblock sectors, used in turn: the committed one is never overwritten.
            self._seal(generation % _FIRST_DATA_SECTOR, superblock)
            os.fdatasync(self._fd)
            if self.record is None:  # a new file: make its directory entry durable too
                _sync_directory(self.path.parent)
            used = set(tree_sectors)
            for node in _walk_files(root):
                used.update(node.sectors)
            self._free |= self._committed - used
            self._committed = used
            self._generation = generation
            self._tree_bytes = len(encoded)
            self.dirty = False
            root_hash = _sha256(superblock)
            self.record = FileSystemRecord(tuple(self._keys), self.sectors, generation, root_hash)
            return self.record

    def load(self, record: FileSystemRecord) -> _Dir:
        """Read back the tree ``record`` names; every sector it uses is marked in use."""
        try:
            superblock = self._decrypt(record.generation % _FIRST_DATA_SECTOR, None)
        except FileSystemCorruptError:
            superblock = b""
        if _sha256(superblock) != record.root:
            raise FileSystemRollbackError(
                f"the filesystem file {self.path} does not hold the filesystem the sealed state "
                f"records (commit {record.generation}): it is an older or newer copy, or "
                "another enclave's; put back the file that goes with this sealed state"
            )
        magic, version, generation, length, count = _SUPERBLOCK.unpack_from(superblock)
        if magic != _MAGIC or version != _FORMAT or generation != record.generation:
            raise FileSystemCorruptError(errno.EIO, f"{self.path} has no Sanctorum superblock")
        offset = _SUPERBLOCK.size
        tree_sectors = list(struct.unpack_from(f">{count}I", superblock, offset))
        offset += 4 * count
        for number, sector in enumerate(tree_sectors):
            start = offset + number * _SEALING
            self._sealings[sector] = superblock[start : start + _SEALING]
        metadata = b"".join(self._open(sector) for sector in tree_sectors)[:length]
        root = _decode_tree(json.loads(metadata), self._sealings)
        used = set(tree_sectors)
        for node in _walk_files(root):
            used.update(node.sectors)
        self._committed = used
        self._free = set(range(_FIRST_DATA_SECTOR, self.sectors)) - used
        self._tree_bytes = length
        return root

    def close(self) -> None:
        os.close(self._fd)


def _sha256(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def _sync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # not every filesystem (Gramine's mounts) opens directories
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _encode_tree(node: _File | _Dir, sealings: dict[int, bytes]) -> Any:
    if isinstance(node, _Dir):
        return {name: _encode_tree(child, sealings) for name, child in node.children.items()}
    joined = b"".join(sealings[sector] for sector in node.sectors)
    return [node.size, node.sectors, base64.b64encode(joined).decode()]


def _decode_tree(data: Any, sealings: dict[int, bytes]) -> _Dir:
    root = _Dir()
    for name, value in data.items():
        if isinstance(value, dict):
            root.children[name] = _decode_tree(value, sealings)
        else:
            size, sectors, joined = value
            raw = base64.b64decode(joined)
            for number, sector in enumerate(sectors):
                sealings[sector] = raw[number * _SEALING : (number + 1) * _SEALING]
            root.children[name] = _File(size=size, sectors=list(sectors))
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
            self._fs.changed()
        super().close()


# -- the path API -----------------------------------------------------------------------------


class _Volume:
    """One filesystem: a tree plus a storage."""

    def __init__(self, storage: Storage, root: _Dir | None = None) -> None:
        self.storage = storage
        self.root = root or _Dir()
        self.lock = threading.RLock()

    def changed(self) -> None:
        self.storage.changed()

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
                volume.storage.add_entry(name)
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
                        volume.storage.add_entry(name)
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
                    volume.storage.add_entry(name)
                    parent.children[name] = _Dir()
                else:
                    if not exist_ok:
                        raise _error(errno.EEXIST, path) from None
            volume.changed()

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
            volume.changed()

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
            volume.changed()

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
            volume.storage.add_entry(new_name)  # before anything changes: it may refuse
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
            volume.changed()

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


class PersistentVolume(_Volume):
    """The persistent filesystem: a tree in a :class:`SectorStorage`, committed on demand."""

    storage: SectorStorage

    def __init__(self, storage: SectorStorage, root: _Dir | None = None) -> None:
        super().__init__(storage, root)

    @property
    def dirty(self) -> bool:
        """Whether anything changed since the last commit."""
        return self.storage.dirty

    def commit(self) -> FileSystemRecord:
        """Make the current tree durable (if anything changed since the last commit); the
        record goes in the enclave's sealed state."""
        with self.lock:
            record = self.storage.record
            if record is not None and not self.storage.dirty:
                return record
            return self.storage.commit(self.root)


def persistent_volume(
    path: Path, capacity: int, record: FileSystemRecord | None
) -> PersistentVolume:
    """Open the filesystem ``record`` names in ``path``, or with no record create one (in a
    missing or empty file); a file that does not match the record raises
    :class:`FileSystemRollbackError`, a damaged sector raises when read."""
    storage = SectorStorage(path, capacity, record)
    if record is None:
        return PersistentVolume(storage)
    try:
        return PersistentVolume(storage, storage.load(record))
    except BaseException:
        storage.close()
        raise
