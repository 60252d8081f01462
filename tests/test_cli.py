"""The sanctorum command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from sanctorum import EnclaveHost, SHA256Hash, __version__
from sanctorum.cli import app
from tests.test_client import Echo

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"sanctorum {__version__}"


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "attestation" in result.output


def test_console_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sanctorum", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_attestation_command(tmp_path: Path) -> None:
    with EnclaveHost.load(Echo).start() as host:
        info = host.enclave_instance_info
    path = tmp_path / "info.bin"
    path.write_bytes(info.serialize())
    ok = runner.invoke(
        app, ["attestation", str(path), "--constraint", f"C:{info.code_hash} SEC:INSECURE"]
    )
    assert ok.exit_code == 0, ok.output
    assert str(info.code_hash) in ok.output
    assert "satisfied" in ok.output
    bad = runner.invoke(app, ["attestation", str(path), "--constraint", f"C:{SHA256Hash.of(b'x')}"])
    assert bad.exit_code == 1
    assert "match none of" in bad.output
    path.write_bytes(b"junk")
    junk = runner.invoke(app, ["attestation", str(path)])
    assert junk.exit_code == 1
    assert "malformed EnclaveInstanceInfo" in junk.output
