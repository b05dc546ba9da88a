"""The figures of one run of the suite, and the settings it ran with."""

from __future__ import annotations

from dataclasses import dataclass, field

from tilewise._cpus import available_cpus

#: Share of all CPUs other processes may take during a method's runs before
#: the method is measured again (see :func:`benchmarks.suite.run_suite`).
QUIET = 0.25


@dataclass(frozen=True)
class Settings:
    """How many timed runs each method gets, and the file workload's size."""

    quick: bool
    workers: int
    file_gib: float
    most: int  # timed runs of a fast method
    least: int  # timed runs of a slow one (see timing.repeats_for)
    budget: float  # seconds of timed runs a slow method is given
    timeout: float  # seconds a runner may take before it is stopped
    attempts: int  # runners per method at most, while other processes keep the CPUs busy

    @classmethod
    def make(cls, quick: bool, workers: int | None, file_gib: float | None) -> Settings:
        workers = workers or available_cpus()
        if quick:
            return cls(True, workers, file_gib or 1 / 32, 5, 1, 0.5, 120.0, attempts=1)
        return cls(False, workers, file_gib or 1.0, 25, 3, 5.0, 1800.0, attempts=3)


@dataclass(frozen=True)
class Result:
    """One method's figures on one workload, or why there are none."""

    workload: str
    method: str
    label: str
    tilewise: bool
    seconds: tuple[float, ...] = ()
    warmup: float | None = None
    pinned: int | None = None  # bytes, peak over the runs
    rss: int | None = None
    processes: int | None = None
    elsewhere: float | None = None  # share of all CPUs other processes took meanwhile
    attempts: int = 1  # runners started for these figures (see suite.QUIET)
    setup: dict[str, float] = field(default_factory=dict)
    check: str = ""
    error: str | None = None

    @property
    def median(self) -> float | None:
        if self.error is not None or not self.seconds:
            return None
        ordered = sorted(self.seconds)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    @property
    def failed(self) -> bool:
        return self.error is not None or self.check != "ok"
