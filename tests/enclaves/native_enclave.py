"""An enclave with a native dependency (numpy), for the tests of measured native code."""

from __future__ import annotations

import importlib

import numpy as np

from sanctorum import Enclave


class NumpyEnclave(Enclave):
    """``mean <floats>`` answers their mean and norm with numpy; ``import <module>`` imports
    a module when asked, so tests can change files between the start and an import."""

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        command, _, argument = data.partition(b" ")
        if command == b"mean":
            values = np.array([float(x) for x in argument.split()], dtype=np.float64)
            return f"{values.mean():.6f} {np.linalg.norm(values):.6f}".encode()
        if command == b"import":
            module = importlib.import_module(argument.decode())
            return str(getattr(module, "__file__", None)).encode()
        raise ValueError(f"unknown command {command!r}")
