"""Benchmark figures as data, and the file ``bench/run.py`` writes them to: bench/results.json.

The file is a JSON list of figures, one object each::

    {"bench": "persistence",                      which bench produced it (its report replaces
                                                   every figure of the same bench, nothing else)
     "figure": "persistence/map/commit/1k",       unique name, prefixed by the bench
     "unit": "s",                                 of value, min and floor
     "value": 0.00071,                            ours: the median of the rounds
     "min": 0.00069,                              ours: the fastest round (null if not measured)
     "rounds": 7,                                 how many rounds value and min are taken from
     "floor": 2.1e-06,                            the floor's median, or the reference the goal
                                                   compares with; null if none
     "ratio": 340.0,                              as "ratio_of" says; null if no floor
     "ratio_of": "value/floor",                   "value/floor" (times the floor: lower is
                                                   better, but for a rate such as mails/s a
                                                   share of the floor's) or "floor/value"
                                                   (share of the floor's speed: higher is
                                                   better)
     "goal": "flat in map size: ...",             the target, in words; null: for information
     "met": false,                                whether the goal is met; null if no goal
     "measured": "2025-01-01T12:00:00+00:00"}     when the bench ran (UTC)

A bench adds itself by returning :class:`Figure` objects from its report function (in a
:class:`Report`) and passing them to :func:`write_results`; figures of other benches already in
the file are kept, so benches can be run and recorded one at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

RESULTS_FILE = Path(__file__).with_name("results.json")


@dataclass(frozen=True)
class Figure:
    """One measured figure, beside its floor."""

    bench: str
    figure: str
    value: float
    floor: float | None = None
    ratio: float | None = None
    ratio_of: Literal["value/floor", "floor/value"] | None = None
    goal: str | None = None
    met: bool | None = None
    min: float | None = None
    rounds: int | None = None
    unit: str = "s"
    measured: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


@dataclass
class Report:
    """What a report function returns: its figures; ``ok`` if every goal among them is met."""

    figures: list[Figure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(figure.met is not False for figure in self.figures)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure


def write_results(figures: Iterable[Figure], path: Path = RESULTS_FILE) -> None:
    """Record ``figures`` in ``path``: they replace every figure of their benches there and
    join those of other benches (an unreadable file is started afresh)."""
    new = [asdict(figure) for figure in figures]
    benches = {entry["bench"] for entry in new}
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError):
        existing = []
    if not isinstance(existing, list):
        existing = []
    kept = [
        entry for entry in existing if isinstance(entry, dict) and entry.get("bench") not in benches
    ]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(kept + new, indent=2, ensure_ascii=False) + "\n")
    temporary.replace(path)  # a reader never sees half a file


def summary(figures: Iterable[Figure]) -> str:
    """One table of every figure that has a goal: what was measured, against what, and
    whether the goal is met."""
    rows = [("figure", "value", "floor", "ratio", "goal", "")]
    for figure in figures:
        if figure.goal is None:
            continue
        rows.append(
            (
                figure.figure,
                _amount(figure.value, figure.unit),
                "" if figure.floor is None else _amount(figure.floor, figure.unit),
                "" if figure.ratio is None else _ratio(figure),
                figure.goal,
                "met" if figure.met else "MISSED",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, [*widths, 0], strict=True)).rstrip()
        for row in rows
    )


def _amount(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if unit != "s":
        return f"{value:,.0f} {unit}"
    for scale, name in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if value >= scale:
            return f"{value / scale:.3g} {name}"
    return f"{value / 1e-9:.3g} ns"


def _ratio(figure: Figure) -> str:
    assert figure.ratio is not None
    if figure.ratio_of == "floor/value" or figure.unit.endswith("/s"):  # a share of a speed
        return f"{figure.ratio:.0%} of floor"
    return f"{figure.ratio:.2f}x"
