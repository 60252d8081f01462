"""Progress for the ``sanctorum`` command: a spinner on standard error naming the step a long
command is at (bundling, signing, rendering the Gramine manifest, generating a key, fetching
collateral) and how long it has taken.

It is shown only when standard error is a terminal, as rich's ``Console.is_terminal`` decides
(``TTY_COMPATIBLE=1`` or a non-empty ``FORCE_COLOR`` force it, ``TTY_COMPATIBLE=0`` turns it
off); otherwise nothing at all is written, so piped, redirected and captured output is exactly
the command's own. On a terminal the spinner is transient: it is erased when the step is done,
so what stays on the screen is the same output as without it.

Only the command uses rich: library code takes a
:data:`~sanctorum.common.progress.ProgressCallback`, which :func:`show_progress` provides.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sanctorum.common.progress import ProgressCallback, no_progress

if TYPE_CHECKING:
    from rich.console import Console


def stderr_console() -> Console:
    """The console progress is drawn on: standard error, so standard output stays the
    command's result (constraints, hashes) for scripts to read."""
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def show_progress(title: str, console: Console | None = None) -> Iterator[ProgressCallback]:
    """Show ``title`` with a spinner while the block runs, on ``console`` (default: standard
    error) if it is a terminal; yield the callback that names each step as it begins (the step
    replaces the title: kept short, it fits the line).

    Not a terminal: nothing is drawn and the callback ignores its steps. The callback is
    thread-safe, and once the block has ended it ignores its steps too (a collateral fetcher
    keeps it, and fetches again while the web host serves).
    """
    console = console if console is not None else stderr_console()
    if not console.is_terminal:
        yield no_progress
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    display = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),  # paths may hold [brackets]
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = display.add_task(title, total=None)
    lock = threading.Lock()
    showing = True

    def step(description: str) -> None:
        with lock:
            if showing:
                display.update(task, description=description, refresh=True)

    with display:
        try:
            yield step
        finally:
            with lock:
                showing = False
