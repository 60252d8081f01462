"""Building, signing and measuring enclave bundles."""

from __future__ import annotations

import importlib.metadata
import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sanctorum.build.entry import check_entry
from sanctorum.build.gramine import SgxBuild, write_and_sign
from sanctorum.build.keyfiles import write_secret_file
from sanctorum.build.native import installed_root, record_distribution
from sanctorum.build.sgx_signing import SgxKeyFile
from sanctorum.common.bundle import (
    CODE_DIR,
    CONFIG_FILE,
    DEPS_DIR,
    DUMMY_SIGNING_KEY,
    SIGNATURE_ENTRY,
    Bundle,
    EnclaveConfig,
    check_import_paths,
    encode_signature,
    load_config,
    measure,
    native_dependencies,
    read_bundle,
)
from sanctorum.common.errors import BundleError
from sanctorum.common.hashes import SHA256Hash
from sanctorum.common.keys import Ed25519PrivateKey
from sanctorum.common.mode import EnclaveMode
from sanctorum.common.native import (
    NATIVE_SUFFIXES,
    NativeDistribution,
    is_native_file,
    record_entry,
)
from sanctorum.common.progress import ProgressCallback, no_progress

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_SKIPPED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache"}


CONSTRAINT_KINDS = ("code", "signer")
_SGX_MODES = (EnclaveMode.DEBUG, EnclaveMode.RELEASE)


@dataclass(frozen=True)
class BuildResult:
    """A built (or re-signed) bundle and the identity a client checks for its mode."""

    path: Path
    code_hash: SHA256Hash
    """The bundle's code hash: its identity in simulation mode."""
    signer_hash: SHA256Hash
    """SHA-256 of the bundle's Ed25519 signing key: its signer in simulation mode."""
    product_id: int
    sgx: SgxBuild | None = None
    """Debug and release builds: the Gramine manifest and, where Gramine is, the signature."""
    mode: EnclaveMode = EnclaveMode.SIMULATION
    constraints: Mapping[str, str] = field(default_factory=dict)
    """``"code"`` and ``"signer"`` constraints for ``mode``, those that are known."""
    constraint_files: Mapping[str, Path] = field(default_factory=dict)
    """Where each constraint was written (``NAME.MODE.KIND.constraint``)."""
    note: str | None = None
    native: tuple[NativeDistribution, ...] = ()
    """The records of the native dependencies: the host must have these very wheels."""


def mode_constraints(
    mode: EnclaveMode, code: SHA256Hash | None, signer: SHA256Hash | None, product_id: int
) -> dict[str, str]:
    """The constraints that accept an enclave of ``mode`` with these hashes (the known ones).

    Simulation and debug enclaves always attest INSECURE, and INSECURE accepts only INSECURE,
    so their constraints say ``SEC:INSECURE``; release ones ask for ``SEC:SECURE``.
    """
    level = "SECURE" if mode is EnclaveMode.RELEASE else "INSECURE"
    found = {}
    if code is not None:
        found["code"] = f"C:{code} SEC:{level}"
    if signer is not None:
        found["signer"] = f"S:{signer} PROD:{product_id} SEC:{level}"
    return found


def constraint_path(directory: Path, name: str, mode: EnclaveMode, kind: str) -> Path:
    """``DIR/NAME.MODE.KIND.constraint``: one constraint line, ready for ``--constraint``."""
    return directory / f"{name}.{mode.value}.{kind}.constraint"


def write_constraints(
    directory: Path, name: str, mode: EnclaveMode, constraints: Mapping[str, str]
) -> dict[str, Path]:
    """Write each known constraint of ``mode`` to its file and delete the file of each unknown
    one, so no file is left from an earlier build that no longer matches."""
    written = {}
    for kind in CONSTRAINT_KINDS:
        path = constraint_path(directory, name, mode, kind)
        if kind in constraints:
            path.write_text(constraints[kind] + "\n")
            written[kind] = path
        else:
            path.unlink(missing_ok=True)
    return written


def _source_files(project: Path, config: EnclaveConfig) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    root = project.resolve()
    for source in config.sources:
        path = (project / source).resolve()
        if not path.is_relative_to(root):
            raise BundleError(f"[enclave].sources entry {source!r} is outside the project")
        if path.is_file():
            candidates = [path]
        elif path.is_dir():
            candidates = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not _SKIPPED_DIRS.intersection(p.relative_to(root).parts)
                and p.suffix not in (".pyc", ".pyo")
            )
        else:
            raise BundleError(f"[enclave].sources entry {source!r} does not exist in {project}")
        for candidate in candidates:
            if candidate.suffix in NATIVE_SUFFIXES:
                raise BundleError(
                    f"{candidate} is native code: an enclave's sources are pure Python. Build "
                    "native code as a distribution (a wheel), install it and name it in "
                    "[enclave].dependencies, where it is measured by its files' hashes"
                )
            files[CODE_DIR + candidate.relative_to(root).as_posix()] = candidate.read_bytes()
    return files


def _dependency_files(config: EnclaveConfig) -> dict[str, bytes]:
    """Each pure-Python dependency's ``.py`` files under ``deps/``; the record of each one with
    native code under ``native/`` (its files stay installed, checked against the record)."""
    files: dict[str, bytes] = {}
    for name in config.dependencies:
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise BundleError(
                f"[enclave].dependencies names {name!r}, which is not installed here; "
                "install it in the build environment"
            ) from None
        entries = distribution.files
        if not entries:
            raise BundleError(
                f"dependency {name!r} has no RECORD of its installed files, so what to bundle "
                "or measure is unknown: install it with pip (pip install --force-reinstall "
                f"{name})"
            )
        if any(is_native_file(entry.as_posix()) for entry in entries):
            files[record_entry(name)] = record_distribution(distribution).encode()
            continue
        for entry in entries:
            posix = entry.as_posix()
            if posix.endswith(".py") and ".dist-info/" not in posix and not posix.startswith(".."):
                files[DEPS_DIR + posix] = Path(str(entry.locate())).read_bytes()
    return files


def collect(project: Path) -> tuple[EnclaveConfig, dict[str, bytes]]:
    """The configuration and every file a bundle of ``project`` holds (without SIGNATURE)."""
    config = load_config(project)
    files = {CONFIG_FILE: (project / CONFIG_FILE).read_bytes()}
    files.update(_source_files(project, config))
    files.update(_dependency_files(config))
    check_import_paths(files, str(project))
    native_dependencies(config, files, str(project))
    check_entry(config, files, str(project / CONFIG_FILE))
    return config, files


def measure_project(project: Path) -> SHA256Hash:
    """The code hash a bundle of ``project`` will have, from its sources alone."""
    config, files = collect(project)
    return measure(config, files)


def write_bundle(files: dict[str, bytes], signature: bytes) -> bytes:
    """A deterministic zip: sorted entries, fixed times and permissions."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in [*sorted(files), SIGNATURE_ENTRY]:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # Unix, whatever the build machine
            data = signature if name == SIGNATURE_ENTRY else files[name]
            archive.writestr(info, data, compresslevel=9)
    return buffer.getvalue()


_SGX_ARTEFACTS = (".manifest", ".manifest.sgx", ".sig")


def _replace_bundle(path: Path, name: str, data: bytes) -> bool:
    """Write the bundle; if its bytes changed, delete what measured the old bytes (the SGX
    signature, and every constraint file except the SGX signer ones, which depend on the SGX
    key only), so nothing stale is left to be trusted. True if an SGX signature was removed."""
    try:
        unchanged = path.read_bytes() == data
    except FileNotFoundError:
        unchanged = False
    if unchanged:
        return False
    directory = path.parent
    stale = [directory / f"{name}{suffix}" for suffix in _SGX_ARTEFACTS]
    had_sgx = any(file.exists() for file in stale)
    stale += [constraint_path(directory, name, EnclaveMode.SIMULATION, k) for k in CONSTRAINT_KINDS]
    stale += [constraint_path(directory, name, m, "code") for m in _SGX_MODES]
    for file in stale:
        file.unlink(missing_ok=True)
    path.write_bytes(data)
    return had_sgx


def build(
    project: Path,
    output_dir: Path | None = None,
    key: Ed25519PrivateKey | None = None,
    mode: EnclaveMode = EnclaveMode.SIMULATION,
    sgx_key: Path | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> BuildResult:
    """Build, sign and write ``NAME.enclave``, and the constraints of ``mode`` beside it.

    ``key`` (Ed25519) signs the bundle: its identity in simulation mode. Simulation and debug
    builds use the dummy key unless ``key`` is given; release builds must name a real key.
    ``sgx_key`` (RSA-3072, from ``sanctorum keygen --sgx``) signs the SGX enclave of debug and
    release builds: its MRSIGNER is the signer SGX clients check. Release builds must name
    one; debug builds without one are signed with a throwaway key where Gramine is.
    ``progress`` is told each long step as it begins (see :mod:`sanctorum.common.progress`).
    """
    report = progress or no_progress
    if mode is EnclaveMode.MOCK:
        raise BundleError("mock mode runs enclave classes directly; there is nothing to build")
    if key is None:
        if mode is EnclaveMode.RELEASE:
            raise BundleError(
                "a release build must be signed with your own key: pass --key "
                "(create one with `sanctorum keygen`)"
            )
        key = DUMMY_SIGNING_KEY
    elif mode is EnclaveMode.RELEASE and key == DUMMY_SIGNING_KEY:
        raise BundleError("a release build cannot be signed with the public dummy key")
    sgx = mode in _SGX_MODES
    if sgx_key is not None and not sgx:
        raise BundleError(
            f"--sgx-key signs SGX enclaves (debug and release builds), not {mode.value} ones: "
            "leave it out, or build with --mode debug or --mode release"
        )
    if mode is EnclaveMode.RELEASE and sgx_key is None:
        raise BundleError(
            "a release build must name your SGX signing key: pass --sgx-key PATH (create one "
            "with `sanctorum keygen --sgx PATH` and keep it offline). Its MRSIGNER is the "
            "signer SGX clients check; without it gramine-sgx-sign would sign with whatever "
            "default key this machine holds"
        )
    # Checked before anything is written, so a bad key leaves no half-built output.
    sgx_key_file = SgxKeyFile.load(sgx_key) if sgx_key is not None else None
    report("collecting the sources and dependencies")
    config, files = collect(project)
    report(f"measuring {len(files)} files")
    code_hash = measure(config, files)
    report("signing and compressing the bundle")
    data = write_bundle(files, encode_signature(key, code_hash))
    output_dir = output_dir or project / "build"
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{config.name}.enclave"
    _replace_bundle(path, config.name, data)
    bundle = read_bundle(data, str(path))  # what we wrote must load
    sgx_build = None
    if sgx:
        # Until the new signature is checked, no constraint of this mode is known.
        write_constraints(output_dir, config.name, mode, {})
        native = [
            (installed_root(importlib.metadata.distribution(record.name)), record)
            for record in bundle.native
        ]
        sgx_build = write_and_sign(
            config,
            path,
            debug=mode is EnclaveMode.DEBUG,
            sgx_key=sgx_key_file,
            progress=report,
            native=native,
        )
        constraints = mode_constraints(
            mode, sgx_build.mrenclave, sgx_build.mrsigner, config.product_id
        )
    else:
        constraints = mode_constraints(
            mode, bundle.code_hash, bundle.signer_hash, config.product_id
        )
    files_written = write_constraints(output_dir, config.name, mode, constraints)
    return BuildResult(
        path,
        bundle.code_hash,
        bundle.signer_hash,
        config.product_id,
        sgx_build,
        mode,
        constraints,
        files_written,
        native=bundle.native,
    )


def sign(bundle_path: Path, key: Ed25519PrivateKey) -> BuildResult:
    """Re-sign an existing bundle with ``key`` (its contents and code hash are unchanged).

    The simulation constraints beside it are rewritten. The bundle's bytes change, so an SGX
    signature beside it no longer matches: its MRENCLAVE constraints are removed and the
    result's note says to build again.
    """
    data = bundle_path.read_bytes()
    bundle = read_bundle(data, str(bundle_path))
    name, directory = bundle.config.name, bundle_path.parent
    stale_sgx = _replace_bundle(
        bundle_path, name, write_bundle(bundle.files, encode_signature(key, bundle.code_hash))
    )
    signed: Bundle = read_bundle(bundle_path.read_bytes(), str(bundle_path))
    constraints = mode_constraints(
        EnclaveMode.SIMULATION, signed.code_hash, signed.signer_hash, signed.config.product_id
    )
    written = write_constraints(directory, name, EnclaveMode.SIMULATION, constraints)
    note = None
    if stale_sgx:
        note = (
            f"the SGX signature that was beside it ({name}.sig, {name}.manifest.sgx) measured "
            "the old bundle, so it was removed: build again with --mode debug or --mode release"
        )
    return BuildResult(
        bundle_path,
        signed.code_hash,
        signed.signer_hash,
        signed.config.product_id,
        constraints=constraints,
        constraint_files=written,
        note=note,
    )


def generate_key(path: Path) -> Ed25519PrivateKey:
    """Write a new Ed25519 signing key (PKCS#8 PEM, owner-only permissions) to ``path``."""
    key = Ed25519PrivateKey.generate()
    pem = ed25519.Ed25519PrivateKey.from_private_bytes(key.encoded).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret_file(path, pem)
    return key


def load_key(path: Path) -> Ed25519PrivateKey:
    """Read a signing key written by :func:`generate_key`."""
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise BundleError(f"cannot read the signing key {path}: {error}") from None
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise BundleError(f"{path} is not an Ed25519 key")
    return Ed25519PrivateKey(loaded.private_bytes_raw())
