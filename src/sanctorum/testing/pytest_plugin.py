"""The Sanctorum pytest plugin: one test file tests an enclave project in every mode.

Installing sanctorum registers it with pytest (entry point ``pytest11``, name ``sanctorum``;
``-p no:sanctorum`` turns it off). A test asks for what it needs by name::

    def test_replies(enclave_client, enclave_host):
        assert enclave_client.send_mail(b"hi") is not None

and runs once per selected mode, as ``test_replies[mock]`` and ``test_replies[simulation]``.

**Options** (each also an ini option, in ``pyproject.toml``'s ``[tool.pytest.ini_options]``):

``--enclave-mode=MODES`` (ini ``enclave_mode``)
    The modes to test in, comma-separated: ``mock``, ``simulation``, ``debug``, ``release``;
    by default ``mock,simulation``, the two every machine runs. A mode this machine cannot run
    is refused at start-up with :meth:`EnclaveHost.supported_modes`'s reason.
``--enclave-project=DIR`` (ini ``enclave_project``, relative to the ini file)
    The enclave project under test; by default the nearest directory holding an
    ``enclave.toml``, from the test file's directory upwards (then from the rootdir upwards).
``--enclave-key=PATH``, ``--enclave-sgx-key=PATH``
    The keys a release build is signed with (``sanctorum keygen``, ``sanctorum keygen --sgx``).
``--enclave-kds-url=URL`` (ini ``enclave_kds_url``)
    The key derivation service for a project whose ``enclave.toml`` has a ``[kds]`` table. By
    default the plugin runs one for the session (``sanctorum kds serve``, simulation mode, fresh
    master keys); name yours when ``[kds]`` pins its ``cluster_key`` or names another KDS.

**Fixtures**: ``enclave_mode`` (the mode of this run of the test), ``enclave_project`` (its
directory), ``enclave_bundle`` (the project built for the mode, once per session: a
:class:`~sanctorum.build.BuildResult`), ``enclave_class`` (the entry class, imported from the
project), ``enclave_host`` (a started :class:`EnclaveHost`, closed after the test),
``enclave_constraint`` (what a client checks: the build's code hash, or in mock mode the class's),
``enclave_client`` (a started :class:`EnclaveClient` talking to ``enclave_host``),
``enclave_client_factory`` (makes more of them), ``mock_enclave`` (the enclave object) and
``enclave_kds_url`` (the KDS the host is given, for a project with a ``[kds]`` table).

Some fixtures exist in some modes only, and a test that asks for one runs in those modes only:
``mock_enclave`` in mock mode, ``enclave_bundle`` in the modes that run bundles. The marker
``@pytest.mark.enclave_modes("simulation", ...)`` narrows a test to some modes in the same way.
A test whose modes were all left out by ``--enclave-mode`` is *deselected* (pytest counts it),
never skipped; a test whose own requirements exclude every mode is a collection error.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sanctorum.attestation import EnclaveConstraint
    from sanctorum.build import BuildResult
    from sanctorum.client import EnclaveClient
    from sanctorum.enclave import Enclave
    from sanctorum.host import EnclaveHost

MODES = ("mock", "simulation", "debug", "release")
"""Every mode, in the order tests run in them."""
BUNDLE_MODES = ("simulation", "debug", "release")
DEFAULT_MODES = "mock,simulation"
CONFIG_FILE = "enclave.toml"
_MODE_FIXTURE = "enclave_mode"
_ONLY_IN: dict[str, tuple[str, ...]] = {
    "mock_enclave": ("mock",),
    "enclave_bundle": BUNDLE_MODES,
}
"""Fixtures that exist in some modes only: a test asking for one runs in those."""
_MARKER = "enclave_modes"


@dataclass
class _State:
    """What the plugin keeps for a session."""

    modes: tuple[str, ...]
    builds: dict[tuple[Path, str], BuildResult | BaseException] = field(default_factory=dict)


_STATE = pytest.StashKey[_State]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``--enclave-*`` options and their ini twins."""
    group = parser.getgroup("sanctorum", "Sanctorum enclaves (the sanctorum plugin)")
    group.addoption(
        "--enclave-mode",
        dest="sanctorum_enclave_mode",
        metavar="MODES",
        help="Enclave modes to run enclave tests in, comma-separated: mock, simulation, debug, "
        f"release (default: the ini option enclave_mode, else {DEFAULT_MODES}).",
    )
    group.addoption(
        "--enclave-project",
        dest="sanctorum_enclave_project",
        metavar="DIR",
        help="The enclave project under test (default: the ini option enclave_project, else "
        "the nearest directory with an enclave.toml above the test file).",
    )
    group.addoption(
        "--enclave-key",
        dest="sanctorum_enclave_key",
        metavar="PATH",
        help="Ed25519 key that signs the bundle (`sanctorum keygen`); release mode needs it.",
    )
    group.addoption(
        "--enclave-sgx-key",
        dest="sanctorum_enclave_sgx_key",
        metavar="PATH",
        help="SGX signing key (`sanctorum keygen --sgx`) for debug and release builds; "
        "release mode needs it.",
    )
    group.addoption(
        "--enclave-kds-url",
        dest="sanctorum_enclave_kds_url",
        metavar="URL",
        help="The KDS for a project with a [kds] table (default: the ini option "
        "enclave_kds_url, else one the plugin runs for the session).",
    )
    parser.addini(
        "enclave_kds_url",
        "The KDS for a project with a [kds] table (default: one the plugin runs for the session).",
        default="",
    )
    parser.addini(
        "enclave_mode",
        f"Enclave modes to run enclave tests in, comma-separated (default {DEFAULT_MODES}).",
        default=DEFAULT_MODES,
    )
    parser.addini(
        "enclave_project",
        "The enclave project under test, relative to the ini file (default: the nearest "
        "directory with an enclave.toml above the test file).",
        default="",
    )


def _selected_modes(config: pytest.Config) -> tuple[str, ...]:
    """The modes of ``--enclave-mode`` (or the ini option), checked."""
    raw = config.getoption("sanctorum_enclave_mode")
    where = "--enclave-mode"
    if raw is None:
        raw, where = str(config.getini("enclave_mode")), "the ini option enclave_mode"
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    if not names:
        raise pytest.UsageError(f"{where} names no mode: give one or more of {', '.join(MODES)}")
    for name in names:
        if name not in MODES:
            raise pytest.UsageError(
                f"{where}: unknown enclave mode {name!r}; use one or more of {', '.join(MODES)}, "
                "comma-separated"
            )
    wanted = tuple(mode for mode in MODES if mode in names)
    sgx = [mode for mode in wanted if mode not in ("mock", "simulation")]
    if sgx:
        from sanctorum.host import EnclaveHost

        for support in EnclaveHost.supported_modes():
            if support.mode.value in sgx and not support.supported:
                raise pytest.UsageError(
                    f"{where}: {support.mode.value} mode cannot run on this machine: "
                    f"{support.reason}. Test in mock and simulation mode here, and in "
                    f"{support.mode.value} mode on a machine with SGX (docs/sgx.md)"
                )
    if "release" in wanted and not (
        config.getoption("sanctorum_enclave_key") and config.getoption("sanctorum_enclave_sgx_key")
    ):
        raise pytest.UsageError(
            "release mode builds a bundle signed with your own keys: pass --enclave-key PATH "
            "(`sanctorum keygen`) and --enclave-sgx-key PATH (`sanctorum keygen --sgx`)"
        )
    return wanted


def pytest_configure(config: pytest.Config) -> None:
    """Check the selected modes and register the ``enclave_modes`` marker."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(*modes): run this test only in these enclave modes (of those "
        "--enclave-mode selects); the sanctorum plugin deselects it when none of them is",
    )
    config.stash[_STATE] = _State(_selected_modes(config))


class _MarkerError(ValueError):
    """An ``enclave_modes`` marker names no mode or an unknown one."""


def _marked_modes(node: pytest.Function | pytest.Item, where: str) -> tuple[str, ...] | None:
    """The modes the test's ``enclave_modes`` markers allow (all of them); None: no marker."""
    modes: tuple[str, ...] | None = None
    for marker in node.iter_markers(_MARKER):
        names = tuple(str(arg).lower() for arg in marker.args)
        unknown = [name for name in names if name not in MODES]
        if not names or unknown:
            raise _MarkerError(
                f"{where}: @pytest.mark.{_MARKER} takes one or more of {', '.join(MODES)}, "
                f"not {marker.args!r}"
            )
        modes = names if modes is None else tuple(m for m in modes if m in names)
    return modes


def _modes_of(fixturenames: list[str], marked: tuple[str, ...] | None, where: str) -> list[str]:
    """The modes a test can run in, given the fixtures it asks for and its marker."""
    modes = list(marked or MODES)
    reasons = [f"@pytest.mark.{_MARKER}{marked!r}"] if marked is not None else []
    for name, only in _ONLY_IN.items():
        if name in fixturenames:
            modes = [mode for mode in modes if mode in only]
            reasons.append(f"{name} (only in {', '.join(only)} mode)")
    if not modes:
        raise pytest.Collector.CollectError(
            f"{where} can run in no enclave mode: it asks for {' and '.join(reasons)}, which "
            "have no mode in common; split it into one test per mode"
        )
    return modes


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that uses an enclave fixture once per selected mode it can run in."""
    if _MODE_FIXTURE not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", "")
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if _MODE_FIXTURE in names:
            return  # the test chose its modes itself
    where = metafunc.definition.nodeid
    try:
        marked = _marked_modes(metafunc.definition, where)
    except _MarkerError as error:
        raise pytest.Collector.CollectError(str(error)) from None
    possible = _modes_of(metafunc.fixturenames, marked, where)
    selected = metafunc.config.stash[_STATE].modes
    # With no selected mode left, the test gets one it will be deselected in (not skipped).
    modes = [mode for mode in possible if mode in selected] or possible[:1]
    metafunc.parametrize(_MODE_FIXTURE, modes, indirect=True, ids=modes)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the runs in modes ``--enclave-mode`` did not select."""
    selected = config.stash[_STATE].modes
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        mode = callspec.params.get(_MODE_FIXTURE) if callspec is not None else None
        if mode is not None:
            chosen = mode in selected
        else:
            try:
                marked = _marked_modes(item, item.nodeid)
            except _MarkerError as error:
                raise pytest.UsageError(str(error)) from None
            chosen = marked is None or any(m in selected for m in marked)
        (keep if chosen else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


# -- finding the project ------------------------------------------------------------------------


def _nearest_project(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        if (directory / CONFIG_FILE).is_file():
            return directory
    return None


def find_project(config: pytest.Config, test_path: Path) -> Path:
    """The enclave project a test at ``test_path`` tests: ``--enclave-project``, else the ini
    option ``enclave_project``, else the nearest ``enclave.toml`` above the test file, else above
    the rootdir. Fails the test with what to do if there is none."""
    given = config.getoption("sanctorum_enclave_project")
    project: Path
    if given:
        project, origin = config.invocation_params.dir / str(given), "--enclave-project"
    elif config.getini("enclave_project"):
        base = config.inipath.parent if config.inipath else config.rootpath
        project, origin = base / str(config.getini("enclave_project")), "enclave_project"
    else:
        start = test_path if test_path.is_dir() else test_path.parent
        found = _nearest_project(start) or _nearest_project(config.rootpath)
        if found is None:
            pytest.fail(
                f"no enclave project for {test_path}: there is no {CONFIG_FILE} in "
                f"{start} or above, nor above the rootdir {config.rootpath}. Run the tests of "
                "an enclave project (`sanctorum init DIR` makes one), or name the project with "
                "--enclave-project DIR or the ini option enclave_project",
                pytrace=False,
            )
        return found
    project = project.resolve()
    if not (project / CONFIG_FILE).is_file():
        pytest.fail(
            f"{origin} names {project}, which has no {CONFIG_FILE}: name the directory of an "
            "enclave project",
            pytrace=False,
        )
    return project


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def enclave_mode(request: pytest.FixtureRequest) -> str:
    """The enclave mode of this run of the test: the test runs once per selected mode."""
    mode: str | None = getattr(request, "param", None)
    if mode is None:  # asked for by name at run time: the test was not parametrized
        mode = request.config.stash[_STATE].modes[0]
    return mode


@pytest.fixture
def enclave_project(request: pytest.FixtureRequest) -> Path:
    """The directory of the enclave project under test (it holds ``enclave.toml``)."""
    return find_project(request.config, request.path)


@pytest.fixture(scope="session")
def _sanctorum_platform_secret(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Simulation enclaves seal with a platform secret made for this test run, not with this
    machine's own, unless the environment already names one."""
    from sanctorum.enclave.sealing import SIMULATION_SECRET_ENV

    if os.environ.get(SIMULATION_SECRET_ENV):
        yield
        return
    os.environ[SIMULATION_SECRET_ENV] = str(tmp_path_factory.mktemp("platform") / "secret")
    try:
        yield
    finally:
        os.environ.pop(SIMULATION_SECRET_ENV, None)


@pytest.fixture
def enclave_bundle(
    request: pytest.FixtureRequest,
    enclave_mode: str,
    enclave_project: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> BuildResult:
    """The project built for this test's mode, once per session (in a temporary directory):
    its ``path``, ``code_hash``, ``signer_hash`` and ``constraints``. A test that asks for it
    runs in the modes that run bundles (simulation, debug, release) only."""
    if enclave_mode not in BUNDLE_MODES:
        pytest.fail(
            f"enclave_bundle: {enclave_mode} mode runs no bundle; only "
            f"{', '.join(BUNDLE_MODES)} do",
            pytrace=False,
        )
    state = request.config.stash[_STATE]
    key = (enclave_project, enclave_mode)
    if key not in state.builds:
        from sanctorum.build import build, load_key
        from sanctorum.common.mode import EnclaveMode

        signing_key = request.config.getoption("sanctorum_enclave_key")
        sgx_key = request.config.getoption("sanctorum_enclave_sgx_key")
        try:
            state.builds[key] = build(
                enclave_project,
                tmp_path_factory.mktemp(f"{enclave_project.name}-{enclave_mode}-build"),
                load_key(Path(signing_key)) if signing_key else None,
                EnclaveMode.parse(enclave_mode),
                Path(sgx_key) if sgx_key and enclave_mode != "simulation" else None,
            )
        except Exception as error:  # kept, so that every test shows it without rebuilding
            state.builds[key] = error
    result = state.builds[key]
    if isinstance(result, BaseException):
        raise result
    return result


@pytest.fixture
def enclave_class(enclave_project: Path) -> type[Enclave]:
    """The project's entry class (``entry`` in ``enclave.toml``), imported from the project
    directory, which is put on ``sys.path`` for it."""
    from sanctorum.common.bundle import load_config
    from sanctorum.enclave import Enclave

    config = load_config(enclave_project)
    if str(enclave_project) not in sys.path:
        sys.path.insert(0, str(enclave_project))
    try:
        module = importlib.import_module(config.entry_module)
    except ImportError as error:
        pytest.fail(
            f"cannot import {config.entry_module!r}, the module of entry {config.entry!r} in "
            f"{enclave_project / CONFIG_FILE}: {error}",
            pytrace=False,
        )
    origin = Path(getattr(module, "__file__", None) or ".").resolve()
    if not origin.is_relative_to(enclave_project.resolve()):
        pytest.fail(
            f"the module {config.entry_module!r} was imported from {origin}, not from the project "
            f"{enclave_project}: another module of that name comes first on sys.path; rename "
            "the enclave's module (and its entry in enclave.toml)",
            pytrace=False,
        )
    enclave_type = getattr(module, config.entry_class, None)
    if not (isinstance(enclave_type, type) and issubclass(enclave_type, Enclave)):
        pytest.fail(
            f"entry {config.entry!r} of {enclave_project / CONFIG_FILE} does not name an Enclave "
            f"subclass in {origin}",
            pytrace=False,
        )
    return enclave_type


@pytest.fixture
def enclave_host(
    request: pytest.FixtureRequest, enclave_mode: str, enclave_project: Path, tmp_path: Path
) -> Iterator[EnclaveHost]:
    """A started :class:`EnclaveHost` running the project in this test's mode: the entry class
    in mock mode (its settings from ``enclave.toml``), the built bundle in the others. Mail
    it posts queues in ``enclave_host.mailbox``; it is closed after the test."""
    from sanctorum.common.bundle import load_config
    from sanctorum.host import EnclaveHost

    if enclave_mode == "mock":
        host = EnclaveHost.load(request.getfixturevalue("enclave_class"), mode="mock")
    else:
        request.getfixturevalue("_sanctorum_platform_secret")
        built: BuildResult = request.getfixturevalue("enclave_bundle")
        host = EnclaveHost.load(built.path, mode=enclave_mode)
    with host:
        config = load_config(enclave_project)
        kds = None
        if config.kds is not None:
            from sanctorum.host import KdsConfiguration

            kds = KdsConfiguration(request.getfixturevalue("enclave_kds_url"))
        host.start(
            filesystem_file=tmp_path / "enclave-filesystem.bin" if config.filesystem_size else None,
            kds=kds,
        )
        yield host


@pytest.fixture(scope="session")
def enclave_kds_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The KDS given to a project with a ``[kds]`` table: ``--enclave-kds-url``, else a
    ``sanctorum kds serve`` (simulation mode) the plugin starts for the session."""
    configured = request.config.getoption("sanctorum_enclave_kds_url") or request.config.getini(
        "enclave_kds_url"
    )
    if configured:
        yield str(configured)
        return
    from sanctorum.testing.servers import KdsProcess

    with KdsProcess(tmp_path_factory.mktemp("sanctorum-kds") / "kds") as kds:
        yield kds.url


@pytest.fixture
def enclave_constraint(
    request: pytest.FixtureRequest, enclave_mode: str, enclave_host: EnclaveHost
) -> EnclaveConstraint:
    """What the test's clients check the enclave against: in mock mode its code hash (of the
    class's name), in the other modes the code constraint the build printed (the client
    trusts the build, not the host); ``SEC:INSECURE`` except in release mode."""
    from sanctorum.attestation import EnclaveConstraint

    if enclave_mode == "mock":
        code_hash = enclave_host.enclave_instance_info.code_hash
        return EnclaveConstraint.parse(f"C:{code_hash} SEC:INSECURE")
    built: BuildResult = request.getfixturevalue("enclave_bundle")
    constraint = built.constraints.get("code")
    if constraint is None:
        pytest.fail(
            f"the {enclave_mode} build of {built.path} has no code constraint (its MRENCLAVE is "
            f"not known: {built.note or 'gramine-sgx-sign did not sign it'})",
            pytrace=False,
        )
    return EnclaveConstraint.parse(constraint)


@pytest.fixture
def enclave_client_factory(
    enclave_host: EnclaveHost, enclave_constraint: EnclaveConstraint
) -> Callable[[], EnclaveClient]:
    """Makes clients of ``enclave_host``: each a new :class:`EnclaveClient` (a key of its own)
    with ``enclave_constraint``, started on an :class:`InProcessTransport` (so it has checked
    the attestation). After ``enclave_host.restart()``, start a client again to re-attest."""
    from sanctorum.client import EnclaveClient, InProcessTransport

    def make() -> EnclaveClient:
        client = EnclaveClient(enclave_constraint)
        client.start(InProcessTransport(enclave_host))
        return client

    return make


@pytest.fixture
def enclave_client(enclave_client_factory: Callable[[], EnclaveClient]) -> EnclaveClient:
    """A started client of ``enclave_host`` (see ``enclave_client_factory``)."""
    return enclave_client_factory()


@pytest.fixture
def mock_enclave(enclave_host: EnclaveHost) -> Enclave:
    """The enclave object itself, to look inside in a test; a test that asks for it runs in
    mock mode only (elsewhere the enclave lives in another process). After
    ``enclave_host.restart()`` the host has a new object: ``enclave_host.mock_enclave``."""
    return enclave_host.mock_enclave
