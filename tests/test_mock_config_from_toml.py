"""Mock mode reads the enclave's own ``enclave.toml``: one source of truth for its settings."""

from __future__ import annotations

import importlib
import itertools
import sys
import threading
from pathlib import Path

import pytest

from sanctorum import (
    BundleError,
    Enclave,
    EnclaveHost,
    EnclaveLoadError,
    EnclaveStateError,
    MockConfiguration,
    PersistentMapFullError,
)
from sanctorum.common.bundle import MIN_FILESYSTEM_SIZE, load_config
from sanctorum.host.mock_settings import find_enclave_toml, mock_settings

ROOT = Path(__file__).resolve().parents[1]
_names = itertools.count()

KEEPER = '''
import threading

from sanctorum import Enclave


class Keeper(Enclave):
    """Stores what the host sends; nothing here says how big its map or files are."""

    def receive_from_untrusted_host(self, data: bytes) -> bytes:
        command, _, argument = data.partition(b" ")
        if command == b"put":
            self.persistent_map["value"] = argument
        elif command == b"file":
            self.filesystem.write_bytes("/kept", argument)
            self.filesystem.write_bytes("/tmp/scratch", argument)
            return self.filesystem.read_bytes("/kept")
        return self.persistent_map.get("value", b"")


class Other(Enclave):
    """A second class in the same module, which no enclave.toml names."""

    barrier = threading.Barrier(2)
'''


def write_project(
    directory: Path,
    *,
    module: str | None = None,
    entry_class: str = "Keeper",
    code: str = KEEPER,
    **settings: str,
) -> str:
    """An enclave project in ``directory`` whose module has a name no other test uses; returns
    the module name. ``settings`` are extra lines of the [enclave] table."""
    module = module or f"keeper_{next(_names)}"
    path = directory / (module.replace(".", "/") + ".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(code)
    table = {
        "name": '"keeper"',
        "entry": f'"{module}:{entry_class}"',
        "product_id": "5",
        "revocation_level": "2",
        "sources": f'["{module.split(".")[0]}{"" if "." in module else ".py"}"]',
        **settings,
    }
    lines = ["[enclave]", *(f"{key} = {value}" for key, value in table.items())]
    (directory / "enclave.toml").write_text("\n".join(lines) + "\n")
    return module


def load_class(directory: Path, module: str, name: str, monkeypatch: pytest.MonkeyPatch) -> type:
    monkeypatch.syspath_prepend(str(directory))
    cls: type = getattr(importlib.import_module(module), name)
    return cls


MAP = {"persistent_map": "true", "max_persistent_map_size": "4096"}


def test_the_settings_come_from_the_enclave_toml_that_names_the_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = write_project(
        tmp_path,
        **MAP,
        filesystem_size=str(MIN_FILESYSTEM_SIZE),
        memory_filesystem_size="65536",
    )
    keeper = load_class(tmp_path, module, "Keeper", monkeypatch)
    assert "persistent_map_size" not in vars(keeper)
    with EnclaveHost.load(keeper).start(filesystem_file=tmp_path / "files.bin") as host:
        info = host.enclave_instance_info
        assert (info.product_id, info.revocation_level) == (5, 2)
        assert host.call_enclave(b"put kept") == b"kept"
        assert host.call_enclave(b"file abc") == b"abc"
        with pytest.raises(PersistentMapFullError):  # 4096 bytes, as enclave.toml says
            host.call_enclave(b"put " + b"x" * 5000)
        host.restart()  # a new instance: the same settings, from the sealed state
        assert host.call_enclave(b"get") == b"kept"
    settings = mock_settings(keeper)
    assert settings.config_file == tmp_path / "enclave.toml"
    assert (settings.persistent_map_size, settings.filesystem_size) == (4096, MIN_FILESYSTEM_SIZE)
    assert settings.memory_filesystem_size == 65536


def test_thread_safe_comes_from_the_enclave_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = write_project(tmp_path, entry_class="Other", thread_safe="true")
    other = load_class(tmp_path, module, "Other", monkeypatch)

    def wait(self: Enclave, data: bytes) -> bytes:
        other.barrier.wait(timeout=5)  # type: ignore[attr-defined]
        return b"met"

    monkeypatch.setattr(other, "receive_from_untrusted_host", wait)
    with EnclaveHost.load(other).start() as host:
        answers: list[bytes | None] = []
        callers = [
            threading.Thread(target=lambda: answers.append(host.call_enclave(b"wait")))
            for _ in range(2)
        ]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(timeout=10)
    # Both calls were inside the enclave at once: it was entered as thread-safe.
    assert answers == [b"met", b"met"]
    # thread_safe = true with a persistent map is refused, as it is for a bundle.
    write_project(tmp_path, module=module, entry_class="Other", thread_safe="true", **MAP)
    with pytest.raises(EnclaveLoadError, match="thread-safe enclave cannot have a persistent"):
        EnclaveHost.load(other)


def test_a_class_attribute_that_contradicts_the_toml_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = KEEPER + "\n\nclass Base(Enclave):\n    persistent_map_size = 1024\n"
    code += "\n\nclass Derived(Base):\n    pass\n"
    code += "\n\nclass Threaded(Enclave):\n    thread_safe = True\n"
    code += (
        "\n\nclass Agreeing(Enclave):\n    persistent_map_size = 4096\n    filesystem_size = 0\n"
    )
    module = write_project(tmp_path, entry_class="Derived", code=code, **MAP)
    derived = load_class(tmp_path, module, "Derived", monkeypatch)
    with pytest.raises(EnclaveLoadError) as refused:
        EnclaveHost.load(derived)
    message = str(refused.value)
    assert "Base.persistent_map_size = 1024 contradicts" in message
    assert str(tmp_path / "enclave.toml") in message
    assert "persistent_map = true, max_persistent_map_size = 4096" in message
    assert "delete persistent_map_size from the class" in message

    write_project(tmp_path, module=module, entry_class="Threaded", code=code)
    threaded = load_class(tmp_path, module, "Threaded", monkeypatch)
    with pytest.raises(EnclaveLoadError, match=r"Threaded.thread_safe = True contradicts .*"):
        EnclaveHost.load(threaded)

    write_project(tmp_path, module=module, entry_class="Agreeing", code=code, **MAP)
    agreeing = load_class(tmp_path, module, "Agreeing", monkeypatch)
    with EnclaveHost.load(agreeing).start() as host:  # saying the same twice is no contradiction
        assert host.enclave_instance_info.product_id == 5


def test_a_toml_that_names_another_class_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = write_project(tmp_path, **MAP)  # names Keeper
    other = load_class(tmp_path, module, "Other", monkeypatch)
    assert find_enclave_toml(other) is None
    with EnclaveHost.load(other).start() as host:
        assert host.enclave_instance_info.product_id == 1  # the mock default
        with pytest.raises(EnclaveStateError, match="no persistent map"):
            _ = host.mock_enclave.persistent_map


def test_explicit_mock_configuration_wins_over_the_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = write_project(tmp_path, **MAP)
    keeper = load_class(tmp_path, module, "Keeper", monkeypatch)
    upgraded = MockConfiguration(revocation_level=3)  # a test playing the next release
    with EnclaveHost.load(keeper, mock_config=upgraded).start() as host:
        info = host.enclave_instance_info
    assert (info.product_id, info.revocation_level) == (5, 3)  # product id from the toml
    assert upgraded.product_id is None  # left for enclave.toml to fill in


def test_a_module_in_a_package_finds_the_project_above_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = f"pkg_{next(_names)}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    module = write_project(tmp_path, module=f"{package}.keeper", **MAP)
    # A nearer enclave.toml, of another project, does not name this class: it is passed by.
    write_project(tmp_path / package, module="unrelated", entry_class="Other")
    keeper = load_class(tmp_path, module, "Keeper", monkeypatch)
    found = find_enclave_toml(keeper)
    assert found is not None
    assert found[0] == tmp_path / "enclave.toml"
    assert found[1].entry == f"{package}.keeper:Keeper"


def test_a_broken_enclave_toml_where_the_project_would_be_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = write_project(tmp_path)
    keeper = load_class(tmp_path, module, "Keeper", monkeypatch)
    (tmp_path / "enclave.toml").write_text("[enclave\n")
    with pytest.raises(BundleError, match="is not valid TOML"):
        EnclaveHost.load(keeper)
    write_project(tmp_path, module=module, product_id="0")  # names Keeper, with a bad value
    with pytest.raises(BundleError, match="product_id must be from 1 to 65535"):
        EnclaveHost.load(keeper)


def test_a_class_of_no_project_keeps_its_class_attributes() -> None:
    class Sized(Enclave):
        persistent_map_size = 2048
        memory_filesystem_size = 65536

    assert find_enclave_toml(Sized) is None
    settings = mock_settings(Sized)
    assert settings.config_file is None
    assert (settings.persistent_map_size, settings.memory_filesystem_size) == (2048, 65536)
    assert (settings.mock_config.product_id, settings.mock_config.revocation_level) == (None, None)
    with EnclaveHost.load(Sized).start() as host:
        assert (
            host.enclave_instance_info.product_id,
            host.enclave_instance_info.revocation_level,
        ) == (1, 0)


@pytest.mark.parametrize("sample", ["hello", "counter", "auction"])
def test_the_samples_state_their_settings_once(sample: str) -> None:
    project = ROOT / "samples" / sample
    config = load_config(project)
    assert str(project) in sys.path  # pyproject's pythonpath
    enclave_class = getattr(importlib.import_module(config.entry_module), config.entry_class)
    for attribute in (
        "thread_safe",
        "persistent_map_size",
        "filesystem_size",
        "memory_filesystem_size",
    ):
        assert attribute not in vars(enclave_class), f"{sample} repeats {attribute}"
    settings = mock_settings(enclave_class)
    assert settings.config_file == project / "enclave.toml"
    assert settings.mock_config.product_id == config.product_id
    expected = config.max_persistent_map_size if config.persistent_map else None
    assert settings.persistent_map_size == expected


def test_an_entry_typo_next_to_the_class_is_refused_not_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Otherwise mock mode would quietly fall back to the class's defaults (no map), and the
    first call would fail asking for the persistent_map the file already has."""
    module = write_project(tmp_path, entry_class="Keepr", **MAP)
    keeper = load_class(tmp_path, module, "Keeper", monkeypatch)
    with pytest.raises(
        BundleError,
        match=r"names 'Keepr', which the module does not define "
        r"\(did you mean 'Keeper'\?\)",
    ):
        EnclaveHost.load(keeper)
