"""The ``sanctorum`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sanctorum._version import __version__

app = typer.Typer(
    name="sanctorum",
    help="Build, run and check Sanctorum enclaves.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sanctorum {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Build, run and check Sanctorum enclaves."""


@app.command()
def attestation(
    path: Annotated[Path, typer.Argument(help="A serialized EnclaveInstanceInfo file.")],
    constraint: Annotated[
        str | None, typer.Option(help="Check the attestation against this constraint.")
    ] = None,
) -> None:
    """Verify and print a serialized EnclaveInstanceInfo, optionally checking a constraint."""
    from sanctorum.attestation import EnclaveConstraint, EnclaveInstanceInfo
    from sanctorum.common.errors import SanctorumError

    try:
        info = EnclaveInstanceInfo.deserialize(path.read_bytes())
        typer.echo(f"mode:             {info.enclave_mode.value}")
        typer.echo(f"security:         {info.security_info.summary.name}")
        typer.echo(f"reason:           {info.security_info.reason}")
        typer.echo(f"timestamp:        {info.security_info.timestamp.isoformat()}")
        typer.echo(f"code hash:        {info.code_hash}")
        typer.echo(f"signer hash:      {info.signer_hash}")
        typer.echo(f"product id:       {info.product_id}")
        typer.echo(f"revocation level: {info.revocation_level}")
        if constraint is not None:
            EnclaveConstraint.parse(constraint).check(info)
            typer.echo("constraint:       satisfied")
    except (SanctorumError, OSError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def main() -> None:
    app()
