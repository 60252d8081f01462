"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
SHARED_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


def vector_file(relative: str) -> Path:
    """A third-party vector file: the shared copy when present, else the committed one."""
    shared = SHARED_VECTORS / relative
    if shared.exists():
        return shared
    return DATA / Path(relative).name


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA
