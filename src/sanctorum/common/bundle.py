"""The enclave bundle format: its configuration, its measurement and its signature.

A bundle (``NAME.enclave``) is a zip holding ``enclave.toml``, the enclave's Python files under
``code/`` (and bundled dependencies under ``deps/``), the records of its native dependencies
under ``native/`` (:mod:`sanctorum.common.native`), and ``SIGNATURE``. The **code hash** is
SHA-256 over the runtime format version, the canonical configuration and the sorted list of
(path, SHA-256 of content) of every other entry; the **signer hash** is SHA-256 of the Ed25519
key that signed the code hash. Both the builder and the enclave runtime use this module, so the
enclave measures exactly the bytes it runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import sys
import tomllib
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sanctorum.common.errors import BundleError, InvalidKeyError, InvalidSignatureError
from sanctorum.common.hashes import SHA256Hash
from sanctorum.common.keys import Ed25519PrivateKey, Ed25519PublicKey
from sanctorum.common.native import (
    NATIVE_DIR,
    RUNTIME_PACKAGES,
    NativeDistribution,
    normalize_name,
    record_entry,
    safe_relative_path,
)
from sanctorum.common.suggest import closest

RUNTIME_FORMAT_VERSION = 1
"""Part of every code hash: a runtime that loads bundles differently measures differently."""
SIGNATURE_ENTRY = "SIGNATURE"
CODE_DIR = "code/"
DEPS_DIR = "deps/"
MAX_BUNDLE_SIZE = 128 << 20
MAX_UNPACKED_SIZE = 256 << 20
MIN_FILESYSTEM_SIZE = 6 * 64 * 1024
"""The smallest persistent filesystem: two superblocks, a directory tree, room for the next one
and a spare, and one slot of data."""
# Where a bundle's pieces are inside an SGX enclave (the Gramine manifest mounts them there).
BUNDLE_MOUNT = "/sanctorum/enclave.bundle"
FILES_MOUNT = "/sanctorum/files"
"""Host files the enclave protects itself (its persistent filesystem): allowed, not trusted."""
_SIGNATURE_MAGIC = b"SNCS"
_SIGNATURE_CONTEXT = b"sanctorum-bundle-signature\0"
_MEASUREMENT_CONTEXT = b"sanctorum-measurement\0"

DEFAULT_ENCLAVE_SIZE = 2 << 30
DEFAULT_MAX_THREADS = 32
DEFAULT_STACK_SIZE = 256 << 10
DEFAULT_HEAP_SIZE = 256 << 10
_SIZING_DEFAULTS = {
    "enclave_size": DEFAULT_ENCLAVE_SIZE,
    "max_threads": DEFAULT_MAX_THREADS,
    "stack_size": DEFAULT_STACK_SIZE,
    "heap_size": DEFAULT_HEAP_SIZE,
}
_SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

CONFIG_FILE = "enclave.toml"
_KNOWN_KEYS = {
    "name",
    "entry",
    "product_id",
    "revocation_level",
    "thread_safe",
    "sources",
    "dependencies",
    "persistent_map",
    "max_persistent_map_size",
    "filesystem_size",
    "memory_filesystem_size",
    "enclave_size",
    "max_threads",
    "stack_size",
    "heap_size",
}


_KDS_PERSISTENCE_KEYS = {
    "master_key_type",
    "policy_constraint",
    "use_own_code_hash",
    "use_own_signer",
}
_KDS_KEYS = {
    "cluster_key",
    "constraint",
    "master_key_type",
    "policy_constraint",
    "use_own_code_hash",
    "use_own_signer",
}
_MASTER_KEY_TYPES = ("development", "cluster")


@dataclass(frozen=True)
class KdsConfig:
    """The ``[kds]`` table: the key derivation service whose key seals the enclave's persistent
    map and filesystem, and the spec of that key (docs/kds.md). Measured like the rest."""

    constraint: str
    """The constraint the KDS's attestation must meet."""
    master_key_type: str = "cluster"
    policy_constraint: str = ""
    """Terms of the key's policy, before the enclave's own code hash or signer are added."""
    use_own_code_hash: bool = False
    use_own_signer: bool = False
    cluster_key: str = ""
    """The KDS cluster's Ed25519 key (hex), which every answer must be signed with: it names
    one KDS's master keys, where ``constraint`` names only its code. Empty: not pinned."""


@dataclass(frozen=True)
class EnclaveConfig:
    """The ``[enclave]`` table of ``enclave.toml``. Every field is part of the measurement."""

    name: str
    entry: str
    """``module:Class`` of the Enclave subclass, as importable from the bundle."""
    product_id: int
    revocation_level: int
    sources: tuple[str, ...]
    """Files and directories (relative to the project) whose Python files form the enclave."""
    thread_safe: bool = False
    dependencies: tuple[str, ...] = field(default=())
    """Installed distributions the enclave imports: pure-Python ones are bundled, those with
    native code recorded (:mod:`sanctorum.common.native`)."""
    persistent_map: bool = False
    max_persistent_map_size: int = 0
    filesystem_size: int = 0
    """Bytes of persistent encrypted filesystem (0: none)."""
    memory_filesystem_size: int = 0
    """Bytes of in-memory filesystem (0: none); with both, it is mounted at /tmp."""
    kds: KdsConfig | None = None
    """The ``[kds]`` table, if the persistent state is sealed with a key from a KDS."""
    enclave_size: int = DEFAULT_ENCLAVE_SIZE
    """SGX enclave size in bytes (a power of two): all the memory the enclave can use."""
    max_threads: int = DEFAULT_MAX_THREADS
    """SGX thread slots: threads the enclave's process may run at once."""
    stack_size: int = DEFAULT_STACK_SIZE
    """Bytes of stack per thread inside the enclave."""
    heap_size: int = DEFAULT_HEAP_SIZE
    """Bytes of the program break (brk) heap; Python allocates mostly with mmap."""

    def canonical(self) -> bytes:
        """A deterministic encoding, for the code hash."""
        document = asdict(self)
        if document["kds"] is None:  # as before the [kds] table existed: code hashes stay
            del document["kds"]
        for key, default in _SIZING_DEFAULTS.items():  # likewise, sizes left at the default
            if document[key] == default:
                del document[key]
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @property
    def entry_module(self) -> str:
        return self.entry.partition(":")[0]

    @property
    def entry_class(self) -> str:
        return self.entry.partition(":")[2]


def _require(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise BundleError(f"{where}: the setting [enclave].{key} is missing")
    value = table[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise BundleError(f"{where}: [enclave].{key} must be a whole number, not {value!r}")
    if not isinstance(value, kind):
        raise BundleError(f"{where}: [enclave].{key} must be a {kind.__name__}, not {value!r}")
    return value


def _check_range(where: str, key: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise BundleError(f"{where}: [enclave].{key} must be from {low} to {high}, not {value}")


def parse_config(text: str, where: str = CONFIG_FILE) -> EnclaveConfig:
    """Parse and validate ``enclave.toml``; :class:`BundleError` names any bad setting."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise BundleError(f"{where} is not valid TOML: {error}") from None
    except RecursionError:
        raise BundleError(f"{where} is nested too deeply to be an enclave.toml") from None
    table = document.get("enclave")
    if not isinstance(table, dict):
        raise BundleError(f"{where} has no [enclave] table")
    unknown = sorted(set(table) - _KNOWN_KEYS)
    if unknown:
        raise BundleError(
            f"{where}: unknown setting(s) {', '.join(unknown)}{_did_you_mean(unknown)}; "
            f"known: {', '.join(sorted(_KNOWN_KEYS))}"
        )
    name = _require(table, "name", str, where)
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise BundleError(f"{where}: [enclave].name must be letters, digits, '-', '_' or '.'")
    entry = _require(table, "entry", str, where)
    module, colon, cls = entry.partition(":")
    if (
        not colon
        or not all(part.isidentifier() for part in module.split("."))
        or not cls.isidentifier()
    ):
        raise BundleError(f"{where}: [enclave].entry must be 'module:ClassName', not {entry!r}")
    product_id = _require(table, "product_id", int, where)
    _check_range(where, "product_id", product_id, 1, 65535)
    revocation_level = _require(table, "revocation_level", int, where)
    _check_range(where, "revocation_level", revocation_level, 0, 65534)
    sources = _require(table, "sources", list, where)
    if not sources or not all(isinstance(s, str) and s for s in sources):
        raise BundleError(f"{where}: [enclave].sources must be a non-empty list of paths")
    dependencies = table.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise BundleError(f"{where}: [enclave].dependencies must be a list of distribution names")
    thread_safe = table.get("thread_safe", False)
    persistent_map = table.get("persistent_map", False)
    for key, value in (("thread_safe", thread_safe), ("persistent_map", persistent_map)):
        if not isinstance(value, bool):
            raise BundleError(f"{where}: [enclave].{key} must be true or false, not {value!r}")
    sizes = {}
    for key in ("max_persistent_map_size", "filesystem_size", "memory_filesystem_size"):
        value = table.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BundleError(f"{where}: [enclave].{key} must be a size in bytes ≥ 0")
        sizes[key] = value
    if persistent_map and not sizes["max_persistent_map_size"]:
        raise BundleError(
            f"{where}: persistent_map = true needs max_persistent_map_size, the most bytes the "
            "map may hold (its entries and the runtime's per-client records)"
        )
    if 0 < sizes["filesystem_size"] < MIN_FILESYSTEM_SIZE:
        raise BundleError(
            f"{where}: filesystem_size must be 0 or at least {MIN_FILESYSTEM_SIZE} bytes: four "
            "64 KiB slots go to the superblocks and the directory tree (docs/persistence.md)"
        )
    persistent = bool(persistent_map or sizes["filesystem_size"])
    kds = _parse_kds(document.get("kds"), where, persistent)
    sizing = _parse_sizing(table, where)
    return EnclaveConfig(
        name=name,
        entry=entry,
        product_id=product_id,
        revocation_level=revocation_level,
        sources=tuple(sources),
        thread_safe=thread_safe,
        dependencies=tuple(dependencies),
        persistent_map=persistent_map,
        **sizes,
        kds=kds,
        **sizing,
    )


def _parse_size(value: object, where: str, key: str) -> int:
    """Bytes, as a whole number or text with a K, M or G suffix ("2G")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value[:-1].isdigit() and value[-1:].upper() in _SIZE_UNITS:
        return int(value[:-1]) * _SIZE_UNITS[value[-1].upper()]
    raise BundleError(
        f'{where}: [enclave].{key} is a size: bytes, or a number with K, M or G ("512M"), '
        f"not {value!r}"
    )


def _shown(size: int) -> str:
    return f"{size >> 30}G" if size >= 1 << 30 else f"{size >> 20}M"


def _parse_sizing(table: dict[str, Any], where: str) -> dict[str, int]:
    """The SGX sizing settings, checked against what Gramine and Python need."""
    sizing = {
        key: _parse_size(table.get(key, default), where, key)
        for key, default in _SIZING_DEFAULTS.items()
        if key != "max_threads"
    }
    size = sizing["enclave_size"]
    if size & (size - 1) or not 256 << 20 <= size <= 1 << 40:
        raise BundleError(
            f"{where}: [enclave].enclave_size must be a power of two from 256M to 1024G (SGX "
            f"maps the enclave at an aligned range), not {size} bytes"
        )
    for key, low, high in (("stack_size", 64 << 10, 256 << 20), ("heap_size", 64 << 10, 512 << 30)):
        if sizing[key] % 4096 or not low <= sizing[key] <= high:
            raise BundleError(
                f"{where}: [enclave].{key} must be a multiple of 4K from {low >> 10}K to "
                f"{_shown(high)}, not {sizing[key]} bytes"
            )
    threads = table.get("max_threads", DEFAULT_MAX_THREADS)
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise BundleError(f"{where}: [enclave].max_threads must be a whole number, not {threads!r}")
    _check_range(where, "max_threads", threads, 4, 4096)
    if sizing["heap_size"] + threads * sizing["stack_size"] > size // 2:
        raise BundleError(
            f"{where}: heap_size and a stack_size for each of max_threads take over half of "
            "enclave_size: the Python interpreter and its libraries need the rest; raise "
            "enclave_size"
        )
    return {**sizing, "max_threads": threads}


def _parse_kds(table: object, where: str, persistent: bool) -> KdsConfig | None:
    """The ``[kds]`` table's structure; its constraints are parsed where the constraint syntax
    lives, when the bundle is loaded (common imports nothing else of Sanctorum). The
    persistence key's settings are for an enclave with ``persistent`` state only; without, the
    table names the KDS whose mail keys the enclave takes (clusters)."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise BundleError(f"{where}: [kds] must be a table")
    unknown = sorted(set(table) - _KDS_KEYS)
    if unknown:
        raise BundleError(
            f"{where}: unknown [kds] setting(s) {', '.join(unknown)}"
            f"{_did_you_mean(unknown, _KDS_KEYS)}; known: {', '.join(sorted(_KDS_KEYS))}"
        )
    constraint = table.get("constraint")
    if not isinstance(constraint, str):
        raise BundleError(
            f"{where}: [kds].constraint is required: the constraint the KDS's attestation must "
            "meet (its code hash or signer)"
        )
    master_key_type = table.get("master_key_type", "cluster")
    if master_key_type not in _MASTER_KEY_TYPES:
        raise BundleError(
            f"{where}: [kds].master_key_type must be one of {', '.join(_MASTER_KEY_TYPES)}, not "
            f"{master_key_type!r}"
        )
    policy = table.get("policy_constraint", "")
    flags = {key: table.get(key, False) for key in ("use_own_code_hash", "use_own_signer")}
    if not isinstance(policy, str) or not all(isinstance(v, bool) for v in flags.values()):
        raise BundleError(
            f"{where}: [kds].policy_constraint is a string, use_own_code_hash and "
            "use_own_signer true or false"
        )
    cluster_key = table.get("cluster_key", "")
    if not isinstance(cluster_key, str) or (
        cluster_key and (len(cluster_key) != 64 or not _is_hex(cluster_key))
    ):
        raise BundleError(
            f"{where}: [kds].cluster_key is the KDS cluster's key: 64 hex digits, as "
            "sanctorum kds serve logs it at start"
        )
    if persistent and not (policy.strip() or any(flags.values())):
        raise BundleError(
            f"{where}: [kds] needs a policy for the persistence key: policy_constraint, "
            "use_own_code_hash = true or use_own_signer = true (or several)"
        )
    persistence_settings = _KDS_PERSISTENCE_KEYS & set(table)
    if not persistent and persistence_settings:
        raise BundleError(
            f"{where}: [kds] has settings of the key that seals the persistent map and "
            f"filesystem ({', '.join(sorted(persistence_settings))}), but this enclave has "
            "neither: set "
            "persistent_map or filesystem_size, or drop them (a [kds] table with only "
            "constraint and cluster_key lets a stateless enclave take cluster mail)"
        )
    return KdsConfig(constraint, master_key_type, policy, **flags, cluster_key=cluster_key.lower())


def _is_hex(text: str) -> bool:
    return all(character in "0123456789abcdefABCDEF" for character in text)


def kds_policy(config: KdsConfig, code_hash: str, signer_hash: str, product_id: int) -> str:
    """The persistence key's policy constraint: the configured terms, then the enclave's own
    code hash and/or signer and product id, if asked for."""
    terms = [config.policy_constraint] if config.policy_constraint else []
    if config.use_own_code_hash:
        terms.append(f"C:{code_hash}")
    if config.use_own_signer:
        terms.append(f"S:{signer_hash} PROD:{product_id}")
    return " ".join(terms)


def load_config(project: Path) -> EnclaveConfig:
    """Read ``project/enclave.toml``."""
    path = project / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"{project} has no {CONFIG_FILE}: it is not an enclave project") from None
    return parse_config(text, str(path))


# -- the measurement ------------------------------------------------------------------------


def check_import_paths(files: Iterable[str], where: str) -> None:
    """Refuse a module that both the enclave's code and a dependency provide: which one ran
    would depend on something the code hash does not measure (the order of zip entries)."""
    paths = set(files)
    for path in sorted(paths):
        if path.startswith(CODE_DIR) and DEPS_DIR + path[len(CODE_DIR) :] in paths:
            relative = path[len(CODE_DIR) :]
            raise BundleError(
                f"{where}: {relative} is both in the enclave's sources ({path}) and in a "
                f"dependency ({DEPS_DIR}{relative}); rename your module so that one name means "
                "one file"
            )


def native_dependencies(
    config: EnclaveConfig, files: dict[str, bytes], where: str
) -> tuple[NativeDistribution, ...]:
    """The records of the bundle's native dependencies, each checked, and none importable under
    a name that bundled code (or another of them) also has."""
    named = {normalize_name(name) for name in config.dependencies}
    bundled = {
        path.split("/")[1].partition(".")[0]
        for path in files
        if path.startswith((CODE_DIR, DEPS_DIR)) and path.endswith(".py")
    }
    records: list[NativeDistribution] = []
    owners: dict[str, str] = {}
    for path in sorted(p for p in files if p.startswith(NATIVE_DIR)):
        record = NativeDistribution.decode(files[path], f"{where}: {path}")
        if record_entry(record.name) != path or normalize_name(record.name) not in named:
            raise BundleError(
                f"{where}: {path} records the distribution {record.name!r}, which is not one "
                "[enclave].dependencies names under that entry"
            )
        for name in sorted(record.top_level_names()):
            if name in RUNTIME_PACKAGES or name in sys.stdlib_module_names:
                part = "Sanctorum's runtime" if name in RUNTIME_PACKAGES else "the standard library"
                raise BundleError(
                    f"{where}: the native dependency {record.name!r} brings a module {name!r}, "
                    f"which is part of {part}: the enclave imports that from the runtime; leave "
                    f"{record.name!r} out of [enclave].dependencies"
                )
            other = owners.setdefault(name, record.name)
            if other != record.name or name in bundled:
                raise BundleError(
                    f"{where}: the module {name!r} is in the native dependency {record.name!r} "
                    f"and also in {other if other != record.name else 'the bundled code'}; "
                    "rename your module so that one name means one set of files"
                )
        records.append(record)
    return tuple(records)


def measure(config: EnclaveConfig, files: dict[str, bytes]) -> SHA256Hash:
    """The code hash of a bundle with ``config`` and ``files`` (every entry but SIGNATURE)."""
    digest = hashlib.sha256(_MEASUREMENT_CONTEXT)
    digest.update(struct.pack(">H", RUNTIME_FORMAT_VERSION))
    canonical = config.canonical()
    digest.update(struct.pack(">I", len(canonical)) + canonical)
    digest.update(struct.pack(">I", len(files)))
    for path in sorted(files):
        encoded = path.encode("utf-8")
        digest.update(struct.pack(">H", len(encoded)) + encoded)
        digest.update(hashlib.sha256(files[path]).digest())
    return SHA256Hash(digest.digest())


# -- signing ---------------------------------------------------------------------------------

DUMMY_SIGNING_KEY = Ed25519PrivateKey(hashlib.sha256(b"sanctorum dummy signing key").digest())
"""The well-known key for simulation and debug builds. Anyone can sign with it, so release
mode refuses bundles it signed."""


def signer_hash(key: Ed25519PublicKey) -> SHA256Hash:
    """The signer hash (like SGX MRSIGNER) of a signing key."""
    return SHA256Hash.of(key.encoded)


def encode_signature(key: Ed25519PrivateKey, code_hash: SHA256Hash) -> bytes:
    """The SIGNATURE entry: the signer's public key and its signature over the code hash."""
    signature = key.sign(_SIGNATURE_CONTEXT + code_hash.digest)
    return _SIGNATURE_MAGIC + bytes([1]) + key.public_key.encoded + signature


def _check_signature(data: bytes, code_hash: SHA256Hash, where: str) -> Ed25519PublicKey:
    if len(data) != 4 + 1 + 32 + 64 or data[:4] != _SIGNATURE_MAGIC or data[4] != 1:
        raise BundleError(f"{where}: the {SIGNATURE_ENTRY} entry is malformed")
    try:
        key = Ed25519PublicKey(data[5:37])
        key.verify(data[37:], _SIGNATURE_CONTEXT + code_hash.digest)
    except (InvalidKeyError, InvalidSignatureError):
        raise BundleError(
            f"{where} was altered after it was signed: its signature does not match its "
            "contents (code hash " + str(code_hash) + "); rebuild and sign it again"
        ) from None
    return key


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its signature matches the measurement of its contents."""

    config: EnclaveConfig
    files: dict[str, bytes]
    code_hash: SHA256Hash
    signer: Ed25519PublicKey
    native: tuple[NativeDistribution, ...] = ()
    """The records of the native dependencies, whose installed files the enclave checks."""

    @property
    def signer_hash(self) -> SHA256Hash:
        return signer_hash(self.signer)

    def python_files(self) -> dict[str, bytes]:
        """Importable files keyed by their path relative to the import root."""
        result = {}
        for path, content in self.files.items():
            for root in (CODE_DIR, DEPS_DIR):
                if path.startswith(root):
                    result[path[len(root) :]] = content
        return result


def read_bundle(data: bytes, where: str = "the bundle") -> Bundle:
    """Parse a bundle, recompute its code hash and check its signature.

    Raises :class:`BundleError` for anything malformed, oversized, or altered after signing.
    """
    if len(data) > MAX_BUNDLE_SIZE:
        raise BundleError(f"{where} is {len(data)} bytes, over the limit of {MAX_BUNDLE_SIZE}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                raise BundleError(f"{where} has duplicate entries")
            if sum(info.file_size for info in infos) > MAX_UNPACKED_SIZE:
                raise BundleError(f"{where} unpacks to more than {MAX_UNPACKED_SIZE} bytes")
            entries = {}
            for info in infos:
                if info.is_dir() or not safe_relative_path(info.filename):
                    raise BundleError(f"{where} has an unsafe entry name {info.filename!r}")
                entries[info.filename] = archive.read(info)
    except BundleError:
        raise
    except Exception as error:  # zipfile and zlib raise many kinds on corrupt input
        raise BundleError(
            f"{where} is not a valid enclave bundle: {type(error).__name__}: {error}"
        ) from None
    signature = entries.pop(SIGNATURE_ENTRY, None)
    if signature is None:
        raise BundleError(f"{where} is not signed: it has no {SIGNATURE_ENTRY} entry")
    config_bytes = entries.get(CONFIG_FILE)
    if config_bytes is None:
        raise BundleError(f"{where} has no {CONFIG_FILE}")
    try:
        config_text = config_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{where}: {CONFIG_FILE} is not UTF-8") from None
    config = parse_config(config_text, f"{where}: {CONFIG_FILE}")
    for name in entries:
        if name != CONFIG_FILE and not name.startswith((CODE_DIR, DEPS_DIR, NATIVE_DIR)):
            raise BundleError(f"{where} has an unexpected entry {name!r}")
    check_import_paths(entries, where)
    code_hash = measure(config, entries)
    signer = _check_signature(signature, code_hash, where)
    native = native_dependencies(config, entries, where)
    return Bundle(config, entries, code_hash, signer, native)


def _did_you_mean(unknown: list[str], known: Iterable[str] = _KNOWN_KEYS) -> str:
    guesses = [f"{guess!r} for {name!r}" for name in unknown if (guess := closest(name, known))]
    return f" (did you mean {', '.join(guesses)}?)" if guesses else ""
