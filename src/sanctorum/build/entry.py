"""The build's check of ``entry``: the module is one of the bundle's files and binds the class.

Checked from the source (its syntax tree), not by importing it: a build never runs enclave code.
A name the module binds at top level in any way — a class, an import, an assignment — passes;
whether it is an Enclave subclass is checked when the enclave loads.
"""

from __future__ import annotations

import ast

from sanctorum.common.bundle import CODE_DIR, DEPS_DIR, EnclaveConfig
from sanctorum.common.errors import BundleError
from sanctorum.common.suggest import did_you_mean


def check_entry(config: EnclaveConfig, files: dict[str, bytes], where: str) -> None:
    """Raise :class:`BundleError` naming the module or class if ``entry`` cannot work."""
    module, name = config.entry_module, config.entry_class
    relative = module.replace(".", "/")
    source = None
    for root in (CODE_DIR, DEPS_DIR):
        for candidate in (f"{root}{relative}.py", f"{root}{relative}/__init__.py"):
            if candidate in files:
                source = files[candidate]
                break
        if source is not None:
            break
    if source is None:
        modules = sorted(
            path[len(CODE_DIR) : -3].replace("/", ".")
            for path in files
            if path.startswith(CODE_DIR) and path.endswith(".py")
        )
        raise BundleError(
            f"{where}: entry {config.entry!r} names the module {module!r}, which is not among "
            f"the bundle's sources ({', '.join(modules) or 'none'}){did_you_mean(module, modules)}"
            f"; add its file to sources or fix entry"
        )
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise BundleError(
            f"{where}: the entry module {module!r} is not valid Python: {error.msg} "
            f"(line {error.lineno})"
        ) from None
    bound = _top_level_names(tree)
    if name not in bound:
        raise BundleError(
            f"{where}: entry {config.entry!r} names the class {name!r}, but the module "
            f"{module!r} defines no {name!r}{did_you_mean(name, sorted(bound))}; fix entry in "
            "enclave.toml"
        )
    kinds = bound[name]
    if kinds <= {"a function", "a module"}:
        raise BundleError(
            f"{where}: entry {config.entry!r} names {' or '.join(sorted(kinds))}, not a class: "
            "point entry at your Enclave subclass"
        )


def _top_level_names(tree: ast.Module) -> dict[str, set[str]]:
    """Each name the module binds at top level (also under ``if``/``try``/``with``), and what
    binds it: "a class", "a function", "a module" (``import x``) or "a value" (anything else,
    which may be a class)."""
    names: dict[str, set[str]] = {}

    def bind(name: str, kind: str) -> None:
        names.setdefault(name, set()).add(kind)

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.ClassDef):
                bind(node.name, "a class")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                bind(node.name, "a function")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    bind((alias.asname or alias.name).split(".")[0], "a module")
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    bind(alias.asname or alias.name, "a value")
            else:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                        bind(child.id, "a value")
                    elif isinstance(child, ast.expr):
                        for name in ast.walk(child):
                            if isinstance(name, ast.Name) and isinstance(name.ctx, ast.Store):
                                bind(name.id, "a value")
                for block in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, block, None)
                    if isinstance(inner, list):
                        visit([item for item in inner if isinstance(item, ast.stmt)])
                        for handler in inner:
                            if isinstance(handler, ast.ExceptHandler):
                                visit(handler.body)

    visit(tree.body)
    return names
