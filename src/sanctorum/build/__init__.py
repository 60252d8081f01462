"""Build tools: bundling, measuring and signing enclaves (``sanctorum build/measure/sign``)."""

from sanctorum.build.builder import (
    BuildResult,
    build,
    collect,
    generate_key,
    load_key,
    measure_project,
    sign,
)
from sanctorum.build.sgx_signing import (
    SgxKeyFile,
    Sigstruct,
    generate_sgx_key,
    load_sgx_key,
    mrsigner,
    read_sigstruct,
)

__all__ = [
    "BuildResult",
    "SgxKeyFile",
    "Sigstruct",
    "build",
    "collect",
    "generate_key",
    "generate_sgx_key",
    "load_key",
    "load_sgx_key",
    "measure_project",
    "mrsigner",
    "read_sigstruct",
    "sign",
]
