"""The wheel and the sdist, and what a fresh client-only install of the wheel can do.

``python -m build`` builds the sdist, then the wheel from the sdist, so a file the sdist lacks
is missing from the wheel too. The wheel is installed without extras in a new virtual
environment (its dependencies come from the package index, through pip's cache), where the
README's quick start must run, the ``sanctorum`` command must work, and no web server must be
installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from sanctorum import __version__

pytestmark = pytest.mark.timeout(300)  # ~15 s with pip's cache; a cold one downloads the deps

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sanctorum"
QUICK_START = re.compile(
    r"^<!-- quick-start\b[^\n]*-->\n```python\n(?P<code>.*?)^```\n<!-- /quick-start -->$",
    re.MULTILINE | re.DOTALL,
)


def _run(command: Sequence[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with none of this environment's Python settings; fail with its output."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    }
    environment["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done


@dataclass(frozen=True)
class Install:
    """The built distributions and a virtual environment holding the wheel, without extras."""

    wheel: Path
    sdist: Path
    venv: Path
    work: Path
    """An empty directory to run things in, away from the checkout."""

    def run(self, program: str, *arguments: str | Path) -> subprocess.CompletedProcess[str]:
        return _run([self.venv / "bin" / program, *arguments], self.work)


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    root = tmp_path_factory.mktemp("packaging")
    dist, venv, work = root / "dist", root / "venv", root / "work"
    work.mkdir()
    _run([sys.executable, "-m", "build", "--outdir", dist, ROOT], root)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    _run([sys.executable, "-m", "venv", venv], root)
    installed = Install(wheel, sdist, venv, work)
    installed.run("python", "-m", "pip", "install", "--quiet", wheel)
    where = installed.run("python", "-c", "import sanctorum; print(sanctorum.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(venv), "not the wheel's copy"
    return installed


def _package_files() -> set[str]:
    """Every file of the package in the checkout (Python or data), as ``sanctorum/...``."""
    return {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_the_wheel_holds_every_file_of_the_package(install: Install) -> None:
    """Templates and other data included: a file the package-data globs miss fails here."""
    assert install.wheel.name == f"sanctorum-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(install.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"sanctorum-{__version__}.dist-info/METADATA").decode()
        scripts = wheel.read(f"sanctorum-{__version__}.dist-info/entry_points.txt").decode()
    assert "sanctorum/py.typed" in names
    assert sorted(_package_files() - names) == []
    assert "sanctorum = sanctorum.cli:main" in scripts
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert any(line.startswith("Requires-Dist: rich") for line in requires)
    for web_only in ("fastapi", "uvicorn"):
        (line,) = [line for line in requires if line.startswith(f"Requires-Dist: {web_only}")]
        assert 'extra == "web"' in line


def test_the_sdist_holds_what_the_build_needs(install: Install) -> None:
    top = f"sanctorum-{__version__}"
    with tarfile.open(install.sdist) as sdist:
        names = set(sdist.getnames())
    needed = {f"{top}/pyproject.toml", f"{top}/README.md"}
    needed |= {f"{top}/src/{name}" for name in _package_files()}
    assert sorted(needed - names) == []


def test_a_client_install_pulls_in_no_web_server(install: Install) -> None:
    for module in ("fastapi", "uvicorn"):
        tried = subprocess.run(
            [install.venv / "bin" / "python", "-c", f"import {module}"],
            cwd=install.work,
            capture_output=True,
            text=True,
            check=False,
        )
        assert tried.returncode != 0
        assert f"No module named '{module}'" in tried.stderr


def test_the_readme_quick_start_runs_from_the_wheel(install: Install) -> None:
    """The README's block between the quick-start markers, run as it stands; it prints what its
    ``print(...)  # value`` comments say."""
    found = QUICK_START.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert found is not None, "README.md lost its <!-- quick-start --> block"
    code = found["code"]
    expected = [
        line.split("  # ", 1)[1]
        for line in code.splitlines()
        if "print(" in line and "  # " in line
    ]
    assert expected, "the quick start no longer says what it prints"
    script = install.work / "quick_start.py"
    script.write_text(code, encoding="utf-8")
    ran = install.run("python", script)
    assert ran.stdout.splitlines() == expected


def test_the_command_runs_from_the_wheel(install: Install) -> None:
    helped = install.run("sanctorum", "--help")
    for command in ("build", "keygen", "client"):
        assert command in helped.stdout
    assert install.run("sanctorum", "--version").stdout.strip() == f"sanctorum {__version__}"


def test_the_docs_name_the_wheel_make_dist_builds(install: Install) -> None:
    """The install commands name the wheel file: they must follow the version."""
    for page in ("README.md", "docs/sgx.md"):
        assert f"dist/{install.wheel.name}" in (ROOT / page).read_text(encoding="utf-8"), page
