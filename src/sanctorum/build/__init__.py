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

__all__ = [
    "BuildResult",
    "build",
    "collect",
    "generate_key",
    "load_key",
    "measure_project",
    "sign",
]
