"""Every code block in README.md and docs/*.md is run, or marked as not run with a reason.

How a block is treated, by its info string:

- ``python``: run. A page's Python blocks run in order in one namespace (a later block may use
  what an earlier one defined), in a fresh working directory that holds a copy of ``samples/``
  with ``samples/hello`` already built (the tutorial says to run ``sanctorum build
  samples/hello`` first).
- ``sh`` (or ``console``, with ``$`` prompts; other lines are output): each command is run in
  that directory. Only ``sanctorum …`` and ``python -c …`` commands may appear in a block that
  runs; anything else (``pip``, ``apt-get``, ``ls /dev/sgx_enclave``) needs the marker below.
- ``toml``: parsed; a block with an ``[enclave]`` table must be a valid ``enclave.toml``.
- anything else, including a fence with no info string: must be marked.

A block is marked as not run by an HTML comment on the line before its fence (it does not show
in the rendered page)::

    <!-- not run: needs SGX hardware -->

``test_every_block_not_run_says_why`` checks that each marked block gives its reason and that
most blocks run. A block that is marked but also runnable is not detected: keep the reasons
honest.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sanctorum.build import build
from sanctorum.common.bundle import parse_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"sh", "shell", "bash", "console"}
RUNNABLE = {"python", "toml", *SHELL}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARK = re.compile(r"^\s*<!--\s*not run:\s*(?P<reason>.+?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None  # the reason, if the block is marked

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, with the marker before each, if any."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].strip().split(" ")[0].lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith(fence) and lines[j].strip().strip(fence[0]) == ""
        ):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        mark = _MARK.match(lines[i - 1]) if i > 0 else None
        found.append(
            Block(page, i + 1, language, "\n".join(body) + "\n", mark["reason"] if mark else None)
        )
        i = j + 1
    return found


def test_expected_output_reads_literal_comments_only() -> None:
    code = "print(a)  # b'cba'\nprint(b)  # the code hash\nx = 1  # 3\n    print(c)  # 42\n"
    assert expected_output(code) == [("b'cba'", "b'cba'"), ("42", "42")]
    assert expected_output("print(mode)  # 'mock'\n") == [("'mock'", "mock")]


def test_a_block_that_prints_something_else_than_it_says_fails(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nprint(b'abc'[::-1])  # b'abc'\n```\n")
    with pytest.raises(AssertionError, match="says it prints b'abc'"):
        _run_python(blocks(page)[0], {})
    page.write_text("```python\nprint(b'abc'[::-1])  # b'cba'\nprint('x')  # 'x'\n```\n")
    _run_python(blocks(page)[0], {})


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_every_block_is_run_or_marked() -> None:
    """No block slips through: each is of a language this test runs, or marked."""
    unmarked = [
        f"{block.where}: a ```{block.language or '(no info string)'} block"
        for page in PAGES
        for block in blocks(page)
        if block.not_run is None and block.language not in RUNNABLE
    ]
    assert not unmarked, (
        "blocks this test cannot run; give them a runnable language or put "
        "'<!-- not run: REASON -->' on the line before the fence:\n" + "\n".join(unmarked)
    )
    counts = [(block.not_run is None) for page in PAGES for block in blocks(page) if block.language]
    assert sum(counts) >= 20, "far fewer runnable examples than the docs have: parser broken?"


def test_the_parser_sees_markers_and_indented_fences(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n<!-- not run: needs SGX hardware -->\n```sh\nls /dev/sgx_enclave\n```\n"
        "- item\n\n  ```python\n  x = 1\n  ```\n````text\n```\n````\n"
    )
    found = blocks(page)
    assert [(b.language, b.not_run, b.code) for b in found] == [
        ("sh", "needs SGX hardware", "ls /dev/sgx_enclave\n"),
        ("python", None, "x = 1\n"),
        ("text", None, "```\n"),
    ]


# -- running them ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of samples/ with samples/hello built, made once and copied for each page."""
    root = tmp_path_factory.mktemp("doc-samples")
    shutil.copytree(
        ROOT / "samples",
        root / "samples",
        ignore=shutil.ignore_patterns("build", "__pycache__", "tests", "*.enclave"),
    )
    build(root / "samples" / "hello")
    return root


def commands(block: Block) -> Iterator[str]:
    """The command lines of a shell block (continuations joined; comments and, in ``console``
    blocks, output dropped)."""
    text = block.code.replace("\\\n", " ")
    for line in text.splitlines():
        if block.language == "console":
            if not line.startswith("$ "):
                continue  # output
            line = line[2:]
        if shlex.split(line, comments=True):
            yield line


def _run_shell(block: Block) -> None:
    """Each command runs in bash, as a reader would type it, with this environment's
    ``sanctorum`` and ``python`` first on the PATH."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    for line in commands(block):
        program = shlex.split(line, comments=True)[0]
        where = f"{block.where}: `{line.strip()}`"
        if program not in ("sanctorum", "python"):
            pytest.fail(
                f"{where}: only `sanctorum …` and `python …` commands are run; mark the block "
                "'<!-- not run: REASON -->' if it needs anything else"
            )
        done = subprocess.run(
            ["bash", "-c", line], capture_output=True, text=True, timeout=60, env=env
        )
        assert done.returncode == 0, f"{where} failed:\n{done.stdout}{done.stderr}"


_PRINT = re.compile(r"^\s*print\(.*\)\s*#\s*(?P<shown>.+?)\s*$")


def expected_output(code: str) -> list[tuple[str, str]]:
    """What the block says its prints show: ``print(x)  # b'cba'`` says ``b'cba'``, and
    ``print(name)  # 'hello'`` says ``'hello'`` or ``hello`` (what print shows of that value).
    Only comments that are Python literals count; prose after a print is not checked."""
    shown = []
    for line in code.splitlines():
        match = _PRINT.match(line)
        if match is not None:
            try:
                value = ast.literal_eval(match["shown"])
            except (ValueError, SyntaxError):
                continue
            shown.append((match["shown"], str(value)))
    return shown


def _run_python(block: Block, namespace: dict[str, object]) -> None:
    code = compile(block.code, block.where, "exec")
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(code, namespace)
    printed = iter(output.getvalue().splitlines())
    for shown in expected_output(block.code):
        # in order: each promised line is printed after the one before it
        assert any(line in shown for line in printed), (
            f"{block.where}: the block says it prints {shown[0]}, but it printed:\n"
            + output.getvalue()
        )


def _run_toml(block: Block) -> None:
    if re.search(r"^\[enclave\]", block.code, re.MULTILINE):
        parse_config(block.code, block.where)
    else:
        tomllib.loads(block.code)


def _close(namespace: dict[str, object]) -> None:
    """Close what a page's examples left open (hosts started without ``with``)."""
    for value in namespace.values():
        close = getattr(value, "close", None)
        if callable(close) and type(value).__module__.startswith("sanctorum."):
            with contextlib.suppress(Exception):
                close()


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_examples_run(
    page: Path, samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every block of the page that is not marked runs without an error."""
    work = tmp_path / "work"
    shutil.copytree(samples, work)
    monkeypatch.chdir(work)
    namespace: dict[str, object] = {"__name__": "__doc_example__"}
    try:
        for block in blocks(page):
            if block.not_run is not None:
                continue
            if block.language == "python":
                _run_python(block, namespace)
            elif block.language in SHELL:
                _run_shell(block)
            elif block.language == "toml":
                _run_toml(block)
    finally:
        _close(namespace)


def test_every_block_not_run_says_why() -> None:
    """A marked block names its reason (a few words at least), and most blocks run."""
    marked = [(page, block) for page in PAGES for block in blocks(page) if block.not_run]
    vague = [
        f"{_page_id(page)}:{block.line}"
        for page, block in marked
        if len((block.not_run or "").split()) < 2
    ]
    assert not vague, f"blocks marked not run without a reason: {vague}"
    total = sum(len(blocks(page)) for page in PAGES)
    assert len(marked) < total / 2, f"{len(marked)} of {total} blocks are not run"
