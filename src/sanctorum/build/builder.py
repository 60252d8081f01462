"""Building, signing and measuring enclave bundles."""

from __future__ import annotations

import importlib.metadata
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sanctorum.build.gramine import SgxBuild, write_and_sign
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
    read_bundle,
)
from sanctorum.common.errors import BundleError
from sanctorum.common.hashes import SHA256Hash
from sanctorum.common.keys import Ed25519PrivateKey
from sanctorum.common.mode import EnclaveMode

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_SKIPPED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache"}
_NATIVE_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")


@dataclass(frozen=True)
class BuildResult:
    path: Path
    code_hash: SHA256Hash
    signer_hash: SHA256Hash
    product_id: int
    sgx: SgxBuild | None = None
    """Debug and release builds: the Gramine manifest and, where Gramine is, the signature."""


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
            if candidate.suffix in _NATIVE_SUFFIXES:
                raise BundleError(
                    f"{candidate} is native code; enclave bundles hold pure Python only"
                )
            files[CODE_DIR + candidate.relative_to(root).as_posix()] = candidate.read_bytes()
    return files


def _dependency_files(config: EnclaveConfig) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name in config.dependencies:
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise BundleError(
                f"[enclave].dependencies names {name!r}, which is not installed here; "
                "install it in the build environment"
            ) from None
        for entry in distribution.files or ():
            posix = entry.as_posix()
            if posix.endswith(_NATIVE_SUFFIXES):
                raise BundleError(
                    f"dependency {name!r} has native code ({posix}); only pure "
                    "Python dependencies can be bundled"
                )
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


def build(
    project: Path,
    output_dir: Path | None = None,
    key: Ed25519PrivateKey | None = None,
    mode: EnclaveMode = EnclaveMode.SIMULATION,
) -> BuildResult:
    """Build, sign and write ``NAME.enclave``; the result names its code and signer hashes.

    Simulation and debug builds are signed with the dummy key unless ``key`` is given; release
    builds must name a real key.
    """
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
    config, files = collect(project)
    code_hash = measure(config, files)
    data = write_bundle(files, encode_signature(key, code_hash))
    output_dir = output_dir or project / "build"
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{config.name}.enclave"
    path.write_bytes(data)
    bundle = read_bundle(data, str(path))  # what we wrote must load
    sgx = None
    if mode in (EnclaveMode.DEBUG, EnclaveMode.RELEASE):
        sgx = write_and_sign(config, path, debug=mode is EnclaveMode.DEBUG)
    return BuildResult(path, bundle.code_hash, bundle.signer_hash, config.product_id, sgx)


def sign(bundle_path: Path, key: Ed25519PrivateKey) -> BuildResult:
    """Re-sign an existing bundle with ``key`` (its contents and code hash are unchanged)."""
    data = bundle_path.read_bytes()
    bundle = read_bundle(data, str(bundle_path))
    bundle_path.write_bytes(write_bundle(bundle.files, encode_signature(key, bundle.code_hash)))
    signed: Bundle = read_bundle(bundle_path.read_bytes(), str(bundle_path))
    return BuildResult(bundle_path, signed.code_hash, signed.signer_hash, signed.config.product_id)


def generate_key(path: Path) -> Ed25519PrivateKey:
    """Write a new Ed25519 signing key (PKCS#8 PEM, owner-only permissions) to ``path``."""
    if path.exists():
        raise BundleError(f"{path} already exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    pem = ed25519.Ed25519PrivateKey.from_private_bytes(key.encoded).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.touch(mode=0o600)
    path.write_bytes(pem)
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
