"""Medians after a warm-up, and the Markdown table of medians and ratios.

The per-issue scripts in ``benchmarks/`` time several methods in one
process (``measure_interleaved``); ``tilewise bench`` times each method in
its own process (:mod:`tilewise.bench.runner`) with the same :class:`Timing`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """The seconds of each timed run of one method."""

    label: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def seconds(run: Callable[[], object]) -> float:
    """Wall-clock seconds one call of ``run`` takes."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(label: str, run: Callable[[], object], repeats: int = 5, warmup: int = 1) -> Timing:
    """Time ``run`` ``repeats`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    timing = Timing(label, [seconds(run) for _ in range(repeats)])
    print(f"  {label:<44} median {timing.median:8.4f} s", flush=True)
    return timing


def measure_interleaved(
    runs: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1
) -> list[Timing]:
    """Time every entry of ``runs`` ``repeats`` times, taking turns.

    On a shared machine a burst of load from elsewhere then slows every
    method's round alike instead of one method's whole series.
    """
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            times[label].append(seconds(run))
    timings = [Timing(label, values) for label, values in times.items()]
    for timing in timings:
        print(f"  {timing.label:<44} median {timing.median:8.4f} s", flush=True)
    return timings


def repeats_for(warmup_seconds: float, most: int, least: int, budget: float) -> int:
    """Timed runs after a warm-up that took ``warmup_seconds``: ``most``, fewer for slow methods.

    Slow methods get as many runs as fit in ``budget`` seconds, never fewer
    than ``least``: a suite whose slowest alternative is 200x slower than the
    fastest finishes, and every median still has several runs.

    >>> repeats_for(0.01, most=5, least=3, budget=10.0)
    5
    >>> repeats_for(4.0, most=5, least=3, budget=10.0)
    3
    """
    if warmup_seconds <= 0:
        return most
    return max(least, min(most, int(budget / warmup_seconds)))


def table(title: str, timings: list[Timing], reference: Timing, megapixels: float) -> str:
    """A Markdown table: median, ratio to ``reference`` (the plain whole-array call), MP/s."""
    lines = [
        f"### {title}",
        "",
        f"| method | median (s) | time / {reference.label} | megapixels/s |",
        "|---|---:|---:|---:|",
    ]
    lines.extend(
        f"| {t.label} | {t.median:.4f} | {t.median / reference.median:.2f}x "
        f"| {megapixels / t.median:.0f} |"
        for t in timings
    )
    return "\n".join(lines)
