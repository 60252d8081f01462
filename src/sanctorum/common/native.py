"""The record of a native dependency: every file of an installed distribution, with its hash.

A distribution with native code (numpy, say) cannot be imported from bytes in memory as pure
Python can: the dynamic linker loads shared libraries from files. So the bundle does not carry
such a distribution; it carries its **record** (``native/NAME.json``): the distribution's name
and version and, for each file it installed, the path relative to the directory it was
installed into, the SHA-256 and the size. The record is an entry of the bundle like any other,
so it is part of the code hash; the enclave checks the installed files against it before it
imports them (:mod:`sanctorum.enclave.native`), and the Gramine manifest makes them trusted
files with these hashes.

This module only encodes and checks records; it reads no files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sanctorum.common.errors import BundleError

NATIVE_DIR = "native/"
RUNTIME_PACKAGES = frozenset(
    {"sanctorum", "cryptography", "cffi", "_cffi_backend", "fsspec", "dcap_qvl"}
)
"""What an enclave may import besides its bundle and the standard library: Sanctorum's own
runtime and what it needs (fsspec for ``filesystem.fsspec()``, dcap_qvl under SGX). No
dependency may bring modules of these names, nor of the standard library's."""
RECORD_FORMAT = 1
NATIVE_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")
_VERSIONED_LIBRARY = re.compile(r"\.so(\.\d+)+$")  # libgfortran.so.5.0.0
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_FILE_SIZE = 1 << 40
# Recorded paths are written into the Gramine manifest, a TOML file that gramine-manifest
# renders as a Jinja template: none of TOML's or Jinja's special characters may appear.
PLAIN_TEXT = re.compile(r'[^\x00-\x1f\x7f"\\{}%#]*')


def is_native_file(path: str) -> bool:
    """Whether ``path`` is a shared library or extension module (not loadable from memory)."""
    return path.endswith(NATIVE_SUFFIXES) or bool(_VERSIONED_LIBRARY.search(path))


def normalize_name(name: str) -> str:
    """A distribution name as PEP 503 compares them: lower case, runs of ``-_.`` as ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def record_entry(name: str) -> str:
    """The bundle entry that holds the record of distribution ``name``."""
    return f"{NATIVE_DIR}{normalize_name(name)}.json"


@dataclass(frozen=True)
class RecordedFile:
    path: str
    """Relative to the directory the distribution was installed into (site-packages)."""
    sha256: str
    """Hex."""
    size: int


@dataclass(frozen=True)
class NativeDistribution:
    """The record of one installed distribution, as the build found it."""

    name: str
    version: str
    files: tuple[RecordedFile, ...]
    """Sorted by path."""

    def encode(self) -> bytes:
        """The canonical bytes of the bundle entry (deterministic, so builds reproduce)."""
        document = {
            "format": RECORD_FORMAT,
            "name": self.name,
            "version": self.version,
            "files": [[f.path, f.sha256, f.size] for f in self.files],
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes, where: str) -> NativeDistribution:
        """Parse and check a record; :class:`BundleError` says what is wrong."""

        def bad(why: str) -> BundleError:
            return BundleError(f"{where}: the native dependency record is malformed: {why}")

        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise bad("not UTF-8 JSON") from None
        if not isinstance(document, dict) or set(document) != {
            "format",
            "name",
            "version",
            "files",
        }:
            raise bad("it must hold exactly format, name, version and files")
        if document["format"] != RECORD_FORMAT:
            raise bad(f"format {document['format']!r}; this runtime reads {RECORD_FORMAT}")
        name, version, entries = document["name"], document["version"], document["files"]
        if not isinstance(name, str) or not name or not isinstance(version, str) or not version:
            raise bad("name and version must be non-empty strings")
        if not isinstance(entries, list) or not entries:
            raise bad("files must be a non-empty list")
        files = []
        for entry in entries:
            if (
                not isinstance(entry, list)
                or len(entry) != 3
                or not isinstance(entry[0], str)
                or not isinstance(entry[1], str)
                or isinstance(entry[2], bool)
                or not isinstance(entry[2], int)
            ):
                raise bad(f"a file entry must be [path, sha256, size], not {entry!r}")
            path, digest, size = entry
            if not safe_relative_path(path) or not PLAIN_TEXT.fullmatch(path):
                raise bad(f"unsafe file path {path!r}")
            if not _HEX64.fullmatch(digest) or not 0 <= size <= MAX_FILE_SIZE:
                raise bad(f"bad hash or size for {path!r}")
            files.append(RecordedFile(path, digest, size))
        paths = [f.path for f in files]
        if paths != sorted(set(paths)):
            raise bad("file paths must be sorted and unique")
        return cls(name, version, tuple(files))

    def top_level_names(self) -> frozenset[str]:
        """The top-level modules and packages it installs (``numpy``, not ``numpy.libs``)."""
        names = set()
        for recorded in self.files:
            first, slash, _ = recorded.path.partition("/")
            if not slash:  # a module file at the top: six.py, _cffi_backend.cpython-311-….so
                if not (first.endswith(".py") or is_native_file(first)):
                    continue
                first = first.partition(".")[0]
            if first.isidentifier():
                names.add(first)
        return frozenset(names)


def safe_relative_path(path: str) -> bool:
    """A relative POSIX path that stays inside its directory."""
    parts = path.split("/")
    return (
        bool(path)
        and not path.startswith("/")
        and "\\" not in path
        and "\0" not in path
        and all(part not in ("", ".", "..") for part in parts)
    )
