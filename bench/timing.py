"""Interleaved timing shared by the benchmarks: candidates and their floors in the same rounds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved(
    candidates: Mapping[str, Callable[[], object]], rounds: int, batch: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Seconds per call of each candidate, wall clock and this thread's CPU time, one figure
    per round; in every round each candidate runs ``batch`` times, in an order that rotates
    from round to round, after a warm-up of one batch each."""
    names = list(candidates)
    for name in names:  # warm-up: caches, the static-static DH term, the allocator
        for _ in range(batch):
            candidates[name]()
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in names}
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            function = candidates[name]
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(batch):
                function()
            times[name][0].append((time.perf_counter() - wall) / batch)
            times[name][1].append((time.thread_time() - cpu) / batch)
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median of the per-round ratios (noise common to a round cancels)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))
