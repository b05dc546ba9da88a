"""Shared timing and reporting for the benchmark scripts: medians after a warm-up, ratios."""

from __future__ import annotations

import importlib.metadata
import os
import platform
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
    seconds: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[label].append(time.perf_counter() - start)
    timings = [Timing(label, times) for label, times in seconds.items()]
    for timing in timings:
        print(f"  {timing.label:<44} median {timing.median:8.4f} s", flush=True)
    return timings


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's guess elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity), which is what ``nproc`` prints."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine(packages: tuple[str, ...] = ("numpy",)) -> str:
    """One line naming the CPUs, Python and the versions of ``packages``."""
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in packages)
    return f"nproc {usable_cpus()}, {cpu_model()}; Python {platform.python_version()}, {versions}"


class LoadElsewhere:
    """CPU time taken by other processes (and the hypervisor) while the block ran.

    The share is of all CPUs over the block's wall time: 0.5 on two CPUs means
    one CPU was busy elsewhere throughout. Linux only (/proc/stat); None elsewhere.
    """

    share: float | None = None
    _start: tuple[float, float, float] | None = None

    def __enter__(self) -> LoadElsewhere:
        self._start = _cpu_counters()
        return self

    def __exit__(self, *exc_info: object) -> None:
        end = _cpu_counters()
        if self._start is None or end is None:
            return
        total = end[0] - self._start[0]
        busy = end[1] - self._start[1]
        own = end[2] - self._start[2]
        self.share = max(0.0, busy - own) / total if total > 0 else None


def _cpu_counters() -> tuple[float, float, float] | None:
    """(all CPU seconds, busy CPU seconds, this process's CPU seconds) since boot."""
    try:
        with open("/proc/stat", encoding="utf-8") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    total = sum(fields[:8]) / tick
    busy = total - (fields[3] + fields[4]) / tick
    own = os.times()
    return total, busy, own.user + own.system
