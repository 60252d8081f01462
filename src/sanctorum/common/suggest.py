"""Suggestions for misspelt names in error messages ("did you mean …?")."""

from __future__ import annotations

from collections.abc import Iterable


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``name``, if one is close; private names (``_x``) only for a
    private ``name``."""
    import difflib  # only when a name is wrong: kept out of the enclave process's start

    private = name.startswith("_")
    pool = [c for c in candidates if private or not c.startswith("_")]
    close = difflib.get_close_matches(name, pool, n=1)
    return close[0] if close else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or nothing."""
    guess = closest(name, candidates)
    return f" (did you mean {guess!r}?)" if guess else ""
