"""Native dependencies at run time: an enclave imports numpy from the installed files only if
they are the ones recorded in its bundle (and so measured by its code hash).

The host is the adversary: each test runs it in a virtual environment of its own, holding a
copy of numpy the test changes before the start or between the start and an import."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sanctorum import DependencyMismatchError, EnclaveHost
from sanctorum.build import build
from sanctorum.common.bundle import read_bundle
from tests.conftest import ENCLAVES
from tests.native_environment import flip_byte, host_environment, replace_file, write_distribution

NUMPY = importlib.metadata.distribution("numpy")
VERSION = NUMPY.version
# Imported by numpy lazily, so after the enclave started: pure Python, and an extension.
LAZY_SOURCE = "numpy/ma/core.py"
LAZY_EXTENSION = next(
    f.as_posix() for f in NUMPY.files or () if f.as_posix().startswith("numpy/random/_pcg64.")
)

HOST_SCRIPT = """
import json, sys
from sanctorum import EnclaveHost, SanctorumError

def report(**fields):
    print(json.dumps(fields), flush=True)

host = EnclaveHost.load(sys.argv[1], mode="simulation")
try:
    host.start()
except SanctorumError as error:
    report(error=type(error).__name__, message=str(error))
    sys.exit(0)
report(started="yes")
for line in sys.stdin:
    try:
        report(answer=host.call_enclave(line.rstrip("\\n").encode()).decode())
    except SanctorumError as error:
        report(error=type(error).__name__, message=str(error))
host.close()
"""


def write_numpy_project(directory: Path, dependencies: str = '["numpy"]') -> Path:
    shutil.copy(ENCLAVES / "native_enclave.py", directory / "native_enclave.py")
    (directory / "enclave.toml").write_text(
        "[enclave]\n"
        'name = "numpy-enclave"\n'
        'entry = "native_enclave:NumpyEnclave"\n'
        "product_id = 1\n"
        "revocation_level = 0\n"
        'sources = ["native_enclave.py"]\n'
        f"dependencies = {dependencies}\n"
    )
    return directory


@pytest.fixture(scope="module")
def numpy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(write_numpy_project(tmp_path_factory.mktemp("numpy-project"))).path


class HostProcess:
    """A host process in its own environment; each line sent is a call to the enclave."""

    def __init__(self, python: Path, bundle: Path) -> None:
        self.process = subprocess.Popen(
            [str(python), "-c", HOST_SCRIPT, str(bundle)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd="/",
        )

    def read(self) -> dict[str, str]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the host process ended (exit status {self.process.wait()})"
        answer: dict[str, str] = json.loads(line)
        return answer

    def call(self, command: str) -> dict[str, str]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def host_site(tmp_path: Path) -> tuple[Path, Path]:
    """A host's environment with its own copy of numpy: its python and its site-packages."""
    return host_environment(tmp_path, "numpy")


@pytest.fixture
def start_host(
    numpy_bundle: Path, host_site: tuple[Path, Path]
) -> Iterator[Callable[[], HostProcess]]:
    processes: list[HostProcess] = []

    def start() -> HostProcess:
        process = HostProcess(host_site[0], numpy_bundle)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.close()


# -- untouched: the enclave runs numpy ------------------------------------------------------


def test_simulation_enclave_computes_with_numpy(numpy_bundle: Path) -> None:
    host = EnclaveHost.load(numpy_bundle, mode="simulation")
    host.start()
    try:
        assert host.call_enclave(b"mean 3 4") == b"3.500000 5.000000"
        # numpy.random's extension modules, imported only now, come from the recorded files.
        located = host.call_enclave(b"import numpy.random._pcg64")
        assert located == str(Path(str(NUMPY.locate_file(LAZY_EXTENSION)))).encode()
        assert (
            host.enclave_instance_info.code_hash == read_bundle(numpy_bundle.read_bytes()).code_hash
        )
    finally:
        host.close()


def test_mock_enclave_computes_with_numpy() -> None:
    from native_enclave import NumpyEnclave

    host = EnclaveHost.load(NumpyEnclave)
    host.start()
    try:
        assert host.call_enclave(b"mean 3 4") == b"3.500000 5.000000"
    finally:
        host.close()


def test_a_hosts_own_unchanged_copy_runs(
    start_host: Callable[[], HostProcess], host_site: tuple[Path, Path]
) -> None:
    """The environment the attacks below change works when left alone, and is the one used."""
    host = start_host()
    assert host.read() == {"started": "yes"}
    assert host.call("mean 1 2 3") == {"answer": "2.000000 3.741657"}
    assert host.call("import numpy.ma.core") == {"answer": str(host_site[1] / LAZY_SOURCE)}


# -- changed before the start: the load is refused ------------------------------------------


def _refused(start_host: Callable[[], HostProcess]) -> str:
    answer = start_host().read()
    assert answer["error"] == DependencyMismatchError.__name__, answer
    return answer["message"]


def test_a_changed_python_file_is_refused(
    start_host: Callable[[], HostProcess], host_site: tuple[Path, Path]
) -> None:
    path = host_site[1] / "numpy/_globals.py"
    replace_file(path, path.read_bytes() + b"\nimport os; os.system('steal')\n")
    message = _refused(start_host)
    assert str(path) in message
    assert f"numpy=={VERSION}" in message


def test_a_changed_shared_library_of_the_same_size_is_refused(
    start_host: Callable[[], HostProcess], host_site: tuple[Path, Path]
) -> None:
    """numpy.libs/ holds what the dynamic linker loads, never imported by Python itself."""
    library = next((host_site[1] / "numpy.libs").glob("libscipy_openblas*"))
    flip_byte(library)
    message = _refused(start_host)
    assert str(library) in message
    assert "SHA-256" in message


def test_a_changed_extension_module_is_refused(
    start_host: Callable[[], HostProcess], host_site: tuple[Path, Path]
) -> None:
    flip_byte(host_site[1] / LAZY_EXTENSION)
    assert LAZY_EXTENSION in _refused(start_host)


def test_a_missing_file_is_refused(
    start_host: Callable[[], HostProcess], host_site: tuple[Path, Path]
) -> None:
    (host_site[1] / LAZY_SOURCE).unlink()
    message = _refused(start_host)
    assert LAZY_SOURCE in message
    assert "is missing" in message


def test_a_fifo_in_place_of_a_file_is_refused_not_waited_on(
    start_host: Callable[[], HostProcess], host_site: tuple[Path, Path]
) -> None:
    path = host_site[1] / LAZY_SOURCE
    path.unlink()
    os.mkfifo(path)
    assert "regular file" in _refused(start_host)


def test_another_version_is_named(
    start_host: Callable[[], HostProcess], host_site: tuple[Path, Path]
) -> None:
    metadata = host_site[1] / f"numpy-{VERSION}.dist-info" / "METADATA"
    text = metadata.read_text().replace(f"Version: {VERSION}", "Version: 1.0.0", 1)
    replace_file(metadata, text.encode())
    message = _refused(start_host)
    assert f"built with numpy {VERSION}" in message
    assert "numpy 1.0.0" in message


def test_a_distribution_that_is_not_installed_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built where a native distribution was installed; run where it is not."""
    site = write_distribution(
        tmp_path / "build-site",
        "buildonly",
        "0.1",
        {"buildonly/__init__.py": b"", "buildonly/_ext.so": b"\x7fELF"},
    )
    monkeypatch.syspath_prepend(str(site))
    (tmp_path / "project").mkdir()
    project = write_numpy_project(tmp_path / "project", '["numpy", "buildonly"]')
    bundle = build(project).path
    monkeypatch.undo()
    host = EnclaveHost.load(bundle, mode="simulation")
    with pytest.raises(DependencyMismatchError, match=r"buildonly 0\.1, which is not installed"):
        host.start()


# -- changed after the start: the import is refused -----------------------------------------


def test_a_python_module_changed_after_the_start_is_not_imported(
    start_host: Callable[[], HostProcess], host_site: tuple[Path, Path]
) -> None:
    host = start_host()
    assert host.read() == {"started": "yes"}
    path = host_site[1] / LAZY_SOURCE
    replace_file(path, path.read_bytes().replace(b"def ", b"def  ", 1))
    answer = host.call("import numpy.ma")
    assert answer["error"] == "EnclaveCallError"
    assert DependencyMismatchError.__name__ in answer["message"]
    assert LAZY_SOURCE in answer["message"]
    assert host.call("mean 3 4") == {"answer": "3.500000 5.000000"}  # the enclave goes on


def test_an_extension_changed_after_the_start_is_not_loaded(
    start_host: Callable[[], HostProcess], host_site: tuple[Path, Path]
) -> None:
    host = start_host()
    assert host.read() == {"started": "yes"}
    flip_byte(host_site[1] / LAZY_EXTENSION)
    answer = host.call("import numpy.random")
    assert answer["error"] == "EnclaveCallError"
    assert DependencyMismatchError.__name__ in answer["message"]
    assert LAZY_EXTENSION in answer["message"]


def test_a_module_added_by_the_host_is_not_imported(
    start_host: Callable[[], HostProcess], host_site: tuple[Path, Path]
) -> None:
    (host_site[1] / "numpy" / "planted.py").write_text("SECRET_SINK = True\n")
    host = start_host()
    assert host.read() == {"started": "yes"}
    answer = host.call("import numpy.planted")
    assert answer["error"] == "EnclaveCallError"
    assert "not among the files recorded for numpy" in answer["message"]
