"""Native dependencies at build time: the record of every installed file and its hash, part
of the code hash, refused when the installation does not match what pip recorded, and the
Gramine manifest's trusted files."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import zipfile
from pathlib import Path

import pytest

from sanctorum.build import build
from sanctorum.build.builder import write_bundle
from sanctorum.build.gramine import manifest_template
from sanctorum.common.bundle import (
    DUMMY_SIGNING_KEY,
    encode_signature,
    measure,
    parse_config,
    read_bundle,
)
from sanctorum.common.errors import BundleError
from sanctorum.common.mode import EnclaveMode
from sanctorum.common.native import NativeDistribution, RecordedFile
from tests.enclave.test_native_dependencies import write_numpy_project
from tests.native_environment import replace_file, write_distribution

NUMPY = importlib.metadata.distribution("numpy")
NUMPY_ROOT = Path(str(NUMPY.locate_file(""))).resolve()
EXTENSION = "fakenative/_speedups.cpython-311-x86_64-linux-gnu.so"


@pytest.fixture(scope="module")
def numpy_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(write_numpy_project(tmp_path_factory.mktemp("numpy"))).path


def _record(bundle: Path, name: str = "numpy") -> NativeDistribution:
    with zipfile.ZipFile(bundle) as archive:
        return NativeDistribution.decode(archive.read(f"native/{name}.json"), str(bundle))


def test_the_record_holds_every_installed_file_with_its_hash(numpy_build: Path) -> None:
    record = _record(numpy_build)
    assert (record.name, record.version) == ("numpy", NUMPY.version)
    paths = {f.path for f in record.files}
    installed = {
        f.as_posix()
        for f in NUMPY.files or ()
        if not f.as_posix().startswith("..") and "__pycache__" not in f.as_posix()
    }
    installation_only = {
        p for p in installed if p.rsplit("/", 1)[-1] in {"RECORD", "INSTALLER", "REQUESTED"}
    }
    assert paths == installed - installation_only
    assert any(p.startswith("numpy.libs/") for p in paths)  # what the linker loads, too
    for recorded in record.files:
        data = (NUMPY_ROOT / recorded.path).read_bytes()
        assert (recorded.sha256, recorded.size) == (hashlib.sha256(data).hexdigest(), len(data))
    with zipfile.ZipFile(numpy_build) as archive:
        assert not [n for n in archive.namelist() if n.startswith("deps/")]  # not copied


def test_the_record_is_part_of_the_code_hash(numpy_build: Path) -> None:
    bundle = read_bundle(numpy_build.read_bytes())
    record = _record(numpy_build)
    first = record.files[0]
    changed = NativeDistribution(
        record.name,
        record.version,
        (RecordedFile(first.path, "0" * 64, first.size), *record.files[1:]),
    )
    files = {**bundle.files, "native/numpy.json": changed.encode()}
    assert measure(bundle.config, files) != bundle.code_hash
    # A host that swaps the record in a signed bundle is caught by the signature.
    forged = write_bundle(files, encode_signature(DUMMY_SIGNING_KEY, bundle.code_hash))
    with pytest.raises(BundleError, match="altered after it was signed"):
        read_bundle(forged)


def _fake_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **files: bytes) -> Path:
    """A project naming the distribution 'fakenative', installed into a site of its own."""
    site = tmp_path / "site"
    write_distribution(
        site,
        "fakenative",
        "1.2",
        {"fakenative/__init__.py": b"", EXTENSION: b"\x7fELF fake", **files},
    )
    monkeypatch.syspath_prepend(str(site))
    project = tmp_path / "project"
    project.mkdir()
    (project / "enclave_main.py").write_text(
        "from sanctorum import Enclave\n\nclass E(Enclave):\n    pass\n"
    )
    (project / "enclave.toml").write_text(
        '[enclave]\nname = "fake"\nentry = "enclave_main:E"\nproduct_id = 1\n'
        'revocation_level = 0\nsources = ["enclave_main.py"]\ndependencies = ["fakenative"]\n'
    )
    return project


def test_a_fake_distribution_is_recorded_without_installation_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _fake_project(tmp_path, monkeypatch)
    record = _record(build(project).path, "fakenative")
    assert [f.path for f in record.files] == [
        "fakenative-1.2.dist-info/METADATA",
        "fakenative/__init__.py",
        EXTENSION,
    ]
    assert record.top_level_names() == {"fakenative"}


def test_a_file_changed_since_pip_installed_it_is_not_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _fake_project(tmp_path, monkeypatch)
    replace_file(tmp_path / "site" / EXTENSION, b"\x7fELF planted")
    with pytest.raises(BundleError, match="differs from the hash pip recorded"):
        build(project)
    assert not (project / "build").exists()


def test_a_recorded_file_that_is_missing_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _fake_project(tmp_path, monkeypatch)
    (tmp_path / "site" / EXTENSION).unlink()
    with pytest.raises(BundleError, match=r"_speedups.*is missing or unreadable"):
        build(project)


def test_a_distribution_without_record_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _fake_project(tmp_path, monkeypatch)
    (tmp_path / "site" / "fakenative-1.2.dist-info" / "RECORD").unlink()
    with pytest.raises(BundleError, match="no RECORD of its installed files"):
        build(project)


def test_a_source_module_with_a_native_dependencys_name_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _fake_project(tmp_path, monkeypatch)
    (project / "fakenative.py").write_text("")
    text = (project / "enclave.toml").read_text()
    (project / "enclave.toml").write_text(
        text.replace('"enclave_main.py"]', '"enclave_main.py", "fakenative.py"]')
    )
    with pytest.raises(BundleError, match="'fakenative' is in the native dependency"):
        build(project)


def test_native_code_in_the_sources_points_to_dependencies(tmp_path: Path) -> None:
    from tests.conftest import write_project

    project = write_project(tmp_path, "Recorder", sources='["behaviour_enclave.py", "lib.so"]')
    (project / "lib.so").write_bytes(b"\x7fELF")
    with pytest.raises(BundleError, match=r"lib\.so is native code.*\[enclave\]\.dependencies"):
        build(project)


def test_a_record_the_dependencies_do_not_name_is_refused(numpy_build: Path) -> None:
    bundle = read_bundle(numpy_build.read_bytes())
    text = bundle.files["enclave.toml"].decode().replace('["numpy"]', "[]")
    files = {**bundle.files, "enclave.toml": text.encode()}
    code_hash = measure(parse_config(text), files)
    data = write_bundle(files, encode_signature(DUMMY_SIGNING_KEY, code_hash))
    with pytest.raises(BundleError, match=r"not one \[enclave\]\.dependencies names"):
        read_bundle(data)


# -- the record's format: each malformation has its message ---------------------------------

GOOD = {"format": 1, "name": "x", "version": "1", "files": [["x/a.so", "a" * 64, 3]]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 2}, "format 2"),
        ({"extra": 1}, "exactly format, name, version and files"),
        ({"name": ""}, "non-empty strings"),
        ({"files": []}, "non-empty list"),
        ({"files": [["x/a.so", "a" * 64]]}, r"\[path, sha256, size\]"),
        ({"files": [["x/a.so", "a" * 64, True]]}, r"\[path, sha256, size\]"),
        ({"files": [["../a.so", "a" * 64, 3]]}, "unsafe file path"),
        ({"files": [["/etc/passwd", "a" * 64, 3]]}, "unsafe file path"),
        ({"files": [["x//a.so", "a" * 64, 3]]}, "unsafe file path"),
        ({"files": [["x/a.so", "A" * 64, 3]]}, "bad hash or size"),
        ({"files": [["x/a.so", "a" * 63, 3]]}, "bad hash or size"),
        ({"files": [["x/a.so", "a" * 64, -1]]}, "bad hash or size"),
        ({"files": [["x/b.so", "a" * 64, 3], ["x/a.so", "a" * 64, 3]]}, "sorted and unique"),
        ({"files": [["x/a.so", "a" * 64, 3], ["x/a.so", "b" * 64, 3]]}, "sorted and unique"),
    ],
)
def test_a_malformed_record_is_refused(change: dict[str, object], message: str) -> None:
    data = json.dumps({**GOOD, **change}).encode()
    with pytest.raises(BundleError, match=message):
        NativeDistribution.decode(data, "b.enclave")


@pytest.mark.parametrize("data", [b"\xff", b"[1]", b"{", b"[" * 100_000])
def test_a_record_that_is_not_a_json_object_is_refused(data: bytes) -> None:
    with pytest.raises(BundleError, match="malformed"):
        NativeDistribution.decode(data, "b.enclave")


def test_a_well_formed_record_round_trips() -> None:
    record = NativeDistribution.decode(json.dumps(GOOD).encode(), "b.enclave")
    assert NativeDistribution.decode(record.encode(), "b.enclave") == record


# -- Gramine: the recorded files are trusted files with the recorded hashes -----------------


def test_the_manifest_trusts_each_recorded_file_with_its_hash(numpy_build: Path) -> None:
    bundle = read_bundle(numpy_build.read_bytes())
    record = _record(numpy_build)
    text = manifest_template(
        bundle.config, Path("/b.enclave"), debug=True, native=[(NUMPY_ROOT, record)]
    )
    for recorded in record.files:
        assert (
            f'{{ uri = "file:{NUMPY_ROOT / recorded.path}", sha256 = "{recorded.sha256}" }},'
            in text
        )


def test_a_native_dependency_outside_the_mounted_paths_is_refused(numpy_build: Path) -> None:
    bundle = read_bundle(numpy_build.read_bytes())
    with pytest.raises(BundleError, match="outside the directories the SGX enclave mounts"):
        manifest_template(
            bundle.config,
            Path("/b.enclave"),
            debug=True,
            paths=[Path("/usr/lib/python3.11")],
            native=[(NUMPY_ROOT, _record(numpy_build))],
        )


def test_a_debug_build_writes_the_recorded_files_into_its_manifest(tmp_path: Path) -> None:
    result = build(write_numpy_project(tmp_path), mode=EnclaveMode.DEBUG)
    assert result.sgx is not None
    text = result.sgx.manifest_template.read_text()
    multiarray = next(
        f for f in _record(result.path).files if f.path.startswith("numpy/_core/_multiarray_umath")
    )
    assert f'sha256 = "{multiarray.sha256}"' in text


def test_the_build_command_names_each_native_dependency_and_its_version(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sanctorum.cli import app

    result = CliRunner().invoke(app, ["build", str(write_numpy_project(tmp_path))])
    assert result.exit_code == 0, result.output
    count = len(_record(tmp_path / "build" / "numpy-enclave.enclave").files)
    assert (
        f"native:      numpy {NUMPY.version}, {count} files recorded with their hashes: the host "
        f"must have this very wheel installed (pip install numpy=={NUMPY.version})"
    ) in result.output
