"""Gramine manifests for SGX (debug and release modes), and signing them where Gramine is.

The manifest runs the Python interpreter as the enclave's entry point with the Sanctorum
runtime; the interpreter, its standard library, the installed packages and the bundle are
trusted files (measured into MRENCLAVE), the files of native dependencies with the hashes their
records give; ``/tmp`` is a tmpfs; the persistent filesystem's file is
reached through an allowed mount (it is encrypted by the enclave itself); remote attestation is
DCAP. It is written as
a ``gramine-manifest`` template (``{{ gramine.libos }}`` and ``{{ gramine.runtimedir() }}`` are
Gramine's own), so it is rendered and signed on the SGX machine, always with the SGX key the user
names (``gramine-sgx-sign --key``): left to itself, gramine-sgx-sign signs with a default key
in the build machine's home directory, and whoever held that would be the enclave's MRSIGNER.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sanctorum.build.sgx_signing import SgxKeyFile, Sigstruct, generate_sgx_key, read_sigstruct
from sanctorum.common.bundle import BUNDLE_MOUNT, FILES_MOUNT, EnclaveConfig
from sanctorum.common.errors import BundleError
from sanctorum.common.hashes import SHA256Hash
from sanctorum.common.native import PLAIN_TEXT, NativeDistribution
from sanctorum.common.progress import ProgressCallback, no_progress


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
    native: Sequence[tuple[Path, NativeDistribution]] = (),
) -> str:
    """The ``gramine-manifest`` template for ``bundle`` (deterministic for given inputs).

    ``native`` is each native dependency's record with the directory it is installed in: its
    files become trusted files with the recorded hashes, so MRENCLAVE measures the record and
    Gramine refuses any other bytes under those names.
    """
    python = python or Path(sys.executable).resolve()
    paths = python_paths() if paths is None else paths
    recorded = []
    for root, record in native:
        if not PLAIN_TEXT.fullmatch(str(root)):
            raise BundleError(
                f"the native dependency {record.name} is installed in {str(root)!r}, a path "
                "with characters a Gramine manifest cannot hold (quotes, backslashes, braces, "
                "%, # or control characters): install it under a plainer path"
            )
        if not any(root.is_relative_to(path) for path in paths):
            raise BundleError(
                f"the native dependency {record.name} is installed in {root}, outside the "
                "directories the SGX enclave mounts (this interpreter's standard library and "
                "site-packages): install it into the environment that runs the build"
            )
        recorded += [
            f'  {{ uri = "file:{root / f.path}", sha256 = "{f.sha256}" }},' for f in record.files
        ]
    mounts = [
        '  { path = "/lib", uri = "file:{{ gramine.runtimedir() }}" },',
        f'  {{ path = "{python}", uri = "file:{python}" }},',
        *(f'  {{ path = "{path}", uri = "file:{path}" }},' for path in paths),
        f'  {{ path = "{BUNDLE_MOUNT}", uri = "file:{bundle}" }},',
        '  { type = "tmpfs", path = "/tmp" },',
        f'  {{ path = "{FILES_MOUNT}", uri = "file:files" }},',
    ]
    trusted = [
        *recorded,
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
        "# The interpreter is the resolved base one: name the (virtual environment's) packages.",
        f'loader.env.PYTHONPATH = "{":".join(str(path) for path in paths)}"',
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
        f'sgx.enclave_size = "{_gramine_size(config.enclave_size)}"',
        f"sgx.max_threads = {config.max_threads}",
        f'sys.stack.size = "{_gramine_size(config.stack_size)}"',
        f'sys.brk.max_size = "{_gramine_size(config.heap_size)}"',
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


def _gramine_size(size: int) -> str:
    """``size`` as Gramine writes sizes: the largest unit it is a whole number of."""
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


@dataclass(frozen=True)
class SgxBuild:
    """What a debug or release build produced for SGX, and the identity SGX will attest."""

    manifest_template: Path
    mrenclave: SHA256Hash | None
    """The SGX measurement, read from the signed SIGSTRUCT; None when Gramine was not here."""
    mrsigner: SHA256Hash | None
    """SHA-256 of the SGX signing key's modulus; None when no key was named and Gramine was
    not here to sign with a throwaway key."""
    note: str
    sigstruct: Path | None = None
    throwaway_key: bool = False
    """Signed with a key generated for this build and deleted: nothing else can carry its
    MRSIGNER (debug builds without ``--sgx-key`` only)."""


_SGX_OUTPUTS = (".manifest", ".manifest.sgx", ".sig")


def _run(command: list[str], cwd: Path) -> str:
    """Run a Gramine tool; its failure becomes a :class:`BundleError` that shows its output."""
    try:
        done = subprocess.run(  # noqa: S603 (our own arguments, no shell)
            command, cwd=cwd, check=True, capture_output=True, text=True
        )
    except subprocess.CalledProcessError as error:
        output = "\n".join(part for part in (error.stdout, error.stderr) if part).strip()
        raise BundleError(
            f"{command[0]} failed (exit status {error.returncode}); nothing was signed:\n"
            f"{output[-4000:]}"
        ) from None
    except OSError as error:
        raise BundleError(f"cannot run {command[0]}: {error}") from None
    return done.stdout


def _sign(
    config: EnclaveConfig,
    directory: Path,
    debug: bool,
    sgx_key: SgxKeyFile | None,
    report: ProgressCallback,
) -> Sigstruct:
    """Render and sign in ``directory``; the SIGSTRUCT, checked against the key and config."""
    template = directory / f"{config.name}.manifest.template"
    manifest = directory / f"{config.name}.manifest"
    sigfile = directory / f"{config.name}.sig"
    report("rendering the Gramine manifest (gramine-manifest)")
    _run(["gramine-manifest", str(template), str(manifest)], directory)
    with tempfile.TemporaryDirectory(prefix="sanctorum-sgx-key-") as scratch:
        if sgx_key is None:
            # Debug enclaves attest INSECURE and SGX derives their sealing keys apart from
            # release ones; a key that is deleted after this signature cannot sign anything else.
            report("generating a throwaway SGX key")
            path = Path(scratch) / "throwaway-sgx-key.pem"
            sgx_key = SgxKeyFile(path, generate_sgx_key(path))
        report("measuring and signing the SGX enclave (gramine-sgx-sign)")
        _run(
            [
                "gramine-sgx-sign",
                "--manifest",
                str(manifest),
                "--output",
                f"{manifest}.sgx",
                "--sigfile",
                str(sigfile),
                "--key",
                str(sgx_key.path),
            ],
            directory,
        )
        try:
            data = sigfile.read_bytes()
        except OSError as error:
            raise BundleError(
                f"gramine-sgx-sign did not write {sigfile}: {error.strerror or error}"
            ) from None
        report("checking the SIGSTRUCT")
        sigstruct = read_sigstruct(data, str(sigfile), sgx_key.private_key.public_key())
    expected = (config.product_id, config.revocation_level, debug)
    found = (sigstruct.product_id, sigstruct.security_version, sigstruct.debug)
    if found != expected:
        raise BundleError(
            f"{sigfile} says product id {found[0]}, revocation level (ISVSVN) {found[1]}, "
            f"debug {found[2]}; the build asked for {expected[0]}, {expected[1]}, {expected[2]}: "
            "check the manifest template and build again"
        )
    return sigstruct


def write_and_sign(
    config: EnclaveConfig,
    bundle: Path,
    *,
    debug: bool,
    sgx_key: SgxKeyFile | None,
    progress: ProgressCallback | None = None,
    native: Sequence[tuple[Path, NativeDistribution]] = (),
) -> SgxBuild:
    """Write ``NAME.manifest.template`` beside the bundle; render it and sign it with
    ``gramine-sgx-sign --key`` if Gramine is installed, and say plainly what is missing if not.

    ``sgx_key`` is the user's SGX signing key; it may be None only for debug builds, which are
    then signed with a throwaway key (never with Gramine's default key on this machine).
    The MRENCLAVE and MRSIGNER are read from the signed SIGSTRUCT, which must verify under the
    key given and carry the configuration's product id, revocation level and debug flag.
    ``progress`` is told each long step as it begins (see :mod:`sanctorum.common.progress`).
    """
    report = progress or no_progress
    if sgx_key is None and not debug:
        raise BundleError("a release build needs an SGX signing key (--sgx-key)")
    directory = bundle.parent.resolve()  # the tools run there, so no path may be relative
    template = directory / f"{config.name}.manifest.template"
    manifest = directory / f"{config.name}.manifest"
    signed_manifest = directory / f"{config.name}.manifest.sgx"
    sigfile = directory / f"{config.name}.sig"
    # The bundle just changed, so any earlier signature is stale: never leave one to be found.
    for suffix in _SGX_OUTPUTS:
        (directory / f"{config.name}{suffix}").unlink(missing_ok=True)
    report("writing the Gramine manifest template")
    template.write_text(manifest_template(config, bundle.resolve(), debug=debug, native=native))
    missing = [tool for tool in ("gramine-manifest", "gramine-sgx-sign") if not shutil.which(tool)]
    if missing:
        key_argument = str(sgx_key.path) if sgx_key else "YOUR-SGX-KEY.pem"
        return SgxBuild(
            template,
            None,
            sgx_key.mrsigner if sgx_key else None,
            f"{' and '.join(missing)} not installed: the manifest template was written, but the "
            "SGX enclave was not signed, so its MRENCLAVE is not known yet. On an SGX machine "
            f"with Gramine, in {directory}/, run `gramine-manifest {template.name} "
            f"{manifest.name}` and `gramine-sgx-sign --manifest {manifest.name} --output "
            f"{signed_manifest.name} --sigfile {sigfile.name} --key {key_argument}`; then "
            f"`gramine-sgx-sigstruct-view {sigfile.name}` prints mr_enclave (C:<mr_enclave>) "
            "and mr_signer. Or run this build there.",
        )
    throwaway = sgx_key is None
    try:
        sigstruct = _sign(config, directory, debug, sgx_key, report)
    except BaseException:
        # A signature that failed a check must not be left where `gramine-sgx` would run it.
        for suffix in _SGX_OUTPUTS:
            (directory / f"{config.name}{suffix}").unlink(missing_ok=True)
        raise
    note = f"signed {signed_manifest.name} and {sigfile.name} in {directory}"
    if throwaway:
        note += (
            "; with a throwaway SGX key, now deleted: this MRSIGNER belongs to this build "
            "alone, and sealed state of earlier debug builds will not open. Pass --sgx-key "
            "for a signer that lasts"
        )
    return SgxBuild(
        template, sigstruct.mrenclave, sigstruct.mrsigner, note, sigfile, throwaway_key=throwaway
    )
