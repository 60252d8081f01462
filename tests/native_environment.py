"""Installed distributions the tests can change: fake ones written by hand, and a host's own
virtual environment holding copies of real ones (numpy) ahead of the test environment's."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path


def record_hash(data: bytes) -> str:
    """A RECORD hash, as pip writes it."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def write_distribution(
    site: Path, name: str, version: str, files: dict[str, bytes], *, record: bool = True
) -> Path:
    """Install a distribution by hand into ``site`` as pip would: its files, METADATA,
    INSTALLER and a RECORD with the hashes (left out with ``record=False``)."""
    info = f"{name.replace('-', '_')}-{version}.dist-info"
    every = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/INSTALLER": b"pip\n",
    }
    for relative, data in every.items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if record:
        lines = [f"{p},{record_hash(d)},{len(d)}" for p, d in every.items()]
        lines += [f"../../../bin/{name}-tool,{record_hash(b'#!')},2", f"{info}/RECORD,,"]
        (site / info / "RECORD").write_text("\n".join(lines) + "\n")
    return site


def copy_distribution(name: str, site: Path) -> None:
    """Copy the installed files of distribution ``name`` into ``site`` (not its scripts)."""
    distribution = importlib.metadata.distribution(name)
    root = Path(str(distribution.locate_file("")))
    for entry in distribution.files or ():
        posix = entry.as_posix()
        if posix.startswith("..") or "__pycache__" in posix:
            continue
        target = site / posix
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / posix, target)


def host_environment(directory: Path, *copies: str) -> tuple[Path, Path]:
    """A virtual environment for a host process: its own site-packages holds copies of the
    distributions ``copies`` and comes before this test environment's packages (sanctorum
    among them). Its python and its site-packages."""
    venv = directory / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # addsitedir, not a plain path: the test environment's own .pth files (the editable
    # install of sanctorum) must be read too.
    test_site = sysconfig.get_paths()["purelib"]
    (site / "test_environment.pth").write_text(f"import site; site.addsitedir({test_site!r})\n")
    for name in copies:
        copy_distribution(name, site)
    return venv / "bin" / "python", site


def replace_file(path: Path, data: bytes) -> None:
    """Put new bytes at ``path`` as a new file (never writing through a shared inode)."""
    path.unlink()
    path.write_bytes(data)


def flip_byte(path: Path, offset: int = -100) -> None:
    """Change one byte of ``path``, keeping its size."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    replace_file(path, bytes(data))
