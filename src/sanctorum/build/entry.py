"""The build's check of ``entry``: the module is one of the bundle's files and binds the class.

Checked from the source (its syntax tree), not by importing it: a build never runs enclave code.
A name the module binds at top level in any way — a class, an import, an assignment — passes;
whether it is an Enclave subclass is checked when the enclave loads.
"""

from __future__ import annotations

import ast
import difflib

from sanctorum.common.bundle import CODE_DIR, DEPS_DIR, EnclaveConfig
from sanctorum.common.errors import BundleError


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
            f"the bundle's sources ({', '.join(modules) or 'none'}){_did_you_mean(module, modules)}"
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
            f"{module!r} defines no {name!r}{_did_you_mean(name, sorted(bound))}; fix entry in "
            "enclave.toml"
        )


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        else:  # a name bound under if/try at top level still counts
            for child in ast.walk(node):
                if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(child.name)
                elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                    names.add(child.id)
                elif isinstance(child, ast.alias):
                    names.add((child.asname or child.name).split(".")[0])
    return names


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
