"""Imports an enclave's modules from the bundle bytes the enclave measured, not from disk.

Reading the files again from the host's disk after measuring them would let the host swap code
between the check and the import; importing from the measured bytes closes that gap.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

ORIGIN_PREFIX = "<enclave bundle>/"


class _BundleLoader(importlib.abc.Loader):
    def __init__(self, source: bytes, origin: str) -> None:
        self._source = source
        self._origin = origin

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        code = compile(self._source, self._origin, "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102  (this is what importing a module does)


class BundleFinder(importlib.abc.MetaPathFinder):
    """Finds modules among a bundle's Python files (paths relative to the import root)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self._files = {path: content for path, content in files.items() if path.endswith(".py")}

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        relative = fullname.replace(".", "/")
        for candidate, is_package in ((f"{relative}/__init__.py", True), (f"{relative}.py", False)):
            source = self._files.get(candidate)
            if source is not None:
                origin = ORIGIN_PREFIX + candidate
                spec = importlib.util.spec_from_loader(
                    fullname, _BundleLoader(source, origin), origin=origin, is_package=is_package
                )
                return spec
        return None

    def install(self) -> None:
        """Put this finder first, so bundled modules win over installed ones of the same name."""
        sys.meta_path.insert(0, self)
