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

from sanctorum.common.native import RUNTIME_PACKAGES

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

    def get_source(self, fullname: str) -> str:
        """The module's measured source, so tracebacks show the enclave's lines."""
        return self._source.decode("utf-8", "replace")


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


class MeasuredOnlyFinder(importlib.abc.MetaPathFinder):
    """Refuses every import that is neither in the bundle (found before this finder), the
    standard library, nor Sanctorum's runtime, so an enclave never runs code from the host's
    disk that the code hash does not cover."""

    def __init__(self, allowed: frozenset[str] = RUNTIME_PACKAGES) -> None:
        self._allowed = allowed | frozenset(sys.stdlib_module_names)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        top = fullname.partition(".")[0]
        if top in self._allowed:
            return None  # the usual finders load it from the runtime's installation
        raise ModuleNotFoundError(
            f"the enclave imports {fullname!r}, which is not in its bundle: an enclave runs only "
            "measured code, so add the module to [enclave].sources, or its distribution to "
            "[enclave].dependencies, and build again",
            name=fullname,
        )

    def install(self) -> None:
        """Put this finder right after the bundle's own finder."""
        position = next(
            (i + 1 for i, finder in enumerate(sys.meta_path) if isinstance(finder, BundleFinder)),
            0,
        )
        sys.meta_path.insert(position, self)
