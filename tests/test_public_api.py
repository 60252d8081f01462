"""The public API and the layering of the packages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sanctorum

SRC = Path(__file__).resolve().parents[1] / "src" / "sanctorum"

# DESIGN §2: which of our packages each package may import.
ALLOWED = {
    "common": set(),
    "mail": {"common"},
    "attestation": {"common", "mail"},
    "enclave": {"attestation", "mail", "common"},
    "host": {"attestation", "mail", "common", "enclave"},
    "client": {"attestation", "mail", "common"},
    "build": {"common"},
    "web": {"host", "attestation", "mail", "common"},
    # testing: its pytest plugin builds the project under test.
    "testing": {"host", "client", "enclave", "attestation", "mail", "common", "build"},
}


def test_everything_in_all_imports() -> None:
    for name in sanctorum.__all__:
        assert getattr(sanctorum, name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        sanctorum.__getattr__("NoSuchThing")


def test_errors_share_the_root() -> None:
    for name in sanctorum.__all__:
        value = getattr(sanctorum, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, sanctorum.SanctorumError)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layering(package: str) -> None:
    for path in (SRC / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] == "sanctorum" and len(parts) > 1 and parts[1] in ALLOWED:
                    target = parts[1]
                    assert target == package or target in ALLOWED[package], (
                        f"{path.relative_to(SRC)} imports sanctorum.{target}"
                    )


def test_client_import_does_not_load_host_or_enclave() -> None:
    code = (
        "import sys; from sanctorum import EnclaveClient, EnclaveConstraint; "
        "print(sorted(m for m in sys.modules if m.startswith(('sanctorum.host', "
        "'sanctorum.enclave', 'typer', 'httpx', 'dcap_qvl'))))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


def test_py_typed_is_shipped() -> None:
    assert (SRC / "py.typed").exists()


def test_the_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (SRC.parents[1] / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(example, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip() == "b'desserts'"
