"""Mock mode's settings: read from the enclave's own ``enclave.toml`` when it has one.

A bundle takes its settings (thread safety, persistent map, filesystems, product id, revocation
level) from its ``enclave.toml``. So that a class run in mock mode does not have to state them
a second time, :func:`mock_settings` looks for the ``enclave.toml`` of the project the class
comes from, and uses it when its ``entry`` names that very class.

Where it looks: a class ``C`` of the module ``a.b.c`` (the file ``…/a/b/c.py``) could be the
entry ``c:C`` of a project in ``…/a/b/``, ``b.c:C`` of one in ``…/a/``, or ``a.b.c:C`` of one
in ``…/``; those directories are looked at, nearest first, and the first ``enclave.toml`` whose
``entry`` is the class's is used. An ``enclave.toml`` there that names another class is left
alone; one that is not valid TOML, or names this class but has a bad setting, is an error.

Precedence: an explicit value in ``mock_config`` (product id, revocation level) wins, so a test
can play another release; then ``enclave.toml``; class attributes only for a class that no
``enclave.toml`` names. A class attribute that says otherwise than its ``enclave.toml`` is
refused with :class:`EnclaveLoadError` rather than one of the two silently ignored.
"""

from __future__ import annotations

import dataclasses
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sanctorum.attestation.mock import MockConfiguration
from sanctorum.common.bundle import CONFIG_FILE, EnclaveConfig, KdsConfig, parse_config
from sanctorum.common.errors import BundleError, EnclaveLoadError
from sanctorum.common.suggest import did_you_mean
from sanctorum.enclave.base import Enclave


@dataclass(frozen=True)
class MockSettings:
    """What a mock enclave runs with, and where that came from."""

    thread_safe: bool
    persistent_map_size: int | None
    """The persistent map's maximum size in bytes; None: no persistent map."""
    filesystem_size: int
    memory_filesystem_size: int
    mock_config: MockConfiguration
    """What the enclave claims to be, its product id and revocation level filled in."""
    config_file: Path | None
    """The ``enclave.toml`` the settings came from; None: the class attributes."""
    kds: KdsConfig | None = None
    """The ``[kds]`` table of that ``enclave.toml``, if any."""


def find_enclave_toml(enclave_class: type[Enclave]) -> tuple[Path, EnclaveConfig] | None:
    """The ``enclave.toml`` whose ``entry`` names ``enclave_class``, and its configuration; None
    if there is none (see the module's documentation for where it looks).

    Raises :class:`BundleError` if an ``enclave.toml`` where the class's project would be is not
    valid TOML, or names the class but has a bad setting.
    """
    module = sys.modules.get(enclave_class.__module__)
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    name = enclave_class.__module__
    if name == "__main__":  # a script: its entry would name the file's own module
        name = path.stem
    parts = name.split(".")
    is_package = path.name == "__init__.py"
    for start in range(len(parts) - 1, -1, -1):  # the shortest dotted name first: nearest
        suffix = parts[start:]
        relative = (*suffix, "__init__.py") if is_package else (*suffix[:-1], suffix[-1] + ".py")
        if path.parts[-len(relative) :] != relative:
            continue
        candidate = Path(*path.parts[: -len(relative)]) / CONFIG_FILE
        try:
            text = candidate.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as error:
            raise BundleError(f"cannot read {candidate}: {error}") from None
        try:
            table = tomllib.loads(text).get("enclave")
        except tomllib.TOMLDecodeError as error:
            raise BundleError(
                f"{candidate} is not valid TOML ({error}); mock mode reads it because it is "
                f"where the project of {enclave_class.__qualname__} would keep its settings: "
                "fix it"
            ) from None
        entry = table.get("entry") if isinstance(table, dict) else None
        dotted = ".".join(suffix)
        if entry == f"{dotted}:{enclave_class.__qualname__}":
            return candidate, parse_config(text, str(candidate))
        if isinstance(entry, str) and entry.startswith(f"{dotted}:"):
            _refuse_missing_entry_class(candidate, entry, module, enclave_class)
    return None


def _refuse_missing_entry_class(
    config_file: Path, entry: str, module: object, enclave_class: type[Enclave]
) -> None:
    """An ``enclave.toml`` whose ``entry`` names the class's module and a class that module
    does not define is a typo: without this, mock mode would quietly ignore the file."""
    wanted = entry.partition(":")[2]
    if hasattr(module, wanted):
        return  # another enclave of the same module: that file is not this class's
    suggestion = did_you_mean(wanted, [enclave_class.__qualname__, *dir(module)])
    raise BundleError(
        f"{config_file}: entry {entry!r} names {wanted!r}, which the module does not "
        f"define{suggestion}; fix entry (mock mode reads this file for "
        f"{enclave_class.__qualname__})"
    )


def _describe(attribute: str, config: EnclaveConfig) -> str:
    if attribute == "persistent_map_size":
        if config.persistent_map:
            return (
                f"persistent_map = true, max_persistent_map_size = {config.max_persistent_map_size}"
            )
        return "no persistent map (persistent_map = false, the default)"
    value = getattr(config, attribute)
    shown = str(value).lower() if isinstance(value, bool) else str(value)
    return f"{attribute} = {shown}"


def _set_by(enclave_class: type[Enclave], attribute: str) -> type | None:
    """The class below :class:`Enclave` in the MRO that sets ``attribute``, if any."""
    for klass in enclave_class.__mro__:
        if klass is Enclave:
            return None
        if attribute in vars(klass):
            return klass
    return None


def mock_settings(
    enclave_class: type[Enclave], mock_config: MockConfiguration | None = None
) -> MockSettings:
    """The settings ``enclave_class`` runs with in mock mode: from the ``enclave.toml`` that
    names it if there is one, else from its class attributes; ``mock_config``'s explicit
    product id and revocation level win over both.

    Raises :class:`EnclaveLoadError` if a class attribute contradicts the ``enclave.toml``.
    """
    config = mock_config or MockConfiguration()
    found = find_enclave_toml(enclave_class)
    if found is None:
        return MockSettings(
            thread_safe=enclave_class.thread_safe,
            persistent_map_size=enclave_class.persistent_map_size,
            filesystem_size=enclave_class.filesystem_size,
            memory_filesystem_size=enclave_class.memory_filesystem_size,
            mock_config=config,
            config_file=None,
        )
    path, toml = found
    settings = MockSettings(
        thread_safe=toml.thread_safe,
        persistent_map_size=toml.max_persistent_map_size if toml.persistent_map else None,
        filesystem_size=toml.filesystem_size,
        memory_filesystem_size=toml.memory_filesystem_size,
        mock_config=dataclasses.replace(
            config,
            product_id=toml.product_id if config.product_id is None else config.product_id,
            revocation_level=(
                toml.revocation_level
                if config.revocation_level is None
                else config.revocation_level
            ),
        ),
        config_file=path,
        kds=toml.kds,
    )
    for attribute in (
        "thread_safe",
        "persistent_map_size",
        "filesystem_size",
        "memory_filesystem_size",
    ):
        owner = _set_by(enclave_class, attribute)
        stated = getattr(enclave_class, attribute)
        if owner is not None and stated != getattr(settings, attribute):
            raise EnclaveLoadError(
                f"{owner.__qualname__}.{attribute} = {stated!r} contradicts {path}, whose "
                f"entry names {enclave_class.__qualname__}: it says "
                f"{_describe(attribute, toml)}. In mock mode as in the others the enclave's "
                f"settings come from its enclave.toml: delete {attribute} from the class, or "
                "change enclave.toml if the class was right"
            )
    return settings
