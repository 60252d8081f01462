"""The ``sanctorum`` command."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sanctorum.attestation import EnclaveInstanceInfo
    from sanctorum.client import EnclaveClient

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
def init(
    directory: Annotated[
        Path, typer.Argument(help="Where to create the project: a new or empty directory.")
    ],
    name: Annotated[
        str | None,
        typer.Option(
            help="The enclave's name, and its module's (NAME_enclave.py): letters, digits and "
            "_ (default: made from DIRECTORY's name)."
        ),
    ] = None,
    enclave_class: Annotated[
        str | None,
        typer.Option("--enclave-class", help="The enclave class (default: NameEnclave)."),
    ] = None,
) -> None:
    """Create an enclave project that works at once: the enclave and its enclave.toml, a
    client, a demo over the web host, and tests run in mock and simulation mode."""
    from sanctorum.build.scaffold import create_project
    from sanctorum.common.errors import SanctorumError

    try:
        project = create_project(directory, name, enclave_class)
    except (SanctorumError, OSError) as error:
        raise _fail(error) from None
    typer.echo(
        f"created the {project.name} enclave ({project.enclave_class} in "
        f"{project.module}.py) in {directory}:"
    )
    for path in project.files:
        typer.echo(f"  {path.relative_to(project.directory)}")
    typer.echo(f"next, in {directory} (see its README.md):")
    typer.echo("  python demo.py      # build it, serve it with the web host, talk to it")
    typer.echo("  python -m pytest    # its tests, in mock and simulation mode")


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
        _print_info(info)
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
        Path | None,
        typer.Option(
            help="Ed25519 key that signs the bundle (from `sanctorum keygen`): the signer in "
            "simulation mode. Required for release."
        ),
    ] = None,
    sgx_key: Annotated[
        Path | None,
        typer.Option(
            help="RSA-3072 SGX signing key (from `sanctorum keygen --sgx`): its MRSIGNER is the "
            "signer SGX clients check. Required for release; debug builds without it are "
            "signed with a throwaway key."
        ),
    ] = None,
    mode: Annotated[str, typer.Option(help="simulation, debug or release.")] = "simulation",
) -> None:
    """Bundle, measure and sign an enclave project; prints the constraints of its mode and
    writes them to NAME.MODE.code.constraint and NAME.MODE.signer.constraint."""
    from sanctorum.build import build, load_key
    from sanctorum.cli_progress import show_progress
    from sanctorum.common.errors import SanctorumError
    from sanctorum.common.mode import EnclaveMode

    try:
        enclave_mode = EnclaveMode.parse(mode)
        signing_key = load_key(key) if key else None
        with show_progress(f"building {project}") as step:
            result = build(project, output, signing_key, enclave_mode, sgx_key, progress=step)
    except (SanctorumError, ValueError, OSError) as error:
        raise _fail(error) from None
    typer.echo(f"built {result.path}")
    code, signer = result.constraints.get("code"), result.constraints.get("signer")
    if result.sgx is None:
        typer.echo(f"code hash:   {result.code_hash}")
        typer.echo(f"signer hash: {result.signer_hash}  (SHA-256 of the bundle's Ed25519 key)")
    else:
        sgx = result.sgx
        typer.echo(f"bundle code hash: {result.code_hash}  (its identity in simulation only)")
        typer.echo(f"SGX manifest:     {sgx.manifest_template}")
        typer.echo(
            f"MRENCLAVE:        {sgx.mrenclave}"
            if sgx.mrenclave
            else "MRENCLAVE:        not known yet: it appears once gramine-sgx-sign has signed "
            "the enclave (see below)"
        )
        if sgx.mrsigner:
            origin = "a throwaway key, deleted" if sgx.throwaway_key else f"the key {sgx_key}"
            typer.echo(f"MRSIGNER:         {sgx.mrsigner}  (SHA-256 of the modulus of {origin})")
        else:
            typer.echo(
                "MRSIGNER:         not known: no --sgx-key was given (name one to know your "
                "S: constraint now)"
            )
    for record in result.native:
        typer.echo(
            f"native:      {record.name} {record.version}, {len(record.files)} files recorded "
            f"with their hashes: the host must have this very wheel installed "
            f"(pip install {record.name}=={record.version})"
        )
    lines = [line for line in (code, signer) if line]
    if lines:
        typer.echo(f"constraint:  {lines[0]}")
        for line in lines[1:]:
            typer.echo(f"         or: {line}")
        paths = ", ".join(str(path) for path in result.constraint_files.values())
        typer.echo(f"written to:  {paths}")
    if result.sgx is not None:
        typer.echo(result.sgx.note)
    if key is None and result.sgx is None:
        typer.echo(
            "note: signed with the public dummy key (no --key): every project built without a "
            "key shares this signer hash, so an S: constraint, or state sealed with the signer "
            "policy, is no one's own; use --key (from `sanctorum keygen`) for anything you keep",
            err=True,
        )


@app.command()
def measure(
    project: Annotated[Path, typer.Argument(help="The enclave project (holds enclave.toml).")],
) -> None:
    """Print the code hash a bundle of PROJECT has, from its sources alone (for auditors)."""
    from sanctorum.build import measure_project
    from sanctorum.cli_progress import show_progress
    from sanctorum.common.errors import SanctorumError

    try:
        with show_progress(f"measuring {project}"):
            code_hash = measure_project(project)
    except (SanctorumError, OSError) as error:
        raise _fail(error) from None
    typer.echo(str(code_hash))


@app.command()
def sign(
    bundle: Annotated[Path, typer.Argument(help="The .enclave bundle to sign.")],
    key: Annotated[Path, typer.Option(help="Ed25519 signing key file.")],
) -> None:
    """Sign an existing bundle with your Ed25519 key (its code hash does not change).

    This is the bundle's signer in simulation mode; SGX enclaves are signed by `sanctorum
    build --mode debug|release --sgx-key`.
    """
    from sanctorum.build import load_key
    from sanctorum.build import sign as sign_bundle
    from sanctorum.cli_progress import show_progress
    from sanctorum.common.errors import SanctorumError

    try:
        signing_key = load_key(key)
        with show_progress(f"signing {bundle}"):
            result = sign_bundle(bundle, signing_key)
    except (SanctorumError, OSError) as error:
        raise _fail(error) from None
    typer.echo(f"signed {result.path}")
    typer.echo(f"code hash:   {result.code_hash}")
    typer.echo(f"signer hash: {result.signer_hash}")
    typer.echo(f"constraint:  {result.constraints['signer']}  (simulation mode)")
    if result.note:
        typer.echo(f"note: {result.note}")


@app.command()
def keygen(
    path: Annotated[Path, typer.Argument(help="Where to write the new signing key.")],
    sgx: Annotated[
        bool,
        typer.Option(
            "--sgx",
            help="Create an SGX signing key (RSA-3072, exponent 3) for `sanctorum build "
            "--sgx-key`, instead of an Ed25519 bundle key.",
        ),
    ] = False,
) -> None:
    """Create a signing key (owner-only file, never overwritten) and print its signer hash.

    Without --sgx: an Ed25519 key that signs bundles (`--key`), the signer in simulation
    mode. With --sgx: the RSA key that signs SGX enclaves (`--sgx-key`); its MRSIGNER is the
    signer SGX clients check.
    """
    from sanctorum.build import generate_key, generate_sgx_key, mrsigner
    from sanctorum.cli_progress import show_progress
    from sanctorum.common.bundle import signer_hash
    from sanctorum.common.errors import SanctorumError

    try:
        with show_progress(f"writing {path}") as step:
            if sgx:
                step("generating an RSA-3072 SGX signing key")
                hash_line = f"MRSIGNER:    {mrsigner(generate_sgx_key(path))}"
            else:
                step("generating an Ed25519 signing key")
                hash_line = f"signer hash: {signer_hash(generate_key(path).public_key)}"
    except (SanctorumError, OSError) as error:
        raise _fail(error) from None
    typer.echo(f"wrote {path} (keep it secret)")
    typer.echo(hash_line)
    if sgx:
        typer.echo(
            "Whoever holds this key can sign enclaves that pass your S: constraints and open "
            "their MRSIGNER-sealed data: keep it offline, and use it only to build releases."
        )


@app.command()
def host(
    state_dir: Annotated[
        Path, typer.Option(help="Where the durable mailbox and sealed state live.")
    ],
    bundle: Annotated[
        Path | None, typer.Argument(help="The .enclave bundle to serve (or use --mock).")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="simulation (the default; debug/release need SGX); mock with --mock."),
    ] = None,
    mock: Annotated[
        str | None,
        typer.Option(
            "--mock",
            metavar="MODULE:CLASS",
            help="Serve this Enclave subclass in mock mode instead of a bundle (development "
            "only: nothing is protected); MODULE is imported from the current directory or "
            "PYTHONPATH.",
        ),
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(help="Logs on stderr: human, or json (one object per line)."),
    ] = "human",
    port: Annotated[int, typer.Option(help="TCP port (0: any free one).")] = 8080,
    bind: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    max_body_size: Annotated[int, typer.Option(help="Largest request body in bytes.")] = 16 << 20,
    pccs_url: Annotated[
        str | None,
        typer.Option(help="PCCS for DCAP collateral (debug/release; default Intel PCS)."),
    ] = None,
    kds_url: Annotated[
        str | None,
        typer.Option(
            help="The key derivation service (KDS) that gives the enclave its keys: for state "
            "that moves between machines, and for cluster mail (docs/kds.md)."
        ),
    ] = None,
    kds_timeout: Annotated[
        float,
        typer.Option(help="Seconds to keep asking an unreachable KDS (with backoff)."),
    ] = 30.0,
    database: Annotated[
        str | None,
        typer.Option(
            help="Keep the mailbox and sealed state in this PostgreSQL database "
            "(postgresql://USER@HOST/DB) instead of the state dir's SQLite file; every host "
            "given the same database serves the same service (docs/scale-out.md)."
        ),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(
            help="With --database: how many partitions the service's state is split into, "
            "each an enclave instance serving its own clients. Fixed when the database is "
            "made (default: the database's count, or 1)."
        ),
    ] = None,
    lease_time: Annotated[
        float,
        typer.Option(
            help="With --database: seconds a host keeps its partitions without renewing its "
            "leases (a hung host's partitions move after this; a dead one's at once)."
        ),
    ] = 10.0,
) -> None:
    """Serve an enclave over HTTP: attestation, mail delivery and polling (see docs/web.md).

    Logs (on stderr) the URL it serves on, one line per request, and the enclave's starts,
    crashes and restarts.
    """
    from sanctorum.common.errors import SanctorumError

    try:
        from sanctorum.web.logs import configure_logging
        from sanctorum.web.server import run_web_host
        from sanctorum.web.service import EnclaveService, WebService, choose_enclave
    except ImportError as error:
        raise _fail(
            RuntimeError(
                "the web host needs Sanctorum's [web] extra (FastAPI, uvicorn): install the "
                "wheel with it, pip install 'path/to/sanctorum-VERSION-py3-none-any.whl[web]', "
                f"or pip install '.[web]' in a checkout ({error})"
            )
        ) from None
    try:
        configure_logging(log_format)
        from sanctorum.host.kds import KdsConfiguration

        enclave, enclave_mode = choose_enclave(bundle, mock, mode)
        kds = None if kds_url is None else KdsConfiguration(kds_url, kds_timeout)
        service: WebService
        if database is None:
            if partitions is not None:
                raise ValueError(
                    "--partitions splits a service kept in a database: give --database too"
                )
            service = EnclaveService(enclave, enclave_mode, state_dir, pccs_url=pccs_url, kds=kds)
        else:
            from sanctorum.web.cluster import ClusterService

            service = ClusterService(
                enclave,
                enclave_mode,
                state_dir,
                database=database,
                partitions=partitions,
                lease_time=lease_time,
                pccs_url=pccs_url,
                kds=kds,
            )
    except (SanctorumError, ValueError, OSError) as error:
        raise _fail(error) from None
    try:
        service.start()
        run_web_host(service, bind=bind, port=port, max_body_size=max_body_size)
    except (SanctorumError, ValueError, OSError) as error:
        raise _fail(error) from None
    finally:
        service.close()


@app.command()
def client(
    url: Annotated[str, typer.Argument(help="The web host, for example http://localhost:8080.")],
    constraint: Annotated[
        str | None, typer.Option(help="Check the attestation against this constraint.")
    ] = None,
    send: Annotated[
        str | None, typer.Option(help="Send this text as a mail and print the reply.")
    ] = None,
    topic: Annotated[str, typer.Option(help="Mail topic.")] = "default",
    identity: Annotated[
        Path | None,
        typer.Option(
            help="Keep this client in FILE: restored from it if it exists (with its saved "
            "constraint), else created (needs --constraint); saved after each call. It holds "
            "the client's private key: keep it secret."
        ),
    ] = None,
) -> None:
    """Fetch and print a web host's attestation; check a constraint; send a mail.

    With --identity FILE, later commands continue the client; `sanctorum poll` fetches its mail.
    """
    from sanctorum.attestation import EnclaveConstraint, EnclaveInstanceInfo
    from sanctorum.client import EnclaveClient
    from sanctorum.client.web import WebTransport
    from sanctorum.common.errors import SanctorumError

    try:
        with WebTransport(url) as transport, _identity_lock(identity):
            enclave_client: EnclaveClient | None = None
            created = True
            if identity is not None:
                enclave_client, created = _load_identity(identity, constraint)
            info = EnclaveInstanceInfo.deserialize(transport.get_attestation())
            _print_info(info)
            if enclave_client is None:
                if constraint is None:
                    if send is not None:
                        raise _fail(
                            ValueError("--send needs --constraint: never mail an unchecked enclave")
                        )
                    return
                enclave_client = EnclaveClient(EnclaveConstraint.parse(constraint))
            started = False
            try:
                enclave_client.start(transport)
                started = True
                if identity is not None:
                    enclave_client.state_path = identity  # saved before every delivery too
                typer.echo("constraint:       satisfied")
                if identity is not None:
                    typer.echo(
                        f"identity:         {identity} ({'new' if created else 'restored'}), "
                        f"public key {enclave_client.public_key.encoded.hex()}"
                    )
                if send is not None:
                    reply = enclave_client.send_mail(send.encode(), topic=topic)
                    typer.echo(
                        "reply:            "
                        + ("(none)" if reply is None else reply.body.decode("utf-8", "replace"))
                    )
            finally:
                # Saved after a failure too: a mail sent may have spent a sequence number.
                if identity is not None and (started or not created):
                    enclave_client.save_to(identity)
    except (SanctorumError, ValueError, OSError) as error:
        raise _fail(error) from None


@app.command()
def poll(
    url: Annotated[str, typer.Argument(help="The web host, for example http://localhost:8080.")],
    identity: Annotated[
        Path,
        typer.Option(help="The client saved by `sanctorum client --identity FILE`."),
    ],
    every: Annotated[
        bool, typer.Option("--all", help="Print every mail waiting, not just the next one.")
    ] = False,
) -> None:
    """Print the next mail waiting for a saved client (`topic: body`), or "(none)"."""
    from sanctorum.client.web import WebTransport
    from sanctorum.common.errors import SanctorumError

    try:
        with WebTransport(url) as transport, _identity_lock(identity):
            enclave_client, _ = _load_identity(identity, None)
            try:
                enclave_client.start(transport)
                enclave_client.state_path = identity
                printed = False
                while (mail := enclave_client.poll_mail()) is not None:
                    typer.echo(f"{mail.topic}: {mail.body.decode('utf-8', 'replace')}")
                    printed = True
                    if not every:
                        break
                if not printed:
                    typer.echo("(none)")
            finally:
                enclave_client.save_to(identity)
    except (SanctorumError, ValueError, OSError) as error:
        raise _fail(error) from None


def _load_identity(path: Path, constraint: str | None) -> tuple[EnclaveClient, bool]:
    """The client saved in ``path``, or a new one for ``constraint`` if there is none; and
    whether it is new."""
    from sanctorum.attestation import EnclaveConstraint
    from sanctorum.client import EnclaveClient
    from sanctorum.common.errors import ClientStateError

    wanted = EnclaveConstraint.parse(constraint) if constraint is not None else None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if wanted is None:
            raise ValueError(
                f"the identity {path} does not exist yet: give --constraint to create it "
                "(`sanctorum client URL --constraint C --identity FILE`)"
            ) from None
        return EnclaveClient(wanted), True
    try:
        saved = EnclaveClient.restore(data)
    except ClientStateError as error:
        raise ClientStateError(f"cannot use the identity {path}: {error}") from None
    if wanted is not None and wanted != saved.constraint:
        raise ValueError(
            f"--constraint {wanted.format()!r} differs from the constraint saved in the "
            f"identity {path} ({saved.constraint.format()!r}); leave --constraint out to use "
            "the saved one, or use another identity file"
        )
    return saved, False


_IDENTITY_LOCK_WAIT = 30.0


@contextmanager
def _identity_lock(path: Path | None) -> Iterator[None]:
    """Hold ``path``'s lock file (``.FILE.lock`` beside it) while a command uses the identity: two
    commands on one identity at once would send two mails with one sequence number, and the
    second save would forget the first's mail."""
    import fcntl
    import os
    import time

    if path is None:
        yield
        return
    lock_path = path.with_name(f".{path.name}.lock")
    handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + _IDENTITY_LOCK_WAIT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError(
                        f"the identity {path} is in use by another sanctorum command "
                        f"(it holds {lock_path}); try again when it has finished"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(handle)  # releases the lock


def _print_info(info: EnclaveInstanceInfo) -> None:
    typer.echo(f"mode:             {info.enclave_mode.value}")
    typer.echo(f"security:         {info.security_info.summary.name}")
    typer.echo(f"reason:           {info.security_info.reason}")
    typer.echo(f"timestamp:        {info.security_info.timestamp.isoformat()}")
    typer.echo(f"code hash:        {info.code_hash}")
    typer.echo(f"signer hash:      {info.signer_hash}")
    typer.echo(f"product id:       {info.product_id}")
    typer.echo(f"revocation level: {info.revocation_level}")


def main() -> None:
    app()


kds_app = typer.Typer(help="Run a key derivation service (docs/kds.md).", no_args_is_help=True)
app.add_typer(kds_app, name="kds")


@kds_app.command("serve")
def kds_serve(
    state_dir: Annotated[
        Path, typer.Option(help="Where the KDS's sealed master keys and its bundle live.")
    ],
    mode: Annotated[
        str,
        typer.Option(help="simulation (the default; debug/release need SGX), or mock."),
    ] = "simulation",
    log_format: Annotated[
        str,
        typer.Option(help="Logs on stderr: human, or json (one object per line)."),
    ] = "human",
    port: Annotated[int, typer.Option(help="TCP port (0: any free one).")] = 8090,
    bind: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    pccs_url: Annotated[
        str | None,
        typer.Option(help="PCCS for DCAP collateral (debug/release; default Intel PCS)."),
    ] = None,
) -> None:
    """Serve a key derivation service over HTTP: POST /public and /private (see docs/kds.md).

    The KDS is an enclave, built from the project Sanctorum ships into STATE_DIR/build; its
    master keys are made at its first start and kept sealed in STATE_DIR.
    """
    from sanctorum.common.errors import SanctorumError

    try:
        from sanctorum.build import build
        from sanctorum.common.mode import EnclaveMode
        from sanctorum.kds.enclave import KdsEnclave
        from sanctorum.kds.server import create_kds_app, kds_identity, kds_project
        from sanctorum.web.logs import configure_logging, log_event
        from sanctorum.web.server import run_web_host
        from sanctorum.web.service import EnclaveService
    except ImportError as error:
        raise _fail(
            RuntimeError(
                "the KDS needs Sanctorum's [web] extra (FastAPI, uvicorn): install the wheel "
                f"with it, or pip install '.[web]' in a checkout ({error})"
            )
        ) from None
    try:
        configure_logging(log_format)
        parsed = EnclaveMode.parse(mode)
        enclave: Path | type[KdsEnclave] = KdsEnclave
        if parsed is not EnclaveMode.MOCK:
            enclave = build(kds_project(), state_dir / "build").path
        service = EnclaveService(enclave, parsed, state_dir, pccs_url=pccs_url)
    except (SanctorumError, ValueError, OSError) as error:
        raise _fail(error) from None
    try:
        service.start()
        constraint, cluster_key = kds_identity(service)
        log_event(
            logging.INFO,
            "kds_identity",
            f'enclaves trust this KDS with [kds] constraint = "{constraint}" and cluster_key = '
            f'"{cluster_key}"; clients with fetch_cluster_key(url, spec, "{constraint}", '
            "cluster_key=...)",
            constraint=constraint,
            cluster_key=cluster_key,
        )
        run_web_host(service, bind=bind, port=port, app=create_kds_app(service))
    except (SanctorumError, ValueError, OSError) as error:
        raise _fail(error) from None
    finally:
        service.close()
