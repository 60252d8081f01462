"""Imports an enclave's native dependencies from installed files checked against their record.

The bundle holds a record of each native dependency (:mod:`sanctorum.common.native`): every file
with its SHA-256, part of the code hash. Before the enclave imports anything, every recorded
file is checked (present, a regular file, the recorded size and hash), and any difference
refuses the load. Then :class:`NativeFinder` imports those packages' modules only from recorded
files: a Python module from the bytes it hashed again as it read them (so what runs is what was
measured), an extension module after hashing its file once more; a module that is not recorded
is not imported at all.

What this cannot close outside SGX: the dynamic linker reads a shared library from the file
after the check, so a host that swaps the file in between runs its own code. In SGX, Gramine
checks every trusted file against the hash in the signed manifest as it is read.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from sanctorum.common.errors import DependencyMismatchError
from sanctorum.common.native import NativeDistribution, RecordedFile


@dataclass(frozen=True)
class InstalledDistribution:
    """A native dependency found installed here, all of whose recorded files were checked."""

    record: NativeDistribution
    root: Path
    """The directory it was installed into (its site-packages)."""

    def path_of(self, recorded: RecordedFile) -> Path:
        return self.root / recorded.path


def check_installed(
    records: Sequence[NativeDistribution], search_path: Sequence[str] | None = None
) -> list[InstalledDistribution]:
    """Find each recorded distribution on ``search_path`` (``sys.path``) and check every file
    it recorded; :class:`DependencyMismatchError` names the first difference, and the version
    installed if it is another one."""
    found = []
    path = list(sys.path if search_path is None else search_path)
    for record in records:
        matches = importlib.metadata.distributions(name=record.name, path=path)
        distribution = next(iter(matches), None)  # found by its directory's name, nothing read
        if distribution is None:
            raise DependencyMismatchError(
                f"the enclave was built with the native dependency {record.name} "
                f"{record.version}, which is not installed for this Python ({sys.executable}): "
                f"install the same wheel (pip install {record.name}=={record.version}) where "
                "the host runs"
            )
        installed = InstalledDistribution(record, Path(str(distribution.locate_file(""))))
        try:
            for recorded in record.files:
                read_checked(installed, recorded)
        except DependencyMismatchError as error:
            other = _installed_version(installed)
            if other is not None and other != record.version:
                raise DependencyMismatchError(
                    f"the enclave was built with {record.name} {record.version}, but the "
                    f"Python that runs it ({sys.executable}) has {record.name} {other}: its "
                    "files are part of the code hash, so install the same wheel there "
                    f"(pip install {record.name}=={record.version})"
                ) from error
            raise
        found.append(installed)
    return found


def _installed_version(installed: InstalledDistribution) -> str | None:
    """The version in the installed METADATA the record names, read with the care of any
    recorded file (it may be a FIFO, huge or not UTF-8): None if it cannot be read."""
    for recorded in installed.record.files:
        if recorded.path.endswith(".dist-info/METADATA"):
            try:
                data = _read_regular(installed.path_of(recorded), 1 << 20)
            except OSError:
                return None
            for line in data.decode("utf-8", "replace").splitlines():
                name, colon, value = line.partition(":")
                if colon and name.strip().lower() == "version":
                    return value.strip()[:100]
    return None


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at ``path``, if it holds at most ``limit``; OSError if it
    is anything else. Opened non-blocking: a FIFO in its place is refused, not waited on."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(f"{path} is not a regular file")
        if status.st_size > limit:
            raise OSError(f"{path} holds {status.st_size} bytes, over {limit}")
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(descriptor, min(limit + 1 - size, 1 << 20))):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(descriptor)
    data = b"".join(chunks)
    if len(data) > limit:
        raise OSError(f"{path} grew past {limit} bytes while it was read")
    return data


def read_checked(installed: InstalledDistribution, recorded: RecordedFile) -> bytes:
    """The file's bytes, if they are the recorded ones; :class:`DependencyMismatchError` if not
    (missing, not a regular file, another size or another hash)."""
    path = installed.path_of(recorded)
    name, version = installed.record.name, installed.record.version
    reinstall = f"install the same wheel (pip install --force-reinstall {name}=={version})"
    try:
        data = _read_regular(path, recorded.size)
    except FileNotFoundError:
        raise DependencyMismatchError(
            f"{name} {version}: the recorded file {path} is missing: {reinstall}"
        ) from None
    except OSError as error:
        raise DependencyMismatchError(
            f"{name} {version}: {path} is not the regular file of {recorded.size} bytes the "
            f"enclave was built with ({error.strerror or error}): {reinstall}"
        ) from None
    if len(data) != recorded.size or hashlib.sha256(data).hexdigest() != recorded.sha256:
        raise DependencyMismatchError(
            f"{name} {version}: {path} differs from the file the enclave was built with (its "
            f"SHA-256 is not the recorded one): the host's copy was changed, or comes from "
            f"another build; {reinstall}"
        )
    return data


class _CheckedSourceLoader(importlib.abc.Loader):
    """Runs a recorded Python module from the bytes it checks as it reads them."""

    def __init__(self, installed: InstalledDistribution, recorded: RecordedFile) -> None:
        self._installed = installed
        self._recorded = recorded

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        source = read_checked(self._installed, self._recorded)
        filename = str(self._installed.path_of(self._recorded))
        exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)  # noqa: S102

    def get_source(self, fullname: str) -> str:
        return read_checked(self._installed, self._recorded).decode("utf-8", "replace")


class _CheckedExtensionLoader(importlib.machinery.ExtensionFileLoader):
    """Loads a recorded extension module once its file hashes to the record again."""

    def __init__(self, fullname: str, installed: InstalledDistribution, recorded: RecordedFile):
        super().__init__(fullname, str(installed.path_of(recorded)))
        self._installed = installed
        self._recorded = recorded

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        read_checked(self._installed, self._recorded)
        return super().create_module(spec)


_SUFFIXES = (*importlib.machinery.EXTENSION_SUFFIXES, ".py")


@dataclass(frozen=True)
class _Index:
    """A checked distribution's recorded files by path, and the directories they make."""

    installed: InstalledDistribution
    files: dict[str, RecordedFile]
    directories: frozenset[str]

    @classmethod
    def of(cls, installed: InstalledDistribution) -> _Index:
        files = {recorded.path: recorded for recorded in installed.record.files}
        directories = frozenset(
            path.rsplit("/", depth)[0] for path in files for depth in range(1, path.count("/") + 1)
        )
        return cls(installed, files, directories)


class NativeFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of checked native dependencies among their recorded files only."""

    def __init__(self, installed: Sequence[InstalledDistribution]) -> None:
        indexes = [_Index.of(distribution) for distribution in installed]
        self._owners = {
            name: index for index in indexes for name in index.installed.record.top_level_names()
        }

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        index = self._owners.get(fullname.partition(".")[0])
        if index is None:
            return None
        installed, files = index.installed, index.files
        relative = fullname.replace(".", "/")
        # As Python's own finder: a package before a module, an extension before source.
        for base, is_package in ((f"{relative}/__init__", True), (relative, False)):
            for suffix in _SUFFIXES:
                recorded = files.get(base + suffix)
                if recorded is None:
                    continue
                location = str(installed.path_of(recorded))
                loader: importlib.abc.Loader = (
                    _CheckedSourceLoader(installed, recorded)
                    if suffix == ".py"
                    else _CheckedExtensionLoader(fullname, installed, recorded)
                )
                return importlib.util.spec_from_file_location(
                    fullname,
                    location,
                    loader=loader,
                    submodule_search_locations=(
                        [str(installed.root / relative)] if is_package else None
                    ),
                )
        if relative in index.directories:  # a namespace package
            spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
            spec.submodule_search_locations = [str(installed.root / relative)]
            return spec
        raise ModuleNotFoundError(
            f"the enclave imports {fullname!r}, which is not among the files recorded for "
            f"{installed.record.name} {installed.record.version} when the enclave was built, "
            "so it is not imported",
            name=fullname,
        )

    def install(self) -> None:
        """Put this finder before every finder that reads the host's disk unchecked."""
        sys.meta_path.insert(0, self)
