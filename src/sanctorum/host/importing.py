"""Import an Enclave subclass named ``module:Class`` (``sanctorum host --mock``)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import TypeAlias

from sanctorum.common.errors import EnclaveLoadError
from sanctorum.common.suggest import did_you_mean
from sanctorum.enclave.base import Enclave

EnclaveClass: TypeAlias = type[Enclave]


def import_enclave_class(spec: str) -> type[Enclave]:
    """The Enclave subclass ``spec`` (``module:Class``, ``Class`` may be dotted) names, its
    module imported from the current directory or ``PYTHONPATH``; :class:`EnclaveLoadError`
    naming the module and attribute if it cannot be had."""
    module_name, colon, attribute = spec.partition(":")
    module_name, attribute = module_name.strip(), attribute.strip()
    if not colon or not module_name or not attribute:
        raise EnclaveLoadError(
            f"--mock {spec!r} is not module:Class: name the module (importable from the "
            "current directory or PYTHONPATH) and the Enclave subclass in it, for example "
            "--mock my_enclave:MyEnclave"
        )
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (
            module_name == error.name or module_name.startswith(error.name + ".")
        ):
            raise EnclaveLoadError(
                f"no module {module_name!r} (for --mock {spec}): looked in the current "
                f"directory {here} and PYTHONPATH; run from the directory that holds it, or "
                "add that directory to PYTHONPATH"
            ) from None
        raise EnclaveLoadError(
            f"importing the module {module_name!r} (for --mock {spec}) failed: {error}; "
            "install what it imports"
        ) from None
    except Exception as error:  # the module's own code raised while importing
        raise EnclaveLoadError(
            f"importing the module {module_name!r} (for --mock {spec}) raised "
            f"{type(error).__name__}: {error}"
        ) from error
    found: object = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise EnclaveLoadError(
                f"the module {module_name!r} ({getattr(module, '__file__', None) or module_name})"
                f" has no attribute {attribute!r}{did_you_mean(part, dir(found))} (for --mock "
                f"{spec}): name the Enclave subclass it defines"
            ) from None
    if not (isinstance(found, type) and issubclass(found, Enclave)):
        what = (
            f"the class {found.__qualname__}"
            if isinstance(found, type)
            else f"a {type(found).__name__}"
        )
        raise EnclaveLoadError(
            f"{attribute!r} in the module {module_name!r} is {what}, not an Enclave subclass "
            f"(for --mock {spec}): name a class that derives from sanctorum.Enclave"
        )
    return found
