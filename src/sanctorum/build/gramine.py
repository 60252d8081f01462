"""Gramine manifests for SGX (debug and release modes), and signing them where Gramine is.

The manifest runs the Python interpreter as the enclave's entry point with the Sanctorum
runtime; the interpreter, its standard library, the installed packages and the bundle are
trusted files (measured into MRENCLAVE); ``/tmp`` is a tmpfs; the enclave's state directory is an
encrypted mount keyed from the MRSIGNER sealing key; remote attestation is DCAP. It is written as
a ``gramine-manifest`` template (``{{ gramine.libos }}`` and ``{{ gramine.runtimedir() }}`` are
Gramine's own), so it is rendered and signed on the SGX machine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from sanctorum.common.bundle import BUNDLE_MOUNT, FILES_MOUNT, STATE_MOUNT, EnclaveConfig


def python_paths() -> list[Path]:
    """Directories the interpreter imports from: standard library and installed packages."""
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    found = {Path(sysconfig.get_paths()[name]).resolve() for name in names}
    return sorted(found)


def manifest_template(
    config: EnclaveConfig,
    bundle: Path,
    *,
    debug: bool,
    python: Path | None = None,
    paths: list[Path] | None = None,
) -> str:
    """The ``gramine-manifest`` template for ``bundle`` (deterministic for given inputs)."""
    python = python or Path(sys.executable).resolve()
    paths = python_paths() if paths is None else paths
    mounts = [
        '  { path = "/lib", uri = "file:{{ gramine.runtimedir() }}" },',
        f'  {{ path = "{python}", uri = "file:{python}" }},',
        *(f'  {{ path = "{path}", uri = "file:{path}" }},' for path in paths),
        f'  {{ path = "{BUNDLE_MOUNT}", uri = "file:{bundle}" }},',
        '  { type = "tmpfs", path = "/tmp" },',
        f'  {{ type = "encrypted", path = "{STATE_MOUNT}", uri = "file:state", '
        'key_name = "_sgx_mrsigner" },',
        f'  {{ path = "{FILES_MOUNT}", uri = "file:files" }},',
    ]
    trusted = [
        '  "file:{{ gramine.libos }}",',
        '  "file:{{ gramine.runtimedir() }}/",',
        f'  "file:{python}",',
        *(f'  "file:{path}/",' for path in paths),
        f'  "file:{bundle}",',
    ]
    lines = [
        f"# Gramine manifest template for the Sanctorum enclave {config.name!r}.",
        "# Render with gramine-manifest, sign with gramine-sgx-sign, run with gramine-sgx.",
        "",
        'loader.entrypoint.uri = "file:{{ gramine.libos }}"',
        f'libos.entrypoint = "{python}"',
        f'loader.argv = ["{python}", "-m", "sanctorum.enclave.gramine", "{BUNDLE_MOUNT}"]',
        'loader.env.LD_LIBRARY_PATH = "/lib"',
        'loader.env.PYTHONDONTWRITEBYTECODE = "1"',
        "# Where the host listens for the enclave's connection (untrusted, like all it sends).",
        "loader.env.SANCTORUM_HOST_ADDRESS = { passthrough = true }",
        'loader.log_level = "error"',
        "",
        "fs.mounts = [",
        *mounts,
        "]",
        "",
        f"sgx.debug = {'true' if debug else 'false'}",
        'sgx.remote_attestation = "dcap"',
        'sgx.enclave_size = "2G"',
        "sgx.max_threads = 32",
        f"sgx.isvprodid = {config.product_id}",
        f"sgx.isvsvn = {config.revocation_level}",
        "sgx.trusted_files = [",
        *trusted,
        "]",
        "# The persistent filesystem seals, shuffles and authenticates its own sectors.",
        'sgx.allowed_files = ["file:files/"]',
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class SgxBuild:
    manifest_template: Path
    mrenclave: str | None
    """The SGX measurement, when Gramine was here to sign; None otherwise."""
    note: str


def write_and_sign(config: EnclaveConfig, bundle: Path, *, debug: bool) -> SgxBuild:
    """Write ``NAME.manifest.template`` beside the bundle; render and sign it if Gramine is
    installed, and say plainly what is missing if not."""
    template = bundle.with_name(f"{config.name}.manifest.template")
    template.write_text(manifest_template(config, bundle.resolve(), debug=debug))
    missing = [tool for tool in ("gramine-manifest", "gramine-sgx-sign") if not shutil.which(tool)]
    if missing:
        return SgxBuild(
            template,
            None,
            f"{' and '.join(missing)} not installed: the manifest template was written, but the "
            "SGX enclave was not signed. On an SGX machine with Gramine, run "
            f"`gramine-manifest {template.name} {config.name}.manifest` and "
            f"`gramine-sgx-sign --manifest {config.name}.manifest --output "
            f"{config.name}.manifest.sgx` in {template.parent}.",
        )
    manifest = template.with_name(f"{config.name}.manifest")
    subprocess.run(["gramine-manifest", str(template), str(manifest)], check=True)  # noqa: S603,S607
    signed = subprocess.run(  # noqa: S603
        ["gramine-sgx-sign", "--manifest", str(manifest), "--output", f"{manifest}.sgx"],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    )
    match = re.search(r"mr_enclave:\s*([0-9a-fA-F]{64})", signed.stdout)
    return SgxBuild(
        template,
        match.group(1).upper() if match else None,
        f"signed {manifest}.sgx",
    )
