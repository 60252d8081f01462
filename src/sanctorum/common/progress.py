"""Progress reports from long steps: bundling, signing, generating keys, fetching collateral.

Library code that may take a while takes an optional :data:`ProgressCallback` and calls it with
a short description (``"signing the bundle"``) as each long step begins. It draws nothing
itself and imports no display library: the ``sanctorum`` command passes a callback that shows a
spinner on a terminal (:mod:`sanctorum.cli_progress`); other callers may log the steps, or pass
nothing. Requests to a key derivation service, when the host makes them, report the same way.

A callback may be called from another thread than the one that passed it (collateral is
fetched while the enclave starts), and after the step that passed it has finished (collateral
is fetched again when it expires): it must be thread-safe and harmless when late.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

ProgressCallback: TypeAlias = Callable[[str], None]
"""Called with a short description of each long step as it begins."""


def no_progress(step: str) -> None:
    """The callback used when none is given: ignores ``step``."""
