"""Gramine manifests for debug and release builds (snapshot-tested), and release builds here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sanctorum.build import build, generate_key, generate_sgx_key
from sanctorum.build.gramine import manifest_template
from sanctorum.common.bundle import EnclaveConfig, parse_config
from sanctorum.common.errors import BundleError
from sanctorum.common.mode import EnclaveMode
from tests.conftest import DATA, write_project

SNAPSHOT = DATA / "snapshots" / "hello.manifest.template"
CONFIG = EnclaveConfig(
    name="hello",
    entry="hello_enclave:ReverseEnclave",
    product_id=1,
    revocation_level=2,
    sources=("hello_enclave.py",),
)


def _render(debug: bool) -> str:
    return manifest_template(
        CONFIG,
        Path("/srv/hello/hello.enclave"),
        debug=debug,
        python=Path("/usr/bin/python3.11"),
        paths=[Path("/usr/lib/python3.11"), Path("/usr/lib/python3/dist-packages")],
    )


def test_release_manifest_matches_the_snapshot() -> None:
    rendered = _render(debug=False)
    if os.environ.get("SANCTORUM_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(rendered)
    assert rendered == SNAPSHOT.read_text(), (
        "the manifest changed: review it, then rerun with SANCTORUM_UPDATE_SNAPSHOTS=1"
    )


def test_manifest_essentials() -> None:
    release, debug = _render(debug=False), _render(debug=True)
    assert "sgx.debug = false" in release
    assert "sgx.debug = true" in debug
    assert 'sgx.remote_attestation = "dcap"' in release
    assert "sgx.isvprodid = 1" in release
    assert "sgx.isvsvn = 2" in release
    assert '"file:/srv/hello/hello.enclave",' in release  # the bundle is measured
    assert '"file:/usr/lib/python3.11/",' in release  # so is the standard library
    assert 'type = "encrypted"' not in release  # state goes through the host, sealed
    # The manifest starts the resolved base interpreter, which alone would not see a virtual
    # environment's packages: they are named on PYTHONPATH.
    assert 'loader.env.PYTHONPATH = "/usr/lib/python3.11:/usr/lib/python3/dist-packages"' in release


def test_sizing_settings_are_rendered_into_the_manifest_and_measured() -> None:
    toml = (
        '[enclave]\nname = "hello"\nentry = "hello_enclave:ReverseEnclave"\nproduct_id = 1\n'
        'revocation_level = 2\nsources = ["hello_enclave.py"]\n'
    )
    default = parse_config(toml)
    assert default.canonical() == CONFIG.canonical()  # defaults: code hashes as before
    sized = parse_config(
        toml + 'enclave_size = "8G"\nmax_threads = 64\nstack_size = "1M"\nheap_size = 67108864\n'
    )
    assert (sized.enclave_size, sized.max_threads) == (8 << 30, 64)
    assert (sized.stack_size, sized.heap_size) == (1 << 20, 64 << 20)
    assert sized.canonical() != default.canonical()  # measured
    text = manifest_template(sized, Path("/b.enclave"), debug=False, python=Path("/p"), paths=[])
    for line in (
        'sgx.enclave_size = "8G"',
        "sgx.max_threads = 64",
        'sys.stack.size = "1M"',
        'sys.brk.max_size = "64M"',
    ):
        assert line in text


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ('enclave_size = "3G"', "power of two"),
        ('enclave_size = "128M"', "power of two from 256M"),
        ('enclave_size = "2T"', "a number with K, M or G"),
        ("enclave_size = true", "is a size"),
        ("max_threads = 2", "from 4 to 4096"),
        ('max_threads = "8"', "whole number"),
        ('stack_size = "10K"', "multiple of 4K from 64K"),
        ("stack_size = 70000", "multiple of 4K"),
        ('heap_size = "1G"\nenclave_size = "1G"', "over half of enclave_size"),
        ('enclave_size = "256M"\nmax_threads = 64\nstack_size = "4M"', "for each of max_threads"),
        ('heap_size = "1024G"', "from 64K to 512G"),
    ],
)
def test_bad_sizing_settings_are_refused_with_what_is_wrong(settings: str, problem: str) -> None:
    toml = (
        '[enclave]\nname = "hello"\nentry = "hello_enclave:ReverseEnclave"\nproduct_id = 1\n'
        f'revocation_level = 2\nsources = ["hello_enclave.py"]\n{settings}\n'
    )
    with pytest.raises(BundleError, match=problem):
        parse_config(toml)


def test_release_build_writes_the_manifest_and_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no Gramine, whatever this machine has
    project = write_project(tmp_path, "Recorder")
    key = generate_key(tmp_path / "key.pem")
    generate_sgx_key(tmp_path / "sgx-key.pem")
    result = build(project, tmp_path / "out", key, EnclaveMode.RELEASE, tmp_path / "sgx-key.pem")
    assert result.sgx is not None
    text = result.sgx.manifest_template.read_text()
    assert "sgx.debug = false" in text
    assert str(result.path.resolve()) in text
    assert result.sgx.mrenclave is None
    assert "gramine-manifest and gramine-sgx-sign not installed" in result.sgx.note
    assert "gramine-sgx-sign --manifest" in result.sgx.note
    assert f"--key {(tmp_path / 'sgx-key.pem').resolve()}" in result.sgx.note


def test_simulation_builds_have_no_manifest(tmp_path: Path) -> None:
    assert build(write_project(tmp_path, "Recorder"), tmp_path / "out").sgx is None


@pytest.mark.parametrize("mode", [EnclaveMode.DEBUG])
def test_debug_build_uses_the_dummy_key_and_a_debug_manifest(
    tmp_path: Path, mode: EnclaveMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no Gramine, whatever this machine has
    result = build(write_project(tmp_path, "Recorder"), tmp_path / "out", mode=mode)
    assert result.sgx is not None
    assert "sgx.debug = true" in result.sgx.manifest_template.read_text()
