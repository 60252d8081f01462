"""Progress of long commands: shown on a terminal (standard error), nothing at all otherwise.

``TTY_COMPATIBLE=1`` is how rich is told that its output is a terminal; the runner's streams
are not one, so without it the commands must write exactly what they wrote before progress
existed.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sanctorum.build import build
from sanctorum.cli import app
from sanctorum.cli_progress import show_progress
from tests.conftest import write_project

runner = CliRunner()
TERMINAL = {"TTY_COMPATIBLE": "1", "FORCE_COLOR": None, "COLUMNS": "100"}
BUILD_STEPS = [
    "collecting the sources and dependencies",
    "measuring 2 files",
    "signing and compressing the bundle",
]
DUMMY_KEY_NOTE = "note: signed with the public dummy key (no --key)"


def test_build_reports_its_steps_to_the_callback(tmp_path: Path) -> None:
    steps: list[str] = []
    build(write_project(tmp_path, "Recorder"), tmp_path / "out", progress=steps.append)
    assert steps == BUILD_STEPS


def test_build_shows_its_steps_on_a_terminal(tmp_path: Path) -> None:
    project = write_project(tmp_path, "Recorder")
    arguments = ["build", str(project), "-o", str(tmp_path / "out")]
    shown = runner.invoke(app, arguments, env=TERMINAL)
    assert shown.exit_code == 0, shown.output
    for step in BUILD_STEPS:
        assert f" {step} " in shown.stderr
    assert "\x1b[" in shown.stderr  # drawn as a terminal display, erased when done
    plain = runner.invoke(app, arguments, env={"TTY_COMPATIBLE": None, "FORCE_COLOR": None})
    assert shown.stdout == plain.stdout  # the result itself is the same
    assert "building" not in shown.stdout


@pytest.mark.parametrize(
    "environment",
    [{"TTY_COMPATIBLE": None, "FORCE_COLOR": None}, {"TTY_COMPATIBLE": "0", "FORCE_COLOR": "1"}],
    ids=["not-a-terminal", "turned-off"],
)
def test_nothing_extra_is_written_when_not_a_terminal(
    tmp_path: Path, environment: dict[str, str | None]
) -> None:
    project = write_project(tmp_path, "Recorder")
    built = runner.invoke(
        app, ["build", str(project), "-o", str(tmp_path / "out")], env=environment
    )
    assert built.exit_code == 0, built.output
    (note,) = built.stderr.splitlines()  # only the warning there was before
    assert note.startswith(DUMMY_KEY_NOTE)
    assert built.stdout.startswith(f"built {tmp_path / 'out' / 'recorder.enclave'}\n")
    key = runner.invoke(app, ["keygen", str(tmp_path / "key.pem")], env=environment)
    assert key.exit_code == 0, key.output
    assert key.stderr == ""
    assert key.stdout.splitlines()[0] == f"wrote {tmp_path / 'key.pem'} (keep it secret)"
    measured = runner.invoke(app, ["measure", str(project)], env=environment)
    assert measured.stderr == ""
    assert len(measured.stdout.strip()) == 64
    assert "\x1b" not in built.output + key.output + measured.output


def test_sgx_keygen_shows_its_step_on_a_terminal(tmp_path: Path) -> None:
    path = tmp_path / "sgx-key.pem"
    shown = runner.invoke(app, ["keygen", "--sgx", str(path)], env=TERMINAL)
    assert shown.exit_code == 0, shown.output
    assert " generating an RSA-3072 SGX signing key " in shown.stderr
    assert shown.stdout.startswith(f"wrote {path} (keep it secret)\nMRSIGNER:    ")


def test_the_display_follows_the_console_and_ignores_late_steps() -> None:
    screen = io.StringIO()
    with show_progress("fetching", Console(file=screen, force_terminal=True, width=120)) as step:
        step("the TCB info [from a PCCS]")  # not rich markup: shown as it is
    assert " fetching " in screen.getvalue()  # the title, until the first step
    assert " the TCB info [from a PCCS] " in screen.getvalue()
    drawn = screen.getvalue()
    step("the QE identity")  # after the block: a collateral fetcher may call it much later
    assert screen.getvalue() == drawn
    pipe = io.StringIO()
    with show_progress("fetching", Console(file=pipe)) as step:
        step("the TCB info")
    assert pipe.getvalue() == ""
