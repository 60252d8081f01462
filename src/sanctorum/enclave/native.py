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
    it recorded; :class:`DependencyMismatchError` names the first difference."""
    found = []
    for record in records:
        path = list(sys.path if search_path is None else search_path)
        matches = importlib.metadata.distributions(name=record.name, path=path)
        distribution = next(iter(matches), None)
        built = f"{record.name} {record.version}"
        if distribution is None:
            raise DependencyMismatchError(
                f"the enclave was built with the native dependency {built}, which is not "
                f"installed for this Python ({sys.executable}): install the same wheel "
                f"(pip install {record.name}=={record.version}) where the host runs"
            )
        if distribution.version != record.version:
            raise DependencyMismatchError(
                f"the enclave was built with {built}, but this machine has "
                f"{record.name} {distribution.version}: its files are part of the code hash, so "
                f"install the same wheel (pip install {record.name}=={record.version})"
            )
        installed = InstalledDistribution(record, Path(str(distribution.locate_file(""))))
        for recorded in record.files:
            read_checked(installed, recorded)
        found.append(installed)
    return found


def read_checked(installed: InstalledDistribution, recorded: RecordedFile) -> bytes:
    """The file's bytes, if they are the recorded ones; :class:`DependencyMismatchError` if not.

    Opened without following the host into a blocking read: a FIFO or device in place of a
    file is refused, not waited on."""
    path = installed.path_of(recorded)
    name = f"{installed.record.name} {installed.record.version}"
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise DependencyMismatchError(
            f"{name}: the recorded file {recorded.path} cannot be read here "
            f"({error.strerror or error}): install the same wheel the enclave was built with"
        ) from None
    with open(descriptor, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode) or status.st_size != recorded.size:
            raise DependencyMismatchError(
                f"{name}: {path} is not the file the enclave was built with (it should be a "
                f"regular file of {recorded.size} bytes): install the same wheel (pip install "
                f"--force-reinstall {installed.record.name}=={installed.record.version})"
            )
        data = file.read(recorded.size + 1)
    if len(data) != recorded.size or hashlib.sha256(data).hexdigest() != recorded.sha256:
        raise DependencyMismatchError(
            f"{name}: {path} differs from the file the enclave was built with (its SHA-256 is "
            "not the recorded one): the host's copy was changed, or comes from another build; "
            f"install the same wheel (pip install --force-reinstall "
            f"{installed.record.name}=={installed.record.version})"
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


class NativeFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of checked native dependencies among their recorded files only."""

    def __init__(self, installed: Sequence[InstalledDistribution]) -> None:
        self._owners = {
            name: distribution
            for distribution in installed
            for name in distribution.record.top_level_names()
        }
        self._files = {
            id(distribution): {f.path: f for f in distribution.record.files}
            for distribution in installed
        }
        self._directories = {
            id(distribution): {
                "/".join(parts[:end])
                for f in distribution.record.files
                for parts in [f.path.split("/")]
                for end in range(1, len(parts))
            }
            for distribution in installed
        }

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        installed = self._owners.get(fullname.partition(".")[0])
        if installed is None:
            return None
        files = self._files[id(installed)]
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
        if relative in self._directories[id(installed)]:  # a namespace package
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
