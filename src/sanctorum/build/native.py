"""Recording an installed distribution with native code (see :mod:`sanctorum.common.native`)."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
from pathlib import Path

from sanctorum.common.errors import BundleError
from sanctorum.common.native import NativeDistribution, RecordedFile

# Written by the installer for this installation, so they differ between machines with the
# same wheel; the enclave never needs them.
_INSTALLATION_FILES = {"RECORD", "RECORD.jws", "RECORD.p7s", "INSTALLER", "REQUESTED"}
_INSTALLATION_FILES |= {"direct_url.json"}


def installed_root(distribution: importlib.metadata.Distribution) -> Path:
    """The directory the distribution was installed into (its site-packages)."""
    return Path(str(distribution.locate_file(""))).resolve()


def record_distribution(distribution: importlib.metadata.Distribution) -> NativeDistribution:
    """The record of every file ``distribution`` installed into its site-packages, each hashed
    here and checked against the installer's RECORD, so a file changed since it was installed
    is refused rather than measured."""
    name = distribution.metadata["Name"]
    entries = distribution.files or ()
    root = installed_root(distribution)
    files = []
    for entry in entries:
        posix = entry.as_posix()
        parts = posix.split("/")
        if (
            posix.startswith(("/", "../"))  # scripts and headers, outside site-packages
            or "__pycache__" in parts  # compiled on this machine; the enclave compiles anew
            or posix.endswith((".pyc", ".pyo"))
            or (parts[0].endswith(".dist-info") and parts[-1] in _INSTALLATION_FILES)
        ):
            continue
        path = root / posix
        try:
            data = path.read_bytes()
        except OSError as error:
            raise BundleError(
                f"dependency {name!r}: its file {posix} is missing or unreadable "
                f"({error.strerror or error}); reinstall it (pip install --force-reinstall {name})"
            ) from None
        if entry.hash is not None and not _matches(data, entry.hash.mode, entry.hash.value):
            raise BundleError(
                f"dependency {name!r}: {path} differs from the hash pip recorded when it was "
                "installed: it was changed since, and changed code must not be measured as "
                f"{name}. Reinstall it (pip install --force-reinstall {name}) and build again"
            )
        files.append(RecordedFile(posix, hashlib.sha256(data).hexdigest(), len(data)))
    files.sort(key=lambda recorded: recorded.path)
    return NativeDistribution(name, distribution.version, tuple(files))


def _matches(data: bytes, mode: str, value: str) -> bool:
    """Whether ``data`` has the RECORD hash ``mode=value`` (urlsafe base64, unpadded)."""
    if mode not in hashlib.algorithms_guaranteed or mode.startswith("shake"):
        raise BundleError(f"a RECORD names the hash {mode!r}, which this Python does not have")
    digest = base64.urlsafe_b64encode(hashlib.new(mode, data).digest()).rstrip(b"=")
    return digest.decode() == value
