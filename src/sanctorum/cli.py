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
        raise _fail(error) from None


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(1)


@app.command("build")
def build_command(
    project: Annotated[Path, typer.Argument(help="The enclave project (holds enclave.toml).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Directory for NAME.enclave.")
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="Ed25519 signing key file (from `sanctorum keygen`).")
    ] = None,
    mode: Annotated[str, typer.Option(help="simulation, debug or release.")] = "simulation",
) -> None:
    """Bundle, measure and sign an enclave project; prints its code and signer hashes."""
    from sanctorum.build import build, load_key
    from sanctorum.common.errors import SanctorumError
    from sanctorum.common.mode import EnclaveMode

    try:
        result = build(
            project,
            output,
            load_key(key) if key else None,
            EnclaveMode.parse(mode),
        )
    except (SanctorumError, ValueError, OSError) as error:
        raise _fail(error) from None
    typer.echo(f"built {result.path}")
    typer.echo(f"code hash:   {result.code_hash}")
    typer.echo(f"signer hash: {result.signer_hash}")
    typer.echo(f"constraint:  C:{result.code_hash}")
    typer.echo(f"         or: S:{result.signer_hash} PROD:{result.product_id}")


@app.command()
def measure(
    project: Annotated[Path, typer.Argument(help="The enclave project (holds enclave.toml).")],
) -> None:
    """Print the code hash a bundle of PROJECT has, from its sources alone (for auditors)."""
    from sanctorum.build import measure_project
    from sanctorum.common.errors import SanctorumError

    try:
        typer.echo(str(measure_project(project)))
    except (SanctorumError, OSError) as error:
        raise _fail(error) from None


@app.command()
def sign(
    bundle: Annotated[Path, typer.Argument(help="The .enclave bundle to sign.")],
    key: Annotated[Path, typer.Option(help="Ed25519 signing key file.")],
) -> None:
    """Sign an existing bundle with your key (its code hash does not change)."""
    from sanctorum.build import load_key
    from sanctorum.build import sign as sign_bundle
    from sanctorum.common.errors import SanctorumError

    try:
        result = sign_bundle(bundle, load_key(key))
    except (SanctorumError, OSError) as error:
        raise _fail(error) from None
    typer.echo(f"signed {result.path}")
    typer.echo(f"code hash:   {result.code_hash}")
    typer.echo(f"signer hash: {result.signer_hash}")


@app.command()
def keygen(
    path: Annotated[Path, typer.Argument(help="Where to write the new signing key.")],
) -> None:
    """Create an Ed25519 signing key for release builds; prints its signer hash."""
    from sanctorum.build import generate_key
    from sanctorum.common.bundle import signer_hash
    from sanctorum.common.errors import SanctorumError

    try:
        key = generate_key(path)
    except (SanctorumError, OSError) as error:
        raise _fail(error) from None
    typer.echo(f"wrote {path} (keep it secret)")
    typer.echo(f"signer hash: {signer_hash(key.public_key)}")


def main() -> None:
    app()
