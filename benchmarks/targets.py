"""Every target the issues set, judged from one run of the suite, in one table.

Each row names the target, tilewise's figure, the best alternative's, the
physical reference (the whole-array call, or the plain loop), the ratio the
target is about, and whether it is met. The targets were set for the full
sizes on 2 cores; a row measured at another size says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from benchmarks.methods import METHODS
from benchmarks.results import QUIET, Result, Settings
from benchmarks.workloads import FIRST_WAVE_SECONDS, Workload

MIB = 2**20
METHOD_NAMES = {key: method.name for key, method in METHODS.items()}
#: The size the product's targets and issue 5 set the file targets for.
TARGET_FILE_GIB = 4.0


@dataclass(frozen=True)
class Verdict:
    source: str  # the issue that set the target, or "product": the product's own
    target: str
    tilewise: str
    alternative: str
    reference: str
    ratio: str
    met: str


class Figures:
    """The suite's results, looked up by workload and method."""

    def __init__(self, results: Iterable[Result], workloads: Iterable[Workload]) -> None:
        self.results = {(r.workload, r.method): r for r in results}
        self.workloads = {w.name: w for w in workloads}

    def get(self, workload: str, method: str) -> Result | None:
        """The result if it was measured and checked; None otherwise."""
        result = self.results.get((workload, method))
        return None if result is None or result.failed else result

    def reference(self, workload: str) -> Result | None:
        found = self.workloads.get(workload)
        return None if found is None else self.get(workload, found.reference)

    def alternatives(self, workload: str) -> list[Result]:
        found = self.workloads.get(workload)
        if found is None:
            return []
        return [
            r
            for r in self.results.values()
            if r.workload == workload
            and not r.tilewise
            and r.method != found.reference
            and not r.failed
        ]

    def fastest_alternative(self, workload: str) -> Result | None:
        return min(self.alternatives(workload), key=_median, default=None)

    def megapixels_per_second(self, result: Result) -> float:
        return self.workloads[result.workload].megapixels / _median(result)


def _median(result: Result) -> float:
    assert result.median is not None
    return result.median


def _seconds(result: Result | None) -> str:
    return "not measured" if result is None else f"{_median(result):.3f} s"


def _named(result: Result | None, text: str) -> str:
    return "not measured" if result is None else f"{result.label}: {text}"


def _pinned(result: Result | None) -> str:
    if result is None or result.pinned is None:
        return "not measured"
    return f"{result.pinned / MIB:.0f} MiB pinned"


def _met(ok: bool, *figures: Result | None, note: str = "") -> str:
    """ "yes" or "no", with a note on the size, and on the load elsewhere the figures ran under.

    Time figures measured while other processes took more than :data:`QUIET`
    of the CPUs are named: a ratio between a disturbed figure and a quiet
    one says more about the machine than about the methods.
    """
    notes = [note] if note else []
    busy = [r for r in figures if r is not None and (r.elsewhere or 0.0) > QUIET]
    if busy:
        worst = max(r.elsewhere or 0.0 for r in busy)
        names = ", ".join(METHOD_NAMES.get(r.method, r.method) for r in busy)
        notes.append(f"{names} ran while other processes took up to {worst:.0%} of the CPUs")
    return ("yes" if ok else "**no**") + (f" ({'; '.join(notes)})" if notes else "")


def judge(
    results: Iterable[Result], workloads: Iterable[Workload], settings: Settings
) -> list[Verdict]:
    """One verdict per target whose figures the run measured."""
    figures = Figures(results, workloads)
    verdicts = []
    for target in TARGETS:
        verdict = target(figures, settings)
        if verdict is not None:
            verdicts.append(verdict)
    return verdicts


# --- time against the whole-array call -----------------------------------------------------


def _time_target(
    source: str,
    text: str,
    workload: str,
    method: str,
    *,
    at_most: float | None = None,
    at_least: float | None = None,
) -> Callable[[Figures, Settings], Verdict | None]:
    """A target on tilewise's time over the reference's (``at_most``) or speed-up (``at_least``)."""

    def judge_one(figures: Figures, settings: Settings) -> Verdict | None:
        tiled, reference = figures.get(workload, method), figures.reference(workload)
        if tiled is None or reference is None:
            return None
        alternative = figures.fastest_alternative(workload)
        if at_most is not None:
            ratio = _median(tiled) / _median(reference)
            ratio_text, ok = f"{ratio:.2f}x the reference's time", ratio <= at_most
        else:
            assert at_least is not None
            ratio = _median(reference) / _median(tiled)
            ratio_text, ok = f"{ratio:.2f}x the reference's speed", ratio >= at_least
        return Verdict(
            source,
            text,
            _named(tiled, _seconds(tiled)),
            _named(alternative, f"{_seconds(alternative)}"),
            _named(reference, _seconds(reference)),
            ratio_text,
            _met(ok, tiled, reference),
        )

    return judge_one


def _dask_backend(
    workload: str, versus: str, limit: float
) -> Callable[[Figures, Settings], Verdict | None]:
    """Issue 6: the dask backend against ``versus`` on the same kind of cluster."""
    what = {
        "tilewise-processes": f"within {limit}x of the processes backend",
        "dask-distributed": "no slower than dask.array map_overlap on the same cluster",
    }[versus]

    def judge_one(figures: Figures, settings: Settings) -> Verdict | None:
        tiled, other = figures.get(workload, "tilewise-dask"), figures.get(workload, versus)
        reference = figures.reference(workload)
        if tiled is None or other is None:
            return None
        ratio = _median(tiled) / _median(other)
        size = figures.workloads[workload].size
        other_name = "map_overlap" if versus == "dask-distributed" else "processes"
        return Verdict(
            "#6",
            f"{workload}, {size}: dask backend (LocalCluster of {settings.workers}) {what}",
            _named(tiled, _seconds(tiled)),
            _named(other, _seconds(other)),
            _named(reference, _seconds(reference)),
            f"{ratio:.2f}x the time of {other_name}",
            _met(ratio <= limit, tiled, other),
        )

    return judge_one


# --- memory --------------------------------------------------------------------------------


def _square_memory(figures: Figures, settings: Settings) -> Verdict | None:
    """Issue 3: the processes run pins at most input + output + 100 MB per worker."""
    tiled, reference = figures.get("square", "tilewise-processes"), figures.reference("square")
    if tiled is None or tiled.pinned is None:
        return None
    image = figures.workloads["square"].pixels * 4
    budget = 2 * image + 100 * 10**6 * settings.workers
    others = [r for r in figures.alternatives("square") if r.method in ("joblib", "dask-processes")]
    return Verdict(
        "#3",
        f"square, {figures.workloads['square'].size}: processes pins at most input + output "
        f"+ 100 MB per worker = {budget / MIB:.0f} MiB",
        _named(tiled, _pinned(tiled)),
        "; ".join(_named(r, _pinned(r)) for r in others) or "not measured",
        _named(reference, _pinned(reference)),
        f"{tiled.pinned / budget:.2f} of the budget",
        _met(tiled.pinned <= budget),
    )


def _file_note(figures: Figures) -> str:
    gib = figures.workloads["file"].pixels * 4 / 2**30
    return "" if abs(gib - TARGET_FILE_GIB) < 0.01 else f"measured on {gib:.2f} GiB"


def _file_memory(
    source: str, limit_bytes: float, limit_text: str, methods: tuple[str, ...]
) -> Callable[[Figures, Settings], Verdict | None]:
    def judge_one(figures: Figures, settings: Settings) -> Verdict | None:
        rows = [r for m in methods if (r := figures.get("file", m)) is not None and r.pinned]
        if not rows:
            return None
        worst = max(rows, key=lambda r: r.pinned or 0)
        assert worst.pinned is not None
        alternative = figures.get("file", "dask-zarr-threads")
        return Verdict(
            source,
            f"file to file, {TARGET_FILE_GIB:g} GiB 3x3 filter: pins at most {limit_text} "
            f"(the worst of {len(rows)} tilewise local runs)",
            _named(worst, _pinned(worst)),
            _named(alternative, _pinned(alternative)),
            _named(figures.reference("file"), _pinned(figures.reference("file"))),
            f"{worst.pinned / limit_bytes:.2f} of the limit",
            _met(worst.pinned <= limit_bytes, note=_file_note(figures)),
        )

    return judge_one


# --- rates ---------------------------------------------------------------------------------


def _file_rate(figures: Figures, settings: Settings) -> Verdict | None:
    """The product's target: .npy -> .npy at twice dask's from_zarr/map_overlap/to_zarr rate."""
    rows = [r for m in ("tilewise-threads", "tilewise-processes") if (r := figures.get("file", m))]
    dask = figures.get("file", "dask-zarr-threads")
    if not rows or dask is None:
        return None
    best = max(rows, key=figures.megapixels_per_second)
    rate, dask_rate = figures.megapixels_per_second(best), figures.megapixels_per_second(dask)
    reference = figures.reference("file")
    return Verdict(
        "product, #5",
        f"file to file, {TARGET_FILE_GIB:g} GiB .npy -> .npy 3x3 filter: at least 2x the "
        "megapixels/s of dask from_zarr.map_overlap.to_zarr on threads",
        _named(best, f"{rate:.0f} MP/s"),
        _named(dask, f"{dask_rate:.0f} MP/s"),
        _named(reference, f"{figures.megapixels_per_second(reference):.0f} MP/s")
        if reference
        else "not measured",
        f"{rate / dask_rate:.2f}x dask's rate",
        _met(rate >= 2 * dask_rate, best, dask, note=_file_note(figures)),
    )


def _pixelwise_per_pixel(figures: Figures, settings: Settings) -> Verdict | None:
    """Issue 4: pixelwise at least 100x faster per pixel than the pure-Python loop."""
    kernel = figures.get("slope-pixelwise", "pixelwise-call")
    loop = figures.reference("slope-python")
    if kernel is None or loop is None:
        return None
    ratio = figures.megapixels_per_second(kernel) / figures.megapixels_per_second(loop)
    prange = figures.get("slope-pixelwise", "numba-prange")
    return Verdict(
        "#4",
        "slope: pixelwise at least 100x faster per pixel than the pure-Python double loop",
        _named(kernel, f"{figures.megapixels_per_second(kernel):.0f} MP/s"),
        _named(prange, f"{figures.megapixels_per_second(prange):.0f} MP/s" if prange else ""),
        _named(loop, f"{figures.megapixels_per_second(loop):.2f} MP/s"),
        f"{ratio:.0f}x the loop's rate",
        _met(ratio >= 100, kernel, loop),
    )


def _overhead(method: str, limit_ms: float) -> Callable[[Figures, Settings], Verdict | None]:
    """The product's target: per-tile overhead, (tiled time - whole-array time) / tiles."""

    def judge_one(figures: Figures, settings: Settings) -> Verdict | None:
        tiled, reference = figures.get("overhead", method), figures.reference("overhead")
        if tiled is None or reference is None:
            return None
        workload = figures.workloads["overhead"]
        tiles = workload.blocks

        def per_tile(result: Result) -> float:
            return (_median(result) - _median(reference)) / tiles * 1e3

        alternative = figures.fastest_alternative("overhead")
        backend = method.removeprefix("tilewise-")
        return Verdict(
            "product",
            f"per-tile overhead on {backend}: at most {limit_ms} ms ({tiles} tiles of 64x64)",
            _named(tiled, f"{per_tile(tiled):.4f} ms per tile"),
            _named(alternative, f"{per_tile(alternative):.4f} ms per block")
            if alternative
            else "not measured",
            _named(reference, _seconds(reference)),
            f"{per_tile(tiled) / limit_ms:.2f} of the limit",
            _met(per_tile(tiled) <= limit_ms, tiled, reference),
        )

    return judge_one


# --- the first wave ------------------------------------------------------------------------


def _first_wave(figures: Figures, settings: Settings) -> Verdict | None:
    """The default output costs no wave of its own: within 1.1x of ``out=`` an array.

    Both run 4 tiles of 0.5 s on 4 threads, which at best take 0.5 s in all
    (the whole-array call, one sleep, is the reference). A default output
    whose first tile runs alone, to learn the result's dtype, takes 1.0 s.
    """
    default = figures.get("first-wave", "tilewise-threads")
    into = figures.get("first-wave", "tilewise-threads-out")
    if default is None or into is None:
        return None
    workload = figures.workloads["first-wave"]
    workers = workload.workers_for(settings.workers)
    ratio = _median(default) / _median(into)
    reference = figures.reference("first-wave")
    return Verdict(
        "#15",
        f"first-wave, {workload.blocks} tiles of {FIRST_WAVE_SECONDS:g} s on threads ({workers}): "
        "the default output within 1.1x of out= a preallocated array",
        _named(default, _seconds(default)),
        _named(into, _seconds(into)),
        _named(reference, _seconds(reference)),
        f"{ratio:.2f}x the time of out=",
        _met(ratio <= 1.1, default, into),
    )


TARGETS: list[Callable[[Figures, Settings], Verdict | None]] = [
    _time_target(
        "#2",
        "square: threads within 1.5x of the whole-array call",
        "square",
        "tilewise-threads",
        at_most=1.5,
    ),
    _time_target(
        "#2",
        "gaussian: threads at least 1.8x faster than the whole-array call",
        "gaussian",
        "tilewise-threads",
        at_least=1.8,
    ),
    _time_target(
        "#3",
        "pure-Python slope: processes at least 1.9x faster than the serial loop",
        "slope-python",
        "tilewise-processes",
        at_least=1.9,
    ),
    _time_target(
        "#3",
        "square: processes within 4x of the whole-array call",
        "square",
        "tilewise-processes",
        at_most=4.0,
    ),
    _square_memory,
    _pixelwise_per_pixel,
    _time_target(
        "#4",
        "slope: pixelwise no slower than vectorised numpy",
        "slope-pixelwise",
        "pixelwise-call",
        at_most=1.0,
    ),
    _file_rate,
    _file_memory(
        "#5", 600e6, "600 MB", ("tilewise-threads", "tilewise-processes", "tilewise-zarr-threads")
    ),
    _file_memory("product", 400 * MIB, "400 MiB", ("tilewise-threads", "tilewise-processes")),
    _overhead("tilewise-threads", 0.03),
    _overhead("tilewise-processes", 0.05),
    _dask_backend("slope-python", "tilewise-processes", 1.3),
    _dask_backend("slope-python", "dask-distributed", 1.0),
    _dask_backend("gaussian", "tilewise-processes", 1.3),
    _dask_backend("gaussian", "dask-distributed", 1.0),
    _first_wave,
]
