"""Benchmark plans, result rows and the statistics every section of ``make bench`` uses."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    large_rows: int
    tiny_repeats: int
    large_repeats: int
    reader_repeats: int
    skip_repeats: int
    view_counts: tuple[int, ...]
    parse_repeats: int
    parse_repeats_largest: int


FULL = Plan(1_000_000, 30, 9, 3, 5, (10, 100, 1_000, 5_000), 9, 3)
QUICK = Plan(100_000, 10, 3, 1, 3, (10, 100, 1_000), 3, 3)


@dataclass
class Line:
    """One row of the result table."""

    number: str
    measurement: str
    ours: str
    theirs: str
    ratio: str
    target: str = ""
    verdict: str = ""


@dataclass
class Report:
    lines: list[Line] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, line: Line) -> None:
        self.lines.append(line)
        print(f"  {line.measurement}: {line.ours} vs {line.theirs} -> {line.ratio} {line.verdict}".rstrip(), flush=True)


# ---------------------------------------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def secs(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def interleaved(
    alternatives: dict[str, Callable[[], float]],
    repeats: int,
    warmup: int = 1,
    settle: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """Run each alternative ``repeats`` times, one of each per repetition, rotating which goes first.

    Each callable returns the seconds it measured (so it can leave out its own setup). ``settle`` runs, untimed,
    before each alternative, e.g. a CHECKPOINT so that no run pays for the writes of the one before.
    """
    names = list(alternatives)

    def run(name: str) -> float:
        if settle is not None:
            settle()
        return alternatives[name]()

    for _ in range(warmup):
        for name in names:
            run(name)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repetition in range(repeats):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(run(name))
    return samples


def ratio_of_medians(ours: list[float], theirs: list[float]) -> float:
    return median(ours) / median(theirs)


def added(ours: list[float], theirs: list[float]) -> float:
    return median(ours) - median(theirs)
