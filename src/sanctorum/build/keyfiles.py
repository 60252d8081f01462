"""Writing key files: owner-only, never over an existing file."""

from __future__ import annotations

import os
from pathlib import Path

from sanctorum.common.errors import BundleError


def refuse_existing(path: Path) -> None:
    """Raise :class:`BundleError` if ``path`` exists (or is a symbolic link, even a dangling
    one): a key is never overwritten, since what it signed may still need it."""
    if path.exists() or path.is_symlink():
        raise BundleError(
            f"{path} already exists; refusing to overwrite a signing key (choose another path, "
            "or remove the old key if you are sure nothing needs it)"
        )


def write_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``data``; an existing file is never replaced."""
    refuse_existing(path)
    try:
        # O_EXCL: created by this call or not at all, so a file that appears meanwhile is kept.
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        refuse_existing(path)
        raise
    try:
        os.fchmod(handle, 0o600)  # exactly owner read/write, whatever the umask
        with os.fdopen(handle, "wb") as file:
            file.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
