"""Shared test helpers."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sanctorum.attestation import (
    EnclaveInstanceInfo,
    MockConfiguration,
    MockEvidenceProvider,
    key_binding,
)
from sanctorum.build import build
from sanctorum.common import Curve25519PrivateKey, Ed25519PrivateKey
from sanctorum.enclave.sealing import SIMULATION_SECRET_ENV
from sanctorum.host import EnclaveHost
from sanctorum.web.store import MailboxStore, SqliteMailboxStore
from tests.postgres import PostgresServer

DATA = Path(__file__).parent / "data"
SHARED_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


def vector_file(relative: str) -> Path:
    """A third-party vector file: the shared copy when present, else the committed one."""
    shared = SHARED_VECTORS / relative
    if shared.exists():
        return shared
    return DATA / Path(relative).name


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(autouse=True, scope="session")
def _simulated_platform_secret(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Simulation enclaves seal with a secret made for this test run, not the user's own."""
    path = tmp_path_factory.mktemp("platform") / "secret"
    previous = os.environ.get(SIMULATION_SECRET_ENV)
    os.environ[SIMULATION_SECRET_ENV] = str(path)
    yield
    if previous is None:
        del os.environ[SIMULATION_SECRET_ENV]
    else:
        os.environ[SIMULATION_SECRET_ENV] = previous


def mock_instance_info(
    config: MockConfiguration,
    signing: Ed25519PrivateKey | None = None,
    encryption: Curve25519PrivateKey | None = None,
) -> EnclaveInstanceInfo:
    """An EnclaveInstanceInfo with mock evidence for ``config``, bound to the given keys."""
    signing = signing or Ed25519PrivateKey.generate()
    encryption = encryption or Curve25519PrivateKey.generate()
    provider = MockEvidenceProvider.for_class("tests.Enclave", config)
    evidence = provider.produce(key_binding(signing.public_key, encryption.public_key))
    return EnclaveInstanceInfo(signing.public_key, encryption.public_key, "mock", evidence)


ENCLAVES = Path(__file__).parent / "enclaves"
MODES = ["mock", "simulation"]


def write_project(
    directory: Path, entry_class: str, *, thread_safe: bool = False, **extra: str
) -> Path:
    """An enclave project in ``directory`` holding the behaviour enclaves; ``extra`` settings
    replace the defaults (an empty value drops the setting)."""
    shutil.copy(ENCLAVES / "behaviour_enclave.py", directory / "behaviour_enclave.py")
    settings = {
        "name": f'"{entry_class.lower()}"',
        "entry": f'"behaviour_enclave:{entry_class}"',
        "product_id": "1",
        "revocation_level": "0",
        "thread_safe": str(thread_safe).lower(),
        "sources": '["behaviour_enclave.py"]',
        **extra,
    }
    lines = ["[enclave]"] + [f"{key} = {value}" for key, value in settings.items() if value]
    (directory / "enclave.toml").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture(scope="session")
def bundle_for(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Builds (once per session) a bundle whose entry is the named behaviour enclave."""
    import behaviour_enclave

    built: dict[str, Path] = {}

    def make(entry: str) -> Path:
        if entry not in built:
            cls = getattr(behaviour_enclave, entry)
            extra: dict[str, str] = {}
            if cls.persistent_map_size is not None:
                extra = {
                    "persistent_map": "true",
                    "max_persistent_map_size": str(cls.persistent_map_size),
                }
            if cls.filesystem_size or cls.memory_filesystem_size:
                extra |= {
                    "filesystem_size": str(cls.filesystem_size),
                    "memory_filesystem_size": str(cls.memory_filesystem_size),
                }
            project = write_project(
                tmp_path_factory.mktemp(entry), entry, thread_safe=cls.thread_safe, **extra
            )
            built[entry] = build(project).path
        return built[entry]

    return make


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    mode_name: str = request.param
    return mode_name


@pytest.fixture
def load(mode: str, bundle_for: Callable[[str], Path]) -> Iterator[Callable[[str], EnclaveHost]]:
    """Loads a behaviour enclave in the current mode; closes what it loaded afterwards."""
    import behaviour_enclave

    hosts: list[EnclaveHost] = []

    def make(entry: str) -> EnclaveHost:
        if mode == "mock":
            host = EnclaveHost.load(getattr(behaviour_enclave, entry))
        else:
            host = EnclaveHost.load(bundle_for(entry), mode="simulation")
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.close()


@pytest.fixture
def pccs() -> Iterator[str]:
    """The URL of a local fake PCCS serving the recorded collateral."""
    from tests.pccs import serve_pccs

    url, server = serve_pccs()
    yield url
    server.shutdown()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on loopback for the session (started when a test needs it)."""
    server = PostgresServer()
    yield server
    server.stop()


STORE_ENGINES = ["sqlite", "postgres"]


@pytest.fixture(params=STORE_ENGINES)
def store_engine(request: pytest.FixtureRequest) -> str:
    engine: str = request.param
    return engine


@pytest.fixture
def open_store(
    store_engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[], MailboxStore]]:
    """Opens the store of this test (the same one each time: to reopen it after a close), in
    each engine: a SQLite file, or a fresh PostgreSQL database."""
    opened: list[MailboxStore] = []
    if store_engine == "sqlite":
        path = tmp_path / "mailbox.sqlite3"

        def open_one() -> MailboxStore:
            opened.append(SqliteMailboxStore(path))
            return opened[-1]
    else:
        from sanctorum.web.postgres_store import PostgresMailboxStore

        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.new_database()

        def open_one() -> MailboxStore:
            opened.append(PostgresMailboxStore(url))
            return opened[-1]

    yield open_one
    for store in opened:
        with contextlib.suppress(Exception):
            store.close()
