"""``sanctorum init``: a new enclave project that works at once.

The project holds an enclave that keeps what each client said last in its persistent map,
``enclave.toml`` (its settings, read in every mode), a client over the web host, a demo that
builds the enclave, serves it with ``sanctorum host`` and runs the client, and tests that the
sanctorum pytest plugin runs in mock and simulation mode. Its ``README.md`` gives the two
commands: ``python demo.py`` and ``python -m pytest``.

The files are made from the templates in ``sanctorum/build/templates/project`` (package data):
``$name``, ``$module`` and ``$enclave_class`` are filled in (``string.Template``).
"""

from __future__ import annotations

import keyword
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sanctorum.common.errors import ProjectInitError

_TEMPLATES = ("templates", "project")
_FILES = {
    # template (under _TEMPLATES) → file of the project ($-names filled in)
    "enclave.toml.tmpl": "enclave.toml",
    "enclave.py.tmpl": "$module.py",
    "client.py.tmpl": "client.py",
    "demo.py.tmpl": "demo.py",
    "tests/test_enclave.py.tmpl": "tests/test_$name.py",
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "gitignore.tmpl": ".gitignore",
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Names the enclave module binds itself, and the project's other modules.
_TAKEN_BY_THE_MODULE = {"Enclave", "EnclaveMail", "MAX_MESSAGE", "annotations", "json"}
_PROJECT_MODULES = {"client", "demo", "tests"}


@dataclass(frozen=True)
class NewProject:
    """What :func:`create_project` made."""

    directory: Path
    name: str
    """The enclave's name (``[enclave].name``; the bundle is ``build/NAME.enclave``)."""
    module: str
    """The enclave's module, ``NAME_enclave``."""
    enclave_class: str
    files: tuple[Path, ...]


def default_name(directory: Path) -> str:
    """The enclave name for a project in ``directory``: its name in lower case, with ``-``,
    ``.`` and spaces as ``_``."""
    return re.sub(r"[-. ]", "_", directory.resolve().name).lower()


def default_class(name: str) -> str:
    """The enclave class for the enclave ``name``: ``my_notes`` → ``MyNotesEnclave``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_")) + "Enclave"


def check_name(name: str, directory: Path | None = None) -> None:
    """Refuse a name that cannot be the enclave's name and its module's prefix (``directory``:
    the name was made from that directory's name)."""
    what = f"--name {name!r}"
    if directory is not None:
        what = f"the name {name!r} (made from the directory name {directory.resolve().name!r})"
    if not _IDENTIFIER.fullmatch(name) or keyword.iskeyword(name):
        raise ProjectInitError(
            f"{what} cannot name the enclave and its module: pass --name with letters, digits "
            "and '_', not starting with a digit, for example --name notes"
        )
    if name in _PROJECT_MODULES:
        raise ProjectInitError(
            f"{what} is taken by the project's own files ({', '.join(sorted(_PROJECT_MODULES))}"
            "): pass another --name"
        )


def check_class(enclave_class: str) -> None:
    """Refuse a class name that is not a Python identifier or clashes with the module's names."""
    if not _IDENTIFIER.fullmatch(enclave_class) or keyword.iskeyword(enclave_class):
        raise ProjectInitError(
            f"--enclave-class {enclave_class!r} is not a Python class name: use letters, digits "
            "and '_', not starting with a digit, for example 'NotesEnclave'"
        )
    if enclave_class in _TAKEN_BY_THE_MODULE:
        raise ProjectInitError(
            f"--enclave-class {enclave_class!r} is a name the enclave's module already uses "
            f"({', '.join(sorted(_TAKEN_BY_THE_MODULE))}): choose another, for example "
            f"'My{enclave_class}'"
        )


def _check_directory(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise ProjectInitError(f"{directory} exists and is not a directory: name a new one")
    if directory.is_dir() and any(directory.iterdir()):
        raise ProjectInitError(
            f"{directory} is not empty: sanctorum init creates a project in a new or empty "
            "directory, so it never overwrites your files; name another directory"
        )


def render(name: str, enclave_class: str) -> dict[str, str]:
    """The project's files (relative path → text) for ``name`` and ``enclave_class``."""
    values = {"name": name, "module": f"{name}_enclave", "enclave_class": enclave_class}
    root = resources.files("sanctorum.build").joinpath(*_TEMPLATES)
    files = {}
    for template, target in _FILES.items():
        text = root.joinpath(*template.split("/")).read_text(encoding="utf-8")
        files[string.Template(target).substitute(values)] = string.Template(text).substitute(values)
    return files


def create_project(
    directory: Path, name: str | None = None, enclave_class: str | None = None
) -> NewProject:
    """Create an enclave project in ``directory`` (new, or empty).

    ``name`` (default: from the directory's name) names the enclave and its module
    (``NAME_enclave.py``); ``enclave_class`` (default: ``NameEnclave``) its class. Raises
    :class:`ProjectInitError` for a non-empty directory or a name that cannot work, before
    anything is written.
    """
    if name is None:
        name = default_name(directory)
        check_name(name, directory)
    else:
        check_name(name)
    enclave_class = enclave_class or default_class(name)
    check_class(enclave_class)
    _check_directory(directory)
    files = render(name, enclave_class)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return NewProject(directory, name, f"{name}_enclave", enclave_class, tuple(written))
