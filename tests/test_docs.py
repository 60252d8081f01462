"""The documentation site: it builds strictly, stands alone, and its reference pages cannot
drift from the code (commands, errors, enclave.toml settings, the public API).

Code blocks in the pages are run by tests/test_doc_examples.py.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

import sanctorum
from sanctorum.cli import app
from sanctorum.common import bundle, errors

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _sections(text: str, level: str = "## ") -> dict[str, str]:
    """Heading line (without the #s) → the text up to the next heading of that level."""
    parts = re.split(rf"^{re.escape(level)}", text, flags=re.MULTILINE)
    return {part.split("\n", 1)[0].strip(): part for part in parts[1:]}


# -- the site -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as `make docs` builds it; any warning fails the build."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}{done.stderr}"
    assert "WARNING" not in done.stderr, done.stderr
    return out


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    for page in DOCS.glob("*.md"):
        html = site / ("" if page.stem == "index" else page.stem) / "index.html"
        assert html.is_file(), f"{page.name} was not built"


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    for page in DOCS.glob("*.md"):
        assert re.search(rf":\s*{re.escape(page.name)}\s*$", config, re.MULTILINE), (
            f"{page.name} is not in the nav of mkdocs.yml"
        )


def test_the_api_page_shows_docstrings_as_markdown(site: Path) -> None:
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    for path in re.findall(r"^::: (\S+)", _page("api.md"), re.MULTILINE):
        assert f'id="{path}"' in html, f"the API page has no entry {path}"
    assert 'id="sanctorum.host.host.EnclaveHost.mock_enclave"' in html
    # reST roles are turned into code by docs/_ext/sphinx_roles.py; none may show verbatim
    leftover = re.findall(r":(?:class|meth|func|attr|exc|mod|data|obj):", html)
    assert not leftover, f"{len(leftover)} reST roles left on the API page"
    assert "::</p>" not in html


def test_the_api_page_covers_the_public_api() -> None:
    directives = re.findall(r"^::: (\S+)", _page("api.md"), re.MULTILINE)
    whole_modules = set(directives)
    named = {path.rsplit(".", 1)[-1] for path in directives}
    for name in sanctorum.__all__:
        if name == "__version__":
            continue
        module = getattr(sanctorum, name).__module__
        assert name in named or module in whole_modules, f"api.md has no entry for {name}"
    for path in directives:  # and every entry names something that exists
        try:
            importlib.import_module(path)
        except ModuleNotFoundError:
            module, _, attribute = path.rpartition(".")
            assert hasattr(importlib.import_module(module), attribute), f"api.md: {path}"


# -- standing alone -------------------------------------------------------------------------

# decisions.md may cite the design document the project started from, as history
_USER_PAGES = [
    ROOT / "README.md",
    *(p for p in sorted(DOCS.glob("*.md")) if p.name != "decisions.md"),
]
# the design document, the project's shared folder, and issue numbers: readers have none of them
_ELSEWHERE = re.compile(
    r"DESIGN(\.md| §)|shared design|\.\./shared|shared/|\bissue \d+", re.IGNORECASE
)


@pytest.mark.parametrize("page", _USER_PAGES, ids=lambda p: p.name)
def test_user_pages_send_readers_nowhere_outside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    found = [
        f"{page.name}:{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), 1)
        if _ELSEWHERE.search(line)
    ]
    assert not found, "references to documents readers do not have:\n" + "\n".join(found)
    # relative links resolve to files in the repository
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        resolved = (page.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
        assert resolved.exists(), f"{page.name} links to a missing file: {target}"


def test_the_built_site_names_no_design_document(site: Path) -> None:
    for html in site.rglob("*.html"):
        if html.parent.name == "decisions":
            continue
        text = html.read_text(encoding="utf-8")
        assert not re.search(r"DESIGN(\.md| §)", text), f"{html.relative_to(site)} cites DESIGN"


# -- the reference pages against the code ---------------------------------------------------


def _cli() -> Any:
    """The click group behind the typer app (typer ships its own copy of click, so it is
    duck-typed here: ``commands``, and ``params`` with ``opts`` or a ``name``)."""
    group: Any = typer.main.get_command(app)
    assert group.commands, "the sanctorum app has no commands?"
    return group


def _is_argument(param: Any) -> bool:
    return bool(param.param_type_name == "argument")


def test_the_cli_page_documents_every_command_argument_and_option() -> None:
    sections = _sections(_page("cli.md"))
    group = _cli()
    root = next(text for heading, text in sections.items() if "sanctorum --version" in heading)
    for param in group.params:
        for opt in getattr(param, "opts", []):
            assert f"`{opt}`" in root, f"cli.md does not document `sanctorum {opt}`"
    for name, command in group.commands.items():
        matching = [text for heading, text in sections.items() if heading == f"`sanctorum {name}`"]
        assert matching, f"cli.md has no section '## `sanctorum {name}`'"
        section = matching[0]
        documented: set[str] = set()
        # A command group (`sanctorum kds`) documents its subcommands in its section.
        subcommands = getattr(command, "commands", {})
        for sub in subcommands:
            assert f"`sanctorum {name} {sub}" in section, (
                f"cli.md: `sanctorum {name}` does not document `sanctorum {name} {sub}`"
            )
        params = [p for sub in subcommands.values() for p in sub.params] or command.params
        for param in params:
            if _is_argument(param):
                assert f"`{param.name.upper()}`" in section, (
                    f"cli.md: `sanctorum {name}` does not document its argument "
                    f"{param.name.upper()}"
                )
            else:
                for opt in [*param.opts, *param.secondary_opts]:
                    if opt == "--help":
                        continue
                    documented.add(opt)
                    assert f"`{opt}`" in section, (
                        f"cli.md: `sanctorum {name}` does not document its option {opt}"
                    )
        # and the option tables name nothing the command lacks
        rows = [line for line in section.splitlines() if line.startswith("| `-")]
        for row in rows:
            for opt in re.findall(r"`(-[-\w]+)`", row.split("|")[1]):
                assert opt in documented, f"cli.md: `sanctorum {name}` has no option {opt}"


def test_cli_page_checker_would_catch_a_new_option() -> None:
    """The test above reads options from the command itself, so a new one shows up."""
    build = _cli().commands["build"]
    opts = {opt for param in build.params for opt in getattr(param, "opts", [])}
    assert {"--key", "--sgx-key", "--mode", "--output", "-o"} <= opts


def _all_errors() -> list[type[errors.SanctorumError]]:
    """Every SanctorumError subclass Sanctorum defines, in any of its modules."""
    for info in pkgutil.walk_packages(sanctorum.__path__, "sanctorum."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found: list[type[errors.SanctorumError]] = []
    pending: list[type[errors.SanctorumError]] = [errors.SanctorumError]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("sanctorum.") and cls not in found:
            found.append(cls)
            pending.extend(cls.__subclasses__())
    return found


def test_every_error_has_a_section_on_the_errors_page() -> None:
    headings = set(re.findall(r"^#{2,3} `(\w+)`$", _page("errors.md"), re.MULTILINE))
    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.SanctorumError)
    }
    assert len(defined) >= 30
    everywhere = {cls.__name__ for cls in _all_errors()}
    assert defined <= everywhere
    missing = everywhere - headings
    assert not missing, f"errors.md has no section for {sorted(missing)}"
    unknown = headings - everywhere
    assert not unknown, f"errors.md has sections for errors that do not exist: {sorted(unknown)}"


def test_the_error_tree_matches_the_classes() -> None:
    text = _page("errors.md")
    tree = text.split("## The hierarchy", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    classes = {cls.__name__: cls for cls in _all_errors()}
    parents: list[str] = []
    seen = set()
    for line in tree.splitlines():
        match = re.search(r"\w+", line)
        assert match is not None
        depth = match.start() // 4
        name = match.group()
        parents[depth:] = [name]
        seen.add(name)
        if depth:
            bases = [base.__name__ for base in classes[name].__bases__]
            assert parents[depth - 1] in bases, f"errors.md puts {name} under {parents[depth - 1]}"
    assert seen == set(classes), f"the tree lacks {sorted(set(classes) - seen)}"


def test_every_enclave_toml_setting_has_a_section() -> None:
    text = _page("enclave-toml.md")
    headings = set(re.findall(r"^### `(\w+)`$", text, re.MULTILINE))
    known = set(bundle._KNOWN_KEYS)
    assert headings == known, (
        f"enclave-toml.md: missing {sorted(known - headings)}, stale {sorted(headings - known)}"
    )
    # and the defaults it states are the parser's
    config = bundle.parse_config(
        '[enclave]\nname = "x"\nentry = "m:C"\nproduct_id = 1\nrevocation_level = 0\n'
        'sources = ["m.py"]\n'
    )
    sections = _sections(text, "### ")
    for key in known:
        rows = [line for line in sections[f"`{key}`"].splitlines() if line.startswith("|")]
        header, values = [c.strip() for c in rows[0].split("|")], rows[2].split("|")
        stated = values[header.index("default")].strip()
        if key in ("name", "entry", "product_id", "revocation_level", "sources"):
            assert stated.startswith("required"), f"enclave-toml.md: {key} is required"
            continue
        default = getattr(config, key)
        shown = "`false`" if default is False else "`[]`" if default == () else f"`{default}`"
        assert stated.startswith(shown), f"enclave-toml.md: the default of {key} is {shown}"


# -- the tests the docs name ----------------------------------------------------------------

_NAMED_TEST = re.compile(r"`((?:[\w.-]+/)*test_\w+\.py)::(test_\w+)(?:\[[^\]]*\])?`")


def _pages_that_name_tests() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted(ROOT.glob("samples/*/*.md"))]


def _named_tests() -> list[tuple[Path, str, str]]:
    return [
        (page, path, name)
        for page in _pages_that_name_tests()
        for path, name in _NAMED_TEST.findall(page.read_text(encoding="utf-8"))
    ]


def test_every_test_a_page_names_exists() -> None:
    """A guarantee names the test that attacks it: the name must stay true when tests move.
    A path is relative to the repository, or to a sample's directory in its README."""
    named = _named_tests()
    assert len(named) > 100  # the security page alone names many
    missing = []
    for page, path, name in named:
        candidates = [ROOT / path, page.parent / path]
        found = [file for file in candidates if file.is_file()]
        source = found[0].read_text(encoding="utf-8") if found else ""
        # A function, or a Hypothesis state machine's TestCase bound to a test name.
        if not re.search(rf"^(?:(?:async )?def {name}\(|{name} = )", source, flags=re.MULTILINE):
            missing.append(f"{page.relative_to(ROOT)}: {path}::{name}")
    assert not missing, "named tests that do not exist:\n" + "\n".join(missing)
