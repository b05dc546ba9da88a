"""Shared timing and reporting for the benchmark scripts: medians after a warm-up, ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    label: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def measure(label: str, run: Callable[[], object], repeats: int = 5, warmup: int = 1) -> Timing:
    """Time ``run`` ``repeats`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    timing = Timing(label, seconds)
    print(f"  {label:<44} median {timing.median:8.4f} s", flush=True)
    return timing


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
