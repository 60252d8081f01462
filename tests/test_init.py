"""``sanctorum init``: a project that works at once, and the directories and names it refuses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sanctorum import ProjectInitError
from sanctorum.build.scaffold import create_project, default_class, default_name
from sanctorum.cli import app

runner = CliRunner()


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PYTEST_") and name not in {"PYTHONPATH", "COVERAGE_PROCESS_START"}
    }
    return subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=240, check=False
    )


def test_the_new_project_s_own_tests_pass_in_mock_and_simulation(tmp_path: Path) -> None:
    project = tmp_path / "My-Notes"
    made = runner.invoke(app, ["init", str(project)])
    assert made.exit_code == 0, made.output
    assert "created the my_notes enclave (MyNotesEnclave in my_notes_enclave.py)" in made.output
    assert "python -m pytest" in made.output
    files = sorted(str(path.relative_to(project)) for path in project.rglob("*"))
    assert files == [
        ".gitignore",
        "README.md",
        "client.py",
        "demo.py",
        "enclave.toml",
        "my_notes_enclave.py",
        "pyproject.toml",
        "tests",
        "tests/test_my_notes.py",
    ]
    config = tomllib.loads((project / "enclave.toml").read_text())["enclave"]
    assert config["entry"] == "my_notes_enclave:MyNotesEnclave"
    assert config["persistent_map"] is True
    # The settings are in enclave.toml only: mock mode reads them from there.
    assert "persistent_map_size" not in (project / "my_notes_enclave.py").read_text()
    readme = (project / "README.md").read_text()
    assert "`python demo.py`" in readme
    assert "`python -m pytest`" in readme

    # Its two commands: the tests (which run the demo too), as a user would run them.
    tests = _run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"], project)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    passed = set(re.findall(r"::(\w+(?:\[\w+\])?) PASSED", tests.stdout))
    for test in (
        "test_each_client_is_remembered_apart",
        "test_what_a_client_said_survives_a_restart",
        "test_a_long_message_is_refused_and_not_kept",
        "test_the_host_may_only_count_the_clients",
    ):
        assert {f"{test}[mock]", f"{test}[simulation]"} <= passed, tests.stdout
    assert "test_mock_mode_shows_the_enclave_object[mock]" in passed
    assert "test_the_demo_runs" in passed
    assert re.search(r"\b10 passed\b", tests.stdout), tests.stdout

    # The code it writes is tidy and typed.
    lint = [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache"]
    lint += ["--select", "E,F,W,I,B,UP,N,SIM,RUF,PT", "."]
    checked = _run(lint, project)
    assert checked.returncode == 0, checked.stdout
    formatted = _run(
        [sys.executable, "-m", "ruff", "format", "--isolated", "--no-cache", "--check", "."],
        project,
    )
    assert formatted.returncode == 0, formatted.stdout
    typed = _run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "mypy"), "."],
        project,
    )
    assert typed.returncode == 0, typed.stdout


def test_names_can_be_chosen(tmp_path: Path) -> None:
    project = tmp_path / "empty"
    project.mkdir()  # an empty directory is fine
    made = runner.invoke(app, ["init", str(project), "--name", "tally", "--enclave-class", "Tally"])
    assert made.exit_code == 0, made.output
    assert "class Tally(Enclave):" in (project / "tally_enclave.py").read_text()
    assert (
        "from tally_enclave import MAX_MESSAGE, Tally"
        in (project / "tests" / "test_tally.py").read_text()
    )
    config = tomllib.loads((project / "enclave.toml").read_text())["enclave"]
    assert (config["name"], config["entry"]) == ("tally", "tally_enclave:Tally")
    assert config["sources"] == ["tally_enclave.py"]


def test_a_non_empty_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    project = tmp_path / "taken"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    refused = runner.invoke(app, ["init", str(project)])
    assert refused.exit_code == 1
    assert f"error: {project} is not empty" in refused.output
    assert "never overwrites your files" in refused.output
    assert [path.name for path in project.iterdir()] == ["notes.txt"]
    assert (project / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(ProjectInitError, match="exists and is not a directory"):
        create_project(a_file)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--name", "2fast"], "--name '2fast' cannot name the enclave and its module"),
        (["--name", "my-notes"], "--name 'my-notes' cannot name the enclave"),
        (["--name", "class"], "--name 'class' cannot name the enclave"),
        (["--name", "client"], "--name 'client' is taken by the project's own files"),
        (["--enclave-class", "My Enclave"], "--enclave-class 'My Enclave' is not a Python class"),
        (["--enclave-class", "def"], "--enclave-class 'def' is not a Python class name"),
        (["--enclave-class", "Enclave"], "is a name the enclave's module already uses"),
    ],
)
def test_invalid_names_are_refused_before_anything_is_written(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    project = tmp_path / "project"
    refused = runner.invoke(app, ["init", str(project), *arguments])
    assert refused.exit_code == 1
    assert message in refused.output
    assert not project.exists()


def test_a_directory_name_that_makes_no_module_name_asks_for_name(tmp_path: Path) -> None:
    project = tmp_path / "2024 ideas"
    refused = runner.invoke(app, ["init", str(project)])
    assert refused.exit_code == 1
    assert "the name '2024_ideas' (made from the directory name '2024 ideas')" in refused.output
    assert "pass --name" in refused.output
    assert not project.exists()


def test_default_names() -> None:
    assert default_name(Path("/x/Sealed-Bids.v2")) == "sealed_bids_v2"
    assert default_class("sealed_bids") == "SealedBidsEnclave"
    assert default_class("tally") == "TallyEnclave"
