"""Bundles: deterministic builds, measurement from sources, signatures, tampering, settings."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sanctorum.build import (
    build,
    generate_key,
    generate_sgx_key,
    load_key,
    measure_project,
    sign,
)
from sanctorum.cli import app
from sanctorum.common.bundle import DUMMY_SIGNING_KEY, read_bundle, signer_hash
from sanctorum.common.errors import BundleError, EnclaveLoadError
from sanctorum.common.mode import EnclaveMode
from sanctorum.host import EnclaveHost
from tests.conftest import write_project


def _project(directory: Path, **extra: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return write_project(directory, "Recorder", **extra)  # type: ignore[arg-type]


def test_same_sources_give_identical_bundles(tmp_path: Path) -> None:
    first, second = _project(tmp_path / "a"), _project(tmp_path / "elsewhere" / "b")
    os.utime(second / "behaviour_enclave.py", (1_000_000, 1_000_000))
    os.utime(second / "enclave.toml", (2_000_000, 2_000_000))
    one = build(first, tmp_path / "out1")
    two = build(second, tmp_path / "out2")
    assert one.path.read_bytes() == two.path.read_bytes()
    assert one.code_hash == two.code_hash == measure_project(first)
    assert one.signer_hash == signer_hash(DUMMY_SIGNING_KEY.public_key)


def test_zip_entries_are_normalised(tmp_path: Path) -> None:
    result = build(_project(tmp_path / "p"), tmp_path / "out")
    with zipfile.ZipFile(result.path) as archive:
        infos = archive.infolist()
    assert [info.filename for info in infos] == [
        "code/behaviour_enclave.py",
        "enclave.toml",
        "SIGNATURE",
    ]
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {info.external_attr for info in infos} == {0o644 << 16}


def test_any_source_change_changes_the_code_hash(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    before = measure_project(project)
    with open(project / "behaviour_enclave.py", "a") as file:
        file.write("\n# a comment\n")
    assert measure_project(project) != before
    (project / "enclave.toml").write_text(
        (project / "enclave.toml")
        .read_text()
        .replace("revocation_level = 0", "revocation_level = 1")
    )
    assert len({before, measure_project(project)}) == 2


def test_files_outside_sources_are_not_bundled(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    before = measure_project(project)
    (project / "host.py").write_text("print('not part of the enclave')\n")
    assert measure_project(project) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"product_id": ""}, r"\[enclave\].product_id is missing"),
        ({"product_id": "0"}, r"\[enclave\].product_id must be from 1 to 65535"),
        ({"product_id": "65536"}, r"product_id must be from 1 to 65535"),
        ({"product_id": '"1"'}, r"product_id must be a whole number"),
        ({"revocation_level": ""}, r"\[enclave\].revocation_level is missing"),
        ({"revocation_level": "65535"}, r"revocation_level must be from 0 to 65534"),
        ({"revocation_level": "-1"}, r"revocation_level must be from 0 to 65534"),
        ({"entry": '"no-colon"'}, r"entry must be 'module:ClassName'"),
        ({"sources": "[]"}, r"sources must be a non-empty list"),
        ({"sources": '["missing.py"]'}, r"'missing.py' does not exist"),
        ({"sources": '["../x.py"]'}, r"outside the project"),
        ({"thread_safe": '"yes"'}, r"thread_safe must be true or false"),
        ({"colour": '"blue"'}, r"unknown setting\(s\) colour"),
        ({"persistant_map": "true"}, r"did you mean 'persistent_map' for 'persistant_map'\?"),
        ({"persistent_map": "true"}, r"persistent_map = true needs max_persistent_map_size"),
        ({"filesystem_size": "65536"}, r"filesystem_size must be 0 or at least 393216"),
    ],
)
def test_bad_settings_fail_the_build_naming_the_setting(
    tmp_path: Path, change: dict[str, str], message: str
) -> None:
    with pytest.raises(BundleError, match=message):
        build(_project(tmp_path / "p", **change), tmp_path / "out")


def test_not_a_project(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no enclave\.toml"):
        build(tmp_path)


def _rezip(data: bytes, replace: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            target.writestr(info, replace.get(info.filename, source.read(info)))
    return out.getvalue()


def test_bundle_altered_after_signing_is_refused(tmp_path: Path) -> None:
    result = build(_project(tmp_path / "p"), tmp_path / "out")
    data = result.path.read_bytes()
    source = zipfile.ZipFile(io.BytesIO(data)).read("code/behaviour_enclave.py")
    altered = _rezip(data, {"code/behaviour_enclave.py": source + b"\nEVIL = True\n"})
    result.path.write_bytes(altered)
    with pytest.raises(BundleError, match="altered after it was signed"):
        EnclaveHost.load(result.path, mode="simulation")


def test_flipped_bytes_never_change_what_runs(tmp_path: Path) -> None:
    """A flip is refused, or it hit zip bookkeeping that does not change a measured byte."""
    data = build(_project(tmp_path / "p"), tmp_path / "out").path.read_bytes()
    original = read_bundle(data)
    refused = 0
    for position in range(len(data)):
        tampered = bytearray(data)
        tampered[position] ^= 0x20
        try:
            bundle = read_bundle(bytes(tampered))
        except BundleError:
            refused += 1
            continue
        assert (bundle.files, bundle.code_hash) == (original.files, original.code_hash)
    assert refused > len(data) * 0.8


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        ({"SIGNATURE": b"short"}, "SIGNATURE entry is malformed"),
        ({"enclave.toml": b"[enclave"}, "not valid TOML"),
    ],
)
def test_broken_entries(tmp_path: Path, replace: dict[str, bytes], message: str) -> None:
    data = build(_project(tmp_path / "p"), tmp_path / "out").path.read_bytes()
    with pytest.raises(BundleError, match=message):
        read_bundle(_rezip(data, replace))


def test_unsafe_and_unexpected_entries_are_refused(tmp_path: Path) -> None:
    data = build(_project(tmp_path / "p"), tmp_path / "out").path.read_bytes()
    for name, message in (("../evil.py", "unsafe entry"), ("other/x.py", "unexpected entry")):
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
            for info in source.infolist():
                target.writestr(info, source.read(info))
            target.writestr(name, b"x")
        with pytest.raises(BundleError, match=message):
            read_bundle(out.getvalue())
    with pytest.raises(BundleError, match="not a valid enclave bundle"):
        read_bundle(b"not a zip")


def test_release_builds_need_a_real_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no Gramine: this test is about the bundle key
    project = _project(tmp_path / "p")
    generate_sgx_key(tmp_path / "sgx-key.pem")
    with pytest.raises(BundleError, match="must be signed with your own key"):
        build(project, tmp_path / "out", mode=EnclaveMode.RELEASE)
    with pytest.raises(BundleError, match="dummy key"):
        build(project, tmp_path / "out", DUMMY_SIGNING_KEY, EnclaveMode.RELEASE)
    key = generate_key(tmp_path / "key.pem")
    result = build(
        project,
        tmp_path / "out",
        load_key(tmp_path / "key.pem"),
        EnclaveMode.RELEASE,
        tmp_path / "sgx-key.pem",
    )
    assert result.signer_hash == signer_hash(key.public_key)
    assert (tmp_path / "key.pem").stat().st_mode & 0o077 == 0


def test_signing_changes_the_signer_not_the_code_hash(tmp_path: Path) -> None:
    result = build(_project(tmp_path / "p"), tmp_path / "out")
    key = generate_key(tmp_path / "key.pem")
    signed = sign(result.path, key)
    assert signed.code_hash == result.code_hash
    assert signed.signer_hash == signer_hash(key.public_key) != result.signer_hash
    with pytest.raises(BundleError, match="already exists"):
        generate_key(tmp_path / "key.pem")


def test_pure_python_dependencies_are_bundled(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", dependencies='["iniconfig"]')
    result = build(project, tmp_path / "out")
    names = zipfile.ZipFile(result.path).namelist()
    assert "deps/iniconfig/__init__.py" in names
    with pytest.raises(BundleError, match="not installed"):
        build(_project(tmp_path / "q", dependencies='["no-such-dist-xyz"]'), tmp_path / "o")


def test_cli_build_measure_keygen_sign(tmp_path: Path) -> None:
    runner = CliRunner()
    project = _project(tmp_path / "p")
    built = runner.invoke(app, ["build", str(project), "-o", str(tmp_path / "out")])
    assert built.exit_code == 0, built.output
    code_hash = str(measure_project(project))
    assert f"C:{code_hash}" in built.output
    assert "PROD:1" in built.output
    assert "signed with the public dummy key" in built.output  # says whose signer it is
    measured = runner.invoke(app, ["measure", str(project)])
    assert measured.output.strip() == code_hash
    keygen = runner.invoke(app, ["keygen", str(tmp_path / "k.pem")])
    assert keygen.exit_code == 0
    assert "signer hash" in keygen.output
    own = runner.invoke(
        app, ["build", str(project), "-o", str(tmp_path / "own"), "--key", str(tmp_path / "k.pem")]
    )
    assert own.exit_code == 0, own.output
    assert "dummy key" not in own.output
    signed = runner.invoke(
        app, ["sign", str(tmp_path / "out" / "recorder.enclave"), "--key", str(tmp_path / "k.pem")]
    )
    assert signed.exit_code == 0
    assert code_hash in signed.output
    bad = runner.invoke(app, ["build", str(tmp_path / "nowhere")])
    assert bad.exit_code == 1
    assert "no enclave.toml" in bad.output


def test_load_finds_the_single_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = build(_project(tmp_path / "p"), tmp_path / "p" / "build")
    monkeypatch.chdir(tmp_path / "p")
    with EnclaveHost.load().start() as host:
        assert host.enclave_instance_info.code_hash == result.code_hash
    shutil.copy(result.path, tmp_path / "p" / "second.enclave")
    with pytest.raises(EnclaveLoadError, match=r"several enclave bundles found.*second\.enclave"):
        EnclaveHost.load()


def test_load_without_bundles_lists_enclave_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import behaviour_enclave  # noqa: F401  (defines several Enclave subclasses)

    monkeypatch.chdir(tmp_path)
    with pytest.raises(EnclaveLoadError, match=r"several Enclave subclasses found.*Recorder"):
        EnclaveHost.load()


def test_a_module_in_both_sources_and_dependencies_is_refused_at_build(tmp_path: Path) -> None:
    project = _project(
        tmp_path / "p",
        dependencies='["iniconfig"]',
        sources='["behaviour_enclave.py", "iniconfig"]',
    )
    (project / "iniconfig").mkdir()
    (project / "iniconfig" / "__init__.py").write_text("SHADOW = True\n")
    with pytest.raises(BundleError, match=r"iniconfig/__init__\.py is both in the enclave's"):
        build(project, tmp_path / "out")
    with pytest.raises(BundleError, match="both in the enclave's sources"):
        measure_project(project)


def test_a_bundle_whose_code_and_deps_share_a_module_is_refused_at_load(tmp_path: Path) -> None:
    # Both files are measured, so the code hash is the same whichever zip entry comes last;
    # which one would run must not depend on that order: such a bundle does not load.
    from sanctorum.build.builder import collect, write_bundle
    from sanctorum.common.bundle import encode_signature, measure

    config, files = collect(_project(tmp_path / "p"))
    files["deps/behaviour_enclave.py"] = b"from os import _exit\n_exit(7)\n"
    signature = encode_signature(DUMMY_SIGNING_KEY, measure(config, files))
    path = tmp_path / "both.enclave"
    path.write_bytes(write_bundle(files, signature))
    with pytest.raises(BundleError, match=r"behaviour_enclave\.py is both in"):
        read_bundle(path.read_bytes())
    with pytest.raises(BundleError, match=r"behaviour_enclave\.py is both in"):
        EnclaveHost.load(path, mode="simulation")


def test_a_deeply_nested_enclave_toml_is_a_bundle_error(tmp_path: Path) -> None:
    from sanctorum.common.bundle import parse_config

    with pytest.raises(BundleError, match="nested too deeply"):
        parse_config("x = " + "[" * 100_000 + "]" * 100_000)


def test_the_order_of_zip_entries_changes_neither_the_code_hash_nor_what_runs(
    tmp_path: Path,
) -> None:
    """The measurement covers the sorted listing, so a host that reorders the entries of a
    signed bundle gets the same code hash, the same signature check and the same files."""
    built = build(_project(tmp_path / "p"), tmp_path / "out")
    data = built.path.read_bytes()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in reversed(source.infolist()):
            target.writestr(info, source.read(info))
    reordered = out.getvalue()
    assert reordered != data
    original, again = read_bundle(data), read_bundle(reordered)
    assert again.code_hash == original.code_hash == built.code_hash
    assert again.files == original.files


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            '"behaviour_enclave:Recordr"',
            r"defines no 'Recordr' \(did you mean 'Recorder'\?\); fix entry",
        ),
        (
            '"behavior_enclave:Recorder"',
            r"module 'behavior_enclave', which is not among the bundle's sources "
            r"\(behaviour_enclave\) \(did you mean 'behaviour_enclave'\?\)",
        ),
    ],
)
def test_an_entry_typo_fails_the_build_naming_the_module_or_class(
    tmp_path: Path, entry: str, message: str
) -> None:
    with pytest.raises(BundleError, match=message):
        build(_project(tmp_path / "p", entry=entry), tmp_path / "out")


def test_an_entry_that_is_not_an_enclave_class_fails_at_build_or_load_saying_what_it_is(
    tmp_path: Path,
) -> None:
    with pytest.raises(BundleError, match=r"names a function, not a class"):
        build(_project(tmp_path / "p", entry='"behaviour_enclave:_pattern"'), tmp_path / "o")
    with pytest.raises(BundleError, match=r"names a module, not a class"):
        build(_project(tmp_path / "q", entry='"behaviour_enclave:json"'), tmp_path / "o")
    # A name imported from elsewhere may be a class: only loading can tell.
    built = build(_project(tmp_path / "r", entry='"behaviour_enclave:EnclaveMail"'), tmp_path / "o")
    with pytest.raises(EnclaveLoadError, match=r"'behaviour_enclave:EnclaveMail' is a class, not"):
        EnclaveHost.load(built.path, mode="simulation").start()
