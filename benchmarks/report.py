"""The suite's report: a Markdown table per workload, the targets table, a plot, the raw figures.

``results.md`` is what the README and ``benchmarks/README.md`` quote;
``results.json`` keeps every run's seconds and memory for another look;
``bench.png`` shows time against the best plain call and peak memory,
method by method, workload by workload.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.machine import machine
from benchmarks.methods import METHODS
from benchmarks.results import QUIET, Result, Settings
from benchmarks.targets import judge
from benchmarks.workloads import Workload

MIB = 2**20
PACKAGES = ("numpy", "scipy", "numba", "dask", "distributed", "scikit-image", "joblib", "zarr")
PLOT = "bench.png"


def write_side_by_side(
    out: Path,
    lines: list[str],
    report: dict[str, Any],
    machine_line: str,
    runs: int,
    started: float,
) -> None:
    """A side-by-side benchmark's ``results.md`` and ``results.json``, its lines also printed.

    ``machine_line`` says what ran it; ``started`` is when, by ``time.perf_counter()``.
    """
    lines = [
        *lines,
        f"- Machine: {machine_line}.",
        f"- {runs} timed runs of each method, medians; the run took "
        f"{(time.perf_counter() - started) / 60:.1f} min.",
    ]
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print("\n".join(lines))


def write(
    out: Path,
    *,
    workloads: Sequence[Workload],
    results: Sequence[Result],
    settings: Settings,
    command: str,
    elapsed: float,
) -> str:
    """Write results.md, results.json and the plot into ``out``; return the Markdown."""
    text = markdown(workloads, results, settings, command, elapsed)
    (out / "results.md").write_text(text, encoding="utf-8")
    figures = {
        "command": command,
        "machine": machine(PACKAGES),
        "settings": asdict(settings),
        "results": [asdict(r) for r in results],
    }
    (out / "results.json").write_text(json.dumps(figures, indent=1), encoding="utf-8")
    plot(workloads, results, out / PLOT)
    return text


def markdown(
    workloads: Sequence[Workload],
    results: Sequence[Result],
    settings: Settings,
    command: str,
    elapsed: float,
) -> str:
    shares = sorted(r.elsewhere for r in results if r.elsewhere is not None)
    load_text = (
        f"; other processes took {shares[len(shares) // 2]:.0%} of the CPUs during the "
        f"median method's runs, up to {shares[-1]:.0%}"
        if shares
        else ""
    )
    kind = (
        "quick run: small images, few runs; the targets are judged on the full run"
        if settings.quick
        else "full run"
    )
    lines = [
        "# tilewise benchmarks",
        "",
        f"`{command}` ({kind}).",
        "",
        f"- Machine: {machine(PACKAGES)}.",
        f"- {settings.workers} workers for every parallel method; the run took "
        f"{elapsed / 60:.1f} min{load_text} (a shared machine: absolute times are noisy).",
        "- Every LocalCluster has single-threaded workers, started without Dask's "
        "`MALLOC_TRIM_THRESHOLD_` (as docs/cluster.md recommends for tile work).",
        "- Each method runs in a process of its own: a warm-up, then as many timed runs as "
        f"fit in {settings.budget:g} s, at least {settings.least} and at most {settings.most}; "
        "the figure is their median. "
        "*x reference* is that median over the first row's, the best plain call. Each "
        "result is checked against the reference's.",
        "- Memory is the peak over the warm-up and the timed runs, of the method's whole "
        "process tree (the process with its workers, clusters and trackers): *pinned* is "
        "anonymous plus shared memory (PSS), the memory budget; RSS is beside it (it also "
        "counts the file pages a memory map touches, which the kernel can drop).",
        "- *CPU elsewhere*: the share of all CPUs that other processes took during the "
        "method's runs; a row with a large share ran on a busy machine and is slower "
        "than it would be alone."
        + (
            f" A method measured while other processes took more than {QUIET:.0%} ran "
            f"again, up to {settings.attempts} times in all, and its least disturbed "
            "attempt is the one shown."
            if settings.attempts > 1
            else ""
        ),
        "",
        f"![time against the best plain call, and peak memory, per method]({PLOT})",
        "",
    ]
    lines += ["## Headline", "", headline_table(workloads, results), ""]
    lines += ["## Every method", ""]
    for workload in workloads:
        lines += [workload_table(workload, [r for r in results if r.workload == workload.name])]
        lines += [""]
    lines += ["## Every target of issues 2-6 in one table", ""]
    if settings.quick:
        lines += [
            "The targets are set for the full sizes: run `python -m benchmarks` without `--quick`.",
            "",
        ]
    else:
        lines += [targets_table(workloads, results, settings), ""]
    return "\n".join(lines)


def headline_table(workloads: Sequence[Workload], results: Sequence[Result]) -> str:
    """Per workload: the plain call, tilewise's fastest method, the fastest alternative."""
    lines = [
        "| workload | plain call | tilewise, fastest | alternative, fastest "
        "| tilewise's speed-up over it | peak pinned, tilewise vs it |",
        "|---|---|---|---|---:|---|",
    ]
    for workload in workloads:
        rows = [r for r in results if r.workload == workload.name and not r.failed]
        reference = next((r for r in rows if r.method == workload.reference), None)
        others = [r for r in rows if r is not reference]
        tiled = min((r for r in others if r.tilewise), key=_median, default=None)
        other = min((r for r in others if not r.tilewise), key=_median, default=None)
        if reference is None or tiled is None or other is None:
            continue
        base = _median(reference)

        def cell(result: Result, base: float = base) -> str:
            name = METHODS[result.method].name
            return f"{name}: {_median(result):.3g} s ({_median(result) / base:.2f}x)"

        lines.append(
            f"| {workload.name}, {workload.size} | {workload.whole_name}: "
            f"{base:.3g} s | {cell(tiled)} | {cell(other)} "
            f"| {_median(other) / _median(tiled):.2f}x "
            f"| {_mib(tiled.pinned)} vs {_mib(other.pinned)} MiB |"
        )
    return "\n".join(lines)


def _median(result: Result) -> float:
    assert result.median is not None
    return result.median


def workload_table(workload: Workload, results: Sequence[Result]) -> str:
    """The workload's heading, one row per method, and its set-up times."""
    reference = next((r for r in results if r.method == workload.reference), None)
    base = None if reference is None else reference.median
    lines = [
        f"### {workload.name}: {workload.title}",
        "",
        f"{workload.size}; tilewise applies `{workload.func_name}` with halo {workload.halo}.",
        "",
        "| method | median (s) | x reference | megapixels/s | peak pinned (MiB) "
        "| peak RSS (MiB) | timed runs | CPU elsewhere |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        label = f"**{result.label}**" if result.tilewise else result.label
        median = result.median
        if median is None:
            lines.append(f"| {label} | {result.error} | | | | | | |")
            continue
        ratio = "n/a" if not base else f"{median / base:.2f}x"
        check = "" if result.check == "ok" else f" (check failed: {result.check})"
        lines.append(
            f"| {label}{check} | {median:.4f} | {ratio} | {workload.megapixels / median:.0f} "
            f"| {_mib(result.pinned)} | {_mib(result.rss)} | {len(result.seconds)} "
            f"| {_share(result.elsewhere)} |"
        )
    setup = [
        f"{name} {seconds:.2f} s ({METHODS[r.method].name})"
        for r in results
        for name, seconds in r.setup.items()
    ]
    if setup:
        lines += ["", "Set-up, not in the medians: " + "; ".join(setup) + "."]
    return "\n".join(lines)


def targets_table(
    workloads: Sequence[Workload], results: Sequence[Result], settings: Settings
) -> str:
    lines = [
        "| set by | target | tilewise | best alternative | physical reference | ratio | met |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {v.source} | {v.target} | {v.tilewise} | {v.alternative} | {v.reference} "
        f"| {v.ratio} | {v.met} |"
        for v in judge(results, workloads, settings)
    ]
    return "\n".join(lines)


def _share(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


def _mib(nbytes: int | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / MIB:.0f}"


def plot(workloads: Sequence[Workload], results: Sequence[Result], path: Path) -> None:
    """Per workload, time over the best plain call (log scale) and peak pinned memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    heights = [0.32 * len(w.methods) + 0.9 for w in workloads]
    figure, axes = plt.subplots(
        len(workloads),
        2,
        figsize=(12, sum(heights) + 0.6),
        gridspec_kw={"height_ratios": heights, "width_ratios": [3, 2]},
        squeeze=False,
        layout="constrained",
    )
    for (time_axis, memory_axis), workload in zip(axes, workloads, strict=True):
        rows = [r for r in results if r.workload == workload.name]
        reference = next((r.median for r in rows if r.method == workload.reference), None)
        ratios = [
            r.median / reference if r.median and reference and not r.failed else math.nan
            for r in rows
        ]
        pinned = [r.pinned / MIB if r.pinned and not r.failed else math.nan for r in rows]
        colours = [
            "black"
            if r.method == workload.reference
            else ("tab:blue" if r.tilewise else "tab:gray")
            for r in rows
        ]
        places = list(range(len(rows)))
        names = [METHODS[r.method].name for r in rows]
        finite = [v for v in ratios if math.isfinite(v)] or [1.0]
        low, high = min(*finite, 1.0) / 2, max(*finite, 1.0) * 4
        time_axis.barh(places, [v - low for v in ratios], left=low, color=colours)
        time_axis.set_xscale("log")
        time_axis.set_xlim(low, high)
        time_axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        time_axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        time_axis.axvline(1.0, color="black", linewidth=0.8)
        time_axis.set_yticks(places, names, fontsize=8)
        time_axis.invert_yaxis()
        time_axis.set_title(f"{workload.name}, {workload.size}", loc="left", fontsize=9)
        for place, value in zip(places, ratios, strict=True):
            text = f"{value:.2f}x" if math.isfinite(value) else "failed"
            time_axis.text(
                value if math.isfinite(value) else low, place, f" {text}", va="center", fontsize=7
            )
        memory_axis.barh(places, pinned, color=colours)
        memory_axis.set_yticks(places, [])
        memory_axis.invert_yaxis()
        for place, value in zip(places, pinned, strict=True):
            if math.isfinite(value):
                memory_axis.text(value, place, f" {value:.0f}", va="center", fontsize=7)
        memory_axis.margins(x=0.2)
    axes[-1][0].set_xlabel("time / best plain call (black), log scale: lower is faster")
    axes[-1][1].set_xlabel("peak pinned memory of the process tree (MiB)")
    figure.suptitle("tilewise (blue) against what users pick instead (grey)", fontsize=11)
    figure.savefig(path, dpi=100)
    plt.close(figure)
