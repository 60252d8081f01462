"""A hostile host against measured native dependencies, and against the vault and ml samples.

Each test asserts the safe behaviour: it passes while the attack fails, and fails (documenting
the weakness) when the attack succeeds.

- Native dependencies: the host changes its own copy of numpy (a virtual environment of its own,
  as in ``tests/enclave/test_native_dependencies.py``) with symbolic links, directories, /proc
  files, planted modules and suffix tricks, a second dist-info, and a METADATA that blocks or
  does not decode; crafted records in re-signed bundles; record paths that could inject into the
  Gramine manifest.
- The vault sample: a second vault instance the host runs itself, a vault or worker on a STALE
  platform, malformed owner commands, garbage on the release topic, replays through the web host.
- The ml sample: hostile commands, finite but enormous numbers, and a rollback that gives a
  colluding party its prediction budget back (a documented limit), seen by the other parties.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.metadata
import importlib.util
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, cast

import pytest
from ml_enclave import COMMAND_TOPIC, MAX_PREDICTIONS, PooledModelEnclave

from sanctorum import (
    DependencyMismatchError,
    EnclaveCallError,
    EnclaveClient,
    EnclaveHost,
    EnclaveRollbackError,
    InProcessTransport,
    InvalidEnclaveError,
    MailError,
    SecuritySummary,
)
from sanctorum.attestation import EnclaveConstraint, MockConfiguration
from sanctorum.build import build
from sanctorum.build.builder import write_bundle
from sanctorum.build.gramine import manifest_template
from sanctorum.build.native import record_distribution
from sanctorum.common.bundle import (
    DUMMY_SIGNING_KEY,
    encode_signature,
    measure,
    parse_config,
    read_bundle,
)
from sanctorum.common.errors import BundleError
from sanctorum.common.hashes import SHA256Hash
from sanctorum.common.native import NativeDistribution, RecordedFile
from sanctorum.enclave.native import InstalledDistribution, check_installed, read_checked
from tests.conftest import mock_instance_info
from tests.enclave.test_native_dependencies import (
    LAZY_SOURCE,
    VERSION,
    HostProcess,
    write_numpy_project,
)
from tests.native_environment import host_environment, replace_file, write_distribution

VAULT_SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "vault"
EMPTY_RECORDED = "numpy/_pyinstaller/__init__.py"  # a recorded file of 0 bytes
SIGNER = SHA256Hash(hashlib.sha256(b"the vault's signing key").digest())


# == native dependencies: the enclave process against the host's copy of numpy ===============


@pytest.fixture(scope="module")
def numpy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(write_numpy_project(tmp_path_factory.mktemp("numpy-attacks"))).path


@pytest.fixture
def host_site(tmp_path: Path) -> tuple[Path, Path]:
    """A host's virtual environment with its own copy of numpy: its python, its site."""
    return host_environment(tmp_path, "numpy")


@pytest.fixture
def hosts(numpy_bundle: Path, host_site: tuple[Path, Path]) -> Iterator[list[HostProcess]]:
    started: list[HostProcess] = []
    yield started
    for process in started:
        process.close()


def _start(hosts: list[HostProcess], host_site: tuple[Path, Path], bundle: Path) -> HostProcess:
    process = HostProcess(host_site[0], bundle)
    hosts.append(process)
    return process


def _symlink_to(target: str) -> Callable[[Path, Path], None]:
    """Makes a symbolic link to ``target`` (relative to the site, or absolute)."""

    def make(path: Path, site: Path) -> None:
        path.symlink_to(site / target if not target.startswith("/") else Path(target))

    return make


def _directory(path: Path, site: Path) -> None:
    path.mkdir()


def _loop(path: Path, site: Path) -> None:
    path.symlink_to(path)


# What replaces which recorded file.
REPLACEMENTS: dict[str, tuple[str, Callable[[Path, Path], None]]] = {
    "symlink to another recorded file": (LAZY_SOURCE, _symlink_to("numpy/_globals.py")),
    "symlink to a directory": (LAZY_SOURCE, _symlink_to("numpy")),
    "a directory": (LAZY_SOURCE, _directory),
    "symlink loop": (LAZY_SOURCE, _loop),
    "dangling symlink": (LAZY_SOURCE, _symlink_to("nowhere.py")),
    "symlink to /dev/zero": (LAZY_SOURCE, _symlink_to("/dev/zero")),
    # A procfs file is a regular file of size 0 that reads non-empty.
    "an empty file as a symlink to /proc": (EMPTY_RECORDED, _symlink_to("/proc/self/status")),
}


@pytest.mark.parametrize("how", sorted(REPLACEMENTS))
def test_a_recorded_file_replaced_by_something_else_is_a_dependency_mismatch(
    how: str, numpy_bundle: Path, host_site: tuple[Path, Path], hosts: list[HostProcess]
) -> None:
    changed, make = REPLACEMENTS[how]
    path = host_site[1] / changed
    path.unlink()
    make(path, host_site[1])
    answer = _start(hosts, host_site, numpy_bundle).read()
    assert answer.get("error") == DependencyMismatchError.__name__, answer
    assert changed in answer["message"]


def test_a_directory_in_place_of_a_module_after_the_start_is_a_dependency_mismatch(
    numpy_bundle: Path, host_site: tuple[Path, Path], hosts: list[HostProcess]
) -> None:
    host = _start(hosts, host_site, numpy_bundle)
    assert host.read() == {"started": "yes"}
    path = host_site[1] / LAZY_SOURCE
    path.unlink()
    path.mkdir()
    answer = host.call("import numpy.ma")
    assert answer["error"] == "EnclaveCallError"
    assert DependencyMismatchError.__name__ in answer["message"], answer
    assert host.call("mean 3 4") == {"answer": "3.500000 5.000000"}  # the enclave goes on


def test_planted_files_beside_recorded_ones_are_never_imported(
    numpy_bundle: Path, host_site: tuple[Path, Path], hosts: list[HostProcess]
) -> None:
    """Extension-suffix tricks (``.abi3.so``, ``.so``, a package ``__init__`` as an extension),
    a package directory shadowing a recorded module, modules planted in recorded directories, in
    data directories, under a look-alike top-level name and in numpy.libs."""
    site = host_site[1]
    planted = b"\x7fELF planted by the host"
    (site / "numpy/random/_pcg64.abi3.so").write_bytes(planted)
    (site / "numpy/random/_pcg64.so").write_bytes(planted)
    (site / "numpy/ma/__init__.cpython-311-x86_64-linux-gnu.so").write_bytes(planted)
    (site / "numpy/ma/core").mkdir()
    (site / "numpy/ma/core/__init__.py").write_text("PLANTED = True\n")
    (site / "numpy/_core/include/numpy/planted.py").write_text("PLANTED = True\n")
    (site / "numpy/planted_package").mkdir()
    (site / "numpy/planted_package/__init__.py").write_text("PLANTED = True\n")
    (site / "numpy_planted.py").write_text("PLANTED = True\n")
    (site / "numpy.libs/planted.py").write_text("PLANTED = True\n")
    host = _start(hosts, host_site, numpy_bundle)
    assert host.read() == {"started": "yes"}
    for module, recorded in [
        ("numpy.random._pcg64", "numpy/random/_pcg64.cpython-311-x86_64-linux-gnu.so"),
        ("numpy.ma", "numpy/ma/__init__.py"),
        ("numpy.ma.core", "numpy/ma/core.py"),
    ]:
        assert host.call(f"import {module}") == {"answer": str(site / recorded)}
    for module in ("numpy._core.include.numpy.planted", "numpy.planted_package", "numpy_planted"):
        answer = host.call(f"import {module}")
        assert answer["error"] == "EnclaveCallError", (module, answer)
        assert "ModuleNotFoundError" in answer["message"]
    assert host.call("mean 1 2 3") == {"answer": "2.000000 3.741657"}


def test_a_second_numpy_dist_info_is_refused_or_changes_nothing(
    numpy_bundle: Path, host_site: tuple[Path, Path], hosts: list[HostProcess]
) -> None:
    info = host_site[1] / "numpy-9.9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: numpy\nVersion: 9.9.9\n")
    host = _start(hosts, host_site, numpy_bundle)
    answer = host.read()
    if "error" in answer:
        assert answer["error"] == DependencyMismatchError.__name__, answer
    else:
        assert host.call("mean 3 4") == {"answer": "3.500000 5.000000"}


# == native dependencies: the checks themselves, in this process ==============================


def _fake_installation(tmp_path: Path) -> tuple[Path, NativeDistribution]:
    """A native distribution installed by hand into a site of its own, and its record."""
    site = write_distribution(
        tmp_path / "site",
        "fakenative",
        "1.2",
        {
            "fakenative/__init__.py": b"",
            "fakenative/data.py": b"VALUE = 1\n",
            "fakenative/_x.cpython-311-x86_64-linux-gnu.so": b"\x7fELF fake",
        },
    )
    (distribution,) = importlib.metadata.distributions(name="fakenative", path=[str(site)])
    return site, record_distribution(distribution)


def _recorded(record: NativeDistribution, path: str) -> RecordedFile:
    return next(f for f in record.files if f.path == path)


def test_a_fifo_in_place_of_metadata_is_refused_not_waited_on(tmp_path: Path) -> None:
    """The recorded files are opened without blocking; the dist-info's METADATA is one of them,
    but its version is read (by importlib.metadata) before any file is checked."""
    site, record = _fake_installation(tmp_path)
    metadata = site / "fakenative-1.2.dist-info" / "METADATA"
    content = metadata.read_bytes()
    metadata.unlink()
    os.mkfifo(metadata)
    outcome: list[BaseException | None] = []

    def check() -> None:
        try:
            check_installed([record], [str(site)])
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    checker = threading.Thread(target=check, daemon=True)
    checker.start()
    checker.join(2)
    blocked = checker.is_alive()
    if blocked:  # let it go: be the writer it waits for
        try:
            writer = os.open(metadata, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            pass
        else:
            os.write(writer, content)
            os.close(writer)
        checker.join(5)
    assert not blocked, "check_installed waited on a FIFO in place of METADATA"
    assert isinstance(outcome[0], DependencyMismatchError), outcome


def test_metadata_that_is_not_utf8_is_a_dependency_mismatch(tmp_path: Path) -> None:
    site, record = _fake_installation(tmp_path)
    replace_file(site / "fakenative-1.2.dist-info" / "METADATA", b"\xff\xfeVersion: 1.2\n")
    with pytest.raises(DependencyMismatchError):
        check_installed([record], [str(site)])


def test_a_directory_in_place_of_a_recorded_file_is_refused_and_leaks_no_descriptor(
    tmp_path: Path,
) -> None:
    site, record = _fake_installation(tmp_path)
    path = site / "fakenative/data.py"
    path.unlink()
    path.mkdir()
    installed = InstalledDistribution(record, site)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(DependencyMismatchError):
            read_checked(installed, _recorded(record, "fakenative/data.py"))
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize("change", ["grows", "shrinks"])
def test_a_file_changed_between_its_check_and_its_read_is_refused(
    change: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host changes the file right after the enclave looked at its size."""
    site, record = _fake_installation(tmp_path)
    path = site / "fakenative/data.py"
    real_fstat = os.fstat
    done: list[bool] = []

    def fstat_then_change(descriptor: int) -> os.stat_result:
        status = real_fstat(descriptor)
        if not done:
            done.append(True)
            with open(path, "r+b") as file:
                if change == "grows":
                    file.seek(0, os.SEEK_END)
                    file.write(b"import os  # planted\n")
                else:
                    file.truncate(3)
        return status

    monkeypatch.setattr(os, "fstat", fstat_then_change)
    with pytest.raises(DependencyMismatchError):
        read_checked(InstalledDistribution(record, site), _recorded(record, "fakenative/data.py"))
    assert done


def test_an_unreadable_or_oversized_record_entry_is_a_dependency_mismatch(tmp_path: Path) -> None:
    site, record = _fake_installation(tmp_path)
    huge = NativeDistribution(
        record.name,
        record.version,
        (*record.files, RecordedFile("fakenative/" + "x" * 300 + ".py", "0" * 64, 10**4000)),
    )
    with pytest.raises(DependencyMismatchError):
        check_installed([huge], [str(site)])
    first = record.files[0]
    enormous = NativeDistribution(
        record.name, record.version, (RecordedFile(first.path, first.sha256, 10**4000),)
    )
    with pytest.raises(DependencyMismatchError):
        check_installed([enormous], [str(site)])


# == native dependencies: crafted records in re-signed bundles ================================


def _resign(files: dict[str, bytes]) -> bytes:
    """A bundle of ``files``, signed (validly) with the public dummy key."""
    config = parse_config(files["enclave.toml"].decode())
    return write_bundle(files, encode_signature(DUMMY_SIGNING_KEY, measure(config, files)))


def _with_dependencies(files: dict[str, bytes], names: list[str]) -> dict[str, bytes]:
    text = files["enclave.toml"].decode().replace('["numpy"]', json.dumps(names))
    return {**files, "enclave.toml": text.encode()}


def _record_bytes(name: str, paths: list[str], version: str = "1") -> bytes:
    document = {
        "format": 1,
        "name": name,
        "version": version,
        "files": [[p, "0" * 64, 1] for p in sorted(paths)],
    }
    return json.dumps(document).encode()


ODD_RECORDS: dict[str, tuple[list[str], dict[str, bytes]]] = {
    "an entry climbing out of native/": (
        ["numpy", "evil"],
        {"native/../evil.json": _record_bytes("evil", ["evil/a.py"])},
    ),
    "a name not normalized": (
        ["numpy", "Evil_Dist"],
        {"native/Evil_Dist.json": _record_bytes("Evil_Dist", ["evil/a.py"])},
    ),
    "an entry in a subdirectory": (
        ["numpy", "evil"],
        {"native/sub/evil.json": _record_bytes("evil", ["evil/a.py"])},
    ),
    "an entry that is not .json": (
        ["numpy", "evil"],
        {"native/evil": _record_bytes("evil", ["evil/a.py"])},
    ),
    "a record under another distribution's entry": (
        ["numpy", "evil"],
        {"native/evil.json": _record_bytes("other", ["evil/a.py"])},
    ),
    "a second record owning numpy": (
        ["numpy", "evil"],
        {"native/evil.json": _record_bytes("evil", ["numpy/evil.py"])},
    ),
    "a record owning the enclave's own module": (
        ["numpy", "evil"],
        {"native/evil.json": _record_bytes("evil", ["native_enclave.py"])},
    ),
    "a record no dependency names": (
        ["numpy"],
        {"native/evil.json": _record_bytes("evil", ["evil/a.py"])},
    ),
    "a record with duplicate keys": (
        ["numpy", "evil"],
        {
            "native/evil.json": b'{"format": 1, "format": 2, "name": "evil", "version": "1", '
            b'"files": [["evil/a.py", "' + b"0" * 64 + b'", 1]]}'
        },
    ),
}


@pytest.mark.parametrize("what", sorted(ODD_RECORDS))
def test_odd_record_entries_in_a_signed_bundle_are_bundle_errors(
    what: str, numpy_bundle: Path
) -> None:
    names, extra = ODD_RECORDS[what]
    files = {**_with_dependencies(read_bundle(numpy_bundle.read_bytes()).files, names), **extra}
    with pytest.raises(BundleError):
        read_bundle(_resign(files))


def test_a_huge_record_is_refused_promptly_at_the_start(numpy_bundle: Path, tmp_path: Path) -> None:
    files = dict(read_bundle(numpy_bundle.read_bytes()).files)
    paths = [f"numpy/planted/f{i:06d}.py" for i in range(100_000)]
    files["native/numpy.json"] = _record_bytes("numpy", paths, VERSION)
    bundle = tmp_path / "huge.enclave"
    bundle.write_bytes(_resign(files))
    began = time.monotonic()
    host = EnclaveHost.load(bundle, mode="simulation")
    with pytest.raises(DependencyMismatchError, match="f000000"):
        host.start()
    host.close()
    assert time.monotonic() - began < 20


def test_a_recorded_path_cannot_inject_into_the_gramine_manifest() -> None:
    """A wheel's file names go into the record, then into the manifest template, which
    gramine-manifest renders with Jinja and reads as TOML."""
    injected = (
        'evil/a.so", sha256 = "' + "0" * 64 + '" },\n]\nsgx.allowed_files = ["file:/"]\n'
        'x = [\n  { uri = "file:{{ 7 * 7 }}'
    )
    document = {"format": 1, "name": "evil", "version": "1", "files": [[injected, "a" * 64, 1]]}
    config = parse_config(
        '[enclave]\nname = "x"\nentry = "m:E"\nproduct_id = 1\nrevocation_level = 0\n'
        'sources = ["m.py"]\ndependencies = ["evil"]\n'
    )
    with pytest.raises(BundleError, match="unsafe file path"):
        NativeDistribution.decode(json.dumps(document).encode(), "b.enclave")
    # Built by hand (not decoded), the record cannot go into a manifest from a plain root
    # either: the builder only ever writes decoded records, and refuses an odd root.
    record = NativeDistribution("evil", "1", (RecordedFile("evil/a.so", "a" * 64, 1),))
    with pytest.raises(BundleError, match="a Gramine manifest cannot hold"):
        manifest_template(
            config, Path("/b.enclave"), debug=True, native=[(Path('/x"{{ 7 }}'), record)]
        )


# == the vault sample ===========================================================================


def _load_sample(name: str) -> ModuleType:
    path = VAULT_SAMPLE / name / f"{name}_enclave.py"
    spec = importlib.util.spec_from_file_location(f"{name}_enclave", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def vault_class() -> Any:
    return _load_sample("vault").VaultEnclave


@pytest.fixture(scope="module")
def worker_class() -> Any:
    return _load_sample("worker").WorkerEnclave


def _client(host: EnclaveHost) -> EnclaveClient:
    info = host.enclave_instance_info
    client = EnclaveClient(EnclaveConstraint.parse(f"C:{info.code_hash} SEC:INSECURE"))
    client.start(InProcessTransport(host))
    return client


def _ask(client: EnclaveClient, body: object, topic: str) -> dict[str, Any]:
    reply = client.send_mail(json.dumps(body).encode(), topic=topic)
    assert reply is not None
    answer: dict[str, Any] = json.loads(reply.body)
    return answer


def _attestation(host: EnclaveHost) -> str:
    return base64.b64encode(host.enclave_instance_info.serialize()).decode()


def _release(vault: EnclaveHost, owner: EnclaveClient, worker: EnclaveHost) -> bytes:
    """The owner has the vault release its secret to the worker; a courier carries it."""
    answer = _ask(owner, {"release_to": _attestation(worker)}, "vault")
    assert "released_to" in answer, answer
    assert vault.mailbox is not None
    mail = vault.mailbox.next_mail("to-worker")
    assert mail is not None
    vault.mailbox.next_mail("to-worker", mail[0])
    worker.deliver_mail(mail[1], "from-vault")
    return mail[1]


def _hmac(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def test_a_second_vault_instance_cannot_replace_the_workers_secret(
    vault_class: Any, worker_class: Any
) -> None:
    """The vault's host starts another instance of the same vault (a fresh state directory),
    deposits a secret of its own as that instance's first depositor, and releases it to the
    worker the owner's vault already serves."""
    with (
        EnclaveHost.load(vault_class, mode="mock").start() as vault,
        EnclaveHost.load(worker_class, mode="mock").start() as worker,
        EnclaveHost.load(vault_class, mode="mock").start() as rogue,
    ):
        owner, user = _client(vault), _client(worker)
        deposited = _ask(owner, {"deposit": "the owner's key"}, "vault")
        assert deposited["deposited"] is True
        _release(vault, owner, worker)
        owners = {"hmac": _hmac("the owner's key", "pay 100"), "owner": deposited["owner"]}
        assert _ask(user, {"sign": "pay 100"}, "sign") == owners
        attacker = _client(rogue)
        assert _ask(attacker, {"deposit": "the host's key"}, "vault")["deposited"] is True
        with pytest.raises(EnclaveCallError, match="holds a secret already"):
            _release(rogue, attacker, worker)
        assert _ask(user, {"sign": "pay 100"}, "sign") == owners


@pytest.mark.parametrize("which", ["vault", "worker"])
def test_a_stale_enclave_does_not_trust_a_forged_insecure_peer(
    which: str, vault_class: Any, worker_class: Any
) -> None:
    """On SGX a STALE platform (a TCB update pending) is common. Mock and simulated evidence is
    forgeable by anyone for any signer: a STALE vault (or worker) must not accept it."""
    enclave = (vault_class if which == "vault" else worker_class)()
    own = SimpleNamespace(
        signer_hash=SIGNER, security_info=SimpleNamespace(summary=SecuritySummary.STALE)
    )
    enclave._runtime = cast(Any, SimpleNamespace(instance_info=own))
    constraint = enclave._worker_constraint() if which == "vault" else enclave._vault_constraint()
    assert constraint.endswith("SEC:STALE")
    peer_product = 8 if which == "vault" else 7
    forged = mock_instance_info(MockConfiguration(signer_hash=SIGNER, product_id=peer_product))
    with pytest.raises(InvalidEnclaveError):
        EnclaveConstraint.parse(constraint).check(forged)


def test_malformed_owner_commands_are_answered_not_raised(vault_class: Any) -> None:
    with EnclaveHost.load(vault_class, mode="mock").start() as vault:
        owner, stranger = _client(vault), _client(vault)
        assert _ask(owner, {"deposit": "s"}, "vault")["deposited"] is True
        own = _attestation(vault)
        other_signer = mock_instance_info(MockConfiguration(signer_hash=SIGNER, product_id=8))
        for command in [
            {"release_to": "AAAA"},
            {"release_to": None},
            {"release_to": ["x"]},
            {"release_to": own},  # the vault itself: product 7
            {"release_to": base64.b64encode(other_signer.serialize()).decode()},
            {"release_to": "\u00e9t\u00e9"},  # not ASCII
            {"deposit": "again"},
            {"audit": True, "deposit": "x"},
        ]:
            answer = _ask(owner, command, "vault")
            assert set(answer) <= {"refused", "error"}, (command, answer)
        assert _ask(stranger, {"audit": True}, "vault") == {
            "refused": "only the vault's owner may use it"
        }
        assert _ask(owner, {"audit": True}, "vault") == {"released_to": []}


def test_garbage_or_forged_secrets_on_the_release_topic_are_not_taken(
    vault_class: Any, worker_class: Any
) -> None:
    with (
        EnclaveHost.load(vault_class, mode="mock").start() as vault,
        EnclaveHost.load(worker_class, mode="mock").start() as worker,
    ):
        forger = _client(worker)
        forged_vault = mock_instance_info(MockConfiguration(product_id=7))
        for body in [
            b"not json",
            b"[]",
            b'{"vault": 1, "secret": "forged"}',
            b'{"vault": "AAAA", "secret": "forged"}',
            json.dumps({"secret": "forged", "owner": "x", "vault": _attestation(vault)}).encode(),
            json.dumps(
                {
                    "secret": "forged",
                    "owner": "x",
                    "vault": base64.b64encode(forged_vault.serialize()).decode(),
                }
            ).encode(),
        ]:
            with pytest.raises(EnclaveCallError):
                forger.send_mail(body, topic="vault-release")
        assert "waiting" in _ask(forger, {"sign": "x"}, "sign")


def test_replayed_and_redelivered_releases_are_refused(vault_class: Any, worker_class: Any) -> None:
    """The host replays the owner's deposit and release, and the courier delivers the release
    twice, and to a restarted worker: one release is made, to one instance."""
    with (
        EnclaveHost.load(vault_class, mode="mock").start() as vault,
        EnclaveHost.load(worker_class, mode="mock").start() as worker,
    ):
        owner = _client(vault)
        assert _ask(owner, {"deposit": "the owner's key"}, "vault")["deposited"] is True
        release = _release(vault, owner, worker)
        first = worker.enclave_instance_info.encryption_key.encoded.hex()
        with pytest.raises(MailError):
            worker.deliver_mail(release, "from-vault")  # the courier, again
        assert vault.mailbox is not None
        assert vault.mailbox.next_mail("to-worker") is None  # nothing more was released
        worker.restart()
        with pytest.raises(MailError):  # sealed to the old instance's key
            worker.deliver_mail(release, "from-vault")
        assert _ask(owner, {"audit": True}, "vault") == {"released_to": [first]}


# == the ml sample ==============================================================================


@pytest.fixture
def ml_host() -> Iterator[EnclaveHost]:
    with EnclaveHost.load(PooledModelEnclave, mode="mock").start() as host:
        yield host


def _ml(client: EnclaveClient, body: object) -> dict[str, Any]:
    return _ask(client, body, COMMAND_TOPIC)


def _train(client: EnclaveClient, rows: list[list[float]], labels: list[int]) -> dict[str, Any]:
    return _ml(client, {"train": {"rows": rows, "labels": labels}, "parties": 2})


HOSTILE_COMMANDS: list[object] = [
    None,
    [],
    "train",
    {},
    {"status": False},
    {"status": True, "predict": []},
    {"predict": None},
    {"predict": [[]]},
    {"predict": [[1.0]] * (MAX_PREDICTIONS + 1)},
    {"predict": [["1", 2]]},
    {"train": None, "parties": 2},
    {"train": {"rows": [[1, 2]]}, "parties": 2},
    {"train": {"rows": [[1, 2]], "labels": [1], "extra": 1}, "parties": 2},
    {"train": {"rows": [[1, 2]], "labels": [1]}, "parties": "2"},
    {"train": {"rows": [[1, 2]], "labels": [1]}, "parties": 10**100},
    {"train": {"rows": [[10**400, 2]], "labels": [1]}, "parties": 2},
    {"train": {"rows": [[1, 2]] * 2001, "labels": [1] * 2001}, "parties": 2},
    {"train": {"rows": [[True, 2]], "labels": [1]}, "parties": 2},
    {"train": {"rows": [[1, 2]], "labels": [1.0]}, "parties": 2},
    {"train": {"rows": [[1] * 33], "labels": [1]}, "parties": 2},
]


def test_hostile_commands_never_crash_the_ml_enclave_nor_leak_rows(ml_host: EnclaveHost) -> None:
    a, b, outsider = _client(ml_host), _client(ml_host), _client(ml_host)
    for body in HOSTILE_COMMANDS:
        assert set(_ml(outsider, body)) <= {"refused", "error", "waiting"}, body
    assert _train(a, [[1.125, 5.5], [2.0, 1.0], [3.0, 4.0]], [0, 1, 1]) == {"waiting": 1}
    assert "trained" in _train(b, [[4.0, 1.0], [0.375, 3.0]], [1, 0])
    for body in HOSTILE_COMMANDS:
        assert set(_ml(a, body)) <= {"refused", "error"}, body
    assert "refused" in _ml(a, {"predict": [[1e308, -1e308], [-1e308, 1e308]]})
    probabilities = _ml(a, {"predict": [[1e9, -1e9], [-1e9, 1e9]]})["probabilities"]
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    # Once trained, the enclave keeps who took part, not their rows.
    state = dict(ml_host.mock_enclave.persistent_map)
    assert all(value == b"{}" for key, value in state.items() if key.startswith("party:"))
    assert not any(b"1.125" in value or b"0.375" in value for value in state.values())


def test_one_party_with_enormous_finite_numbers_cannot_poison_the_pooled_model(
    ml_host: EnclaveHost,
) -> None:
    """Every number passes the "finite" check, but float64 arithmetic on them overflows."""
    attacker, clinic = _client(ml_host), _client(ml_host)
    answer = _train(attacker, [[1e308, 1.0], [1e308, 2.0]], [0, 1])
    assert answer["refused"].startswith("rows: ")
    _train(attacker, [[1e9, 1.0], [-1e9, 2.0]], [0, 1])  # the largest allowed
    _train(clinic, [[1.0, 5.0], [2.0, 1.0], [3.0, 4.0], [4.0, 1.0]], [0, 1, 1, 0])
    reply = _ml(clinic, {"predict": [[1.0, 5.0], [3.0, 4.0]]})
    assert "probabilities" in reply, reply
    assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in reply["probabilities"]), reply


def test_a_rollback_that_restores_a_spent_budget_is_seen_by_the_other_parties(
    ml_host: EnclaveHost,
) -> None:
    """A party that colludes with the host can have its budget back: the host restarts the
    enclave from a state saved before the party spent it (a documented limit: the README and
    security.md, known limits). The other parties' clients see that rollback."""
    party, other = _client(ml_host), _client(ml_host)
    _train(party, [[1.0, 5.0], [2.0, 1.0], [3.0, 4.0]], [0, 1, 1])
    _train(other, [[4.0, 1.0], [0.5, 3.0]], [1, 0])
    sealed = ml_host.sealed_state
    spent = _ml(party, {"predict": [[1.0, 2.0]] * MAX_PREDICTIONS})
    assert len(spent["probabilities"]) == MAX_PREDICTIONS
    assert "refused" in _ml(party, {"predict": [[1.0, 2.0]]})
    assert "probabilities" in _ml(other, {"predict": [[1.0, 2.0]]})  # other sees the commit
    ml_host.sealed_state = sealed
    ml_host.restart()
    with pytest.raises(EnclaveRollbackError):
        _ml(other, {"predict": [[1.0, 2.0]]})
