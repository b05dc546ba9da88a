"""Volumes: a 3-D Gaussian against dask, skimage and scipy; a 3x3x3 pixelwise kernel against numba.

``python -m benchmarks.volume`` runs, side by side, each method in a process
of its own on the same float32 volume (made in that process, seeded).

The Gaussian (sigma 2, halo 8), on 512 x 1024 x 1024 by default:

- ``tilewise``: ``map_tiles(gaussian, volume, tile=TILE, halo=8,
  backend="threads")``, a new numpy array as the result;
- ``dask``: ``da.from_array(volume, chunks=TILE).map_overlap(gaussian,
  depth=8, boundary="reflect").compute()`` on dask's threaded scheduler;
- ``skimage``: ``skimage.util.apply_parallel(gaussian, volume,
  chunks=TILE, depth=8, mode="reflect")``, which runs dask's map_overlap;
- ``whole``: ``scipy.ndimage.gaussian_filter(volume, 2)``, one call on one
  thread: the oracle, and the speed of not tiling at all.

The 3x3x3 mean of each voxel, on 512 x 512 x 512 by default: one Python
function, ``mean27(v, z, y, x)``, as a ``tilewise.pixelwise`` kernel called
on the whole volume (``tilewise``), inside a hand-written numba ``prange``
loop over the padded volume (``numba-prange``), and as numpy's sum of the
27 shifted views (``numpy``).

Each is checked against the whole call on a slab across the volume's
middle, and samples its process tree's pinned memory over each timed run
(:mod:`benchmarks.memory`). The targets: for the Gaussian, tilewise at
least 1.3x dask's speed and pinning at most the input plus the output plus
25%; for the kernel, tilewise no slower than the hand-written loop.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.child import median_rate, report_to_parent, run_child
from benchmarks.machine import machine
from benchmarks.memory import TreeSampler
from benchmarks.report import write_side_by_side

#: Volumes as (Z, Y, X) float32.
SIZES = {
    "small": (64, 160, 192),
    "512mib": (128, 1024, 1024),
    "2gib": (512, 1024, 1024),
    "512cube": (512, 512, 512),
}
SIGMA = 2.0
#: What each workload compares: tilewise, then the method it is measured against, then others.
WORKLOADS = {
    "gaussian": ("tilewise", "dask", "skimage", "whole"),
    "kernel": ("tilewise", "numba-prange", "numpy"),
}
#: Context each workload reads around a voxel: scipy's radius for SIGMA, and 3x3x3's.
HALOS = {"gaussian": 8, "kernel": 1}
TILE = (128, 256, 256)
SPEED_TARGETS = {"gaussian": 1.3, "kernel": 1.0}  # tilewise over the method it is measured against
MEMORY_TARGET = 1.25  # the Gaussian's: pinned over input + output
PREFIX = "volume-bench: "


def gaussian(block: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(block, SIGMA, mode="reflect")


def mean27(v: Any, z: int, y: int, x: int) -> float:
    """The 3x3x3 mean of one voxel: what tilewise.pixelwise and numba's prange loop compile."""
    total = 0.0
    for dz in range(-1, 2):
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                total += v[z + dz, y + dy, x + dx]
    return total / 27


def mean27_numpy(volume: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """numpy, vectorised: the 27 shifted views of the padded volume, added in ``dtype``.

    In float64, in the kernel's order, it is the kernel's own arithmetic: the oracle.
    """
    padded = np.pad(volume.astype(dtype, copy=False), 1, mode="symmetric")  # scipy's "reflect"
    total = np.zeros(volume.shape, dtype)
    depth, rows, cols = volume.shape
    for dz in range(3):
        for dy in range(3):
            for dx in range(3):
                total += padded[dz : dz + depth, dy : dy + rows, dx : dx + cols]
    return (total / dtype(27)).astype(np.float32, copy=False)


def mean27_prange(volume: np.ndarray) -> np.ndarray:
    """The loop by hand: numba's prange over planes of the padded volume."""
    import numba

    loop = _prange_loop(numba)
    out = np.empty(volume.shape, np.float32)
    loop(np.pad(volume, 1, mode="symmetric"), out)
    return out


@functools.cache  # compiled once, as a hand-written kernel is
def _prange_loop(numba: Any) -> Any:
    scalar = numba.njit(mean27)

    @numba.njit(parallel=True, nogil=True)
    def loop(padded: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        for h in numba.prange(out.shape[0]):
            for i in range(out.shape[1]):
                for j in range(out.shape[2]):
                    out[h, i, j] = scalar(padded, h + 1, i + 1, j + 1)

    return loop


def make_volume(shape: tuple[int, int, int]) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def run(workload: str, method: str, volume: np.ndarray, tile: tuple[int, ...]) -> np.ndarray:
    if workload == "kernel":
        return _run_kernel(method, volume)
    halo = HALOS[workload]
    if method == "whole":
        return gaussian(volume)
    if method == "tilewise":
        from tilewise import map_tiles

        result: np.ndarray = map_tiles(gaussian, volume, tile=tile, halo=halo, backend="threads")
        return result
    if method == "dask":
        import dask
        import dask.array as da

        with dask.config.set(scheduler="threads"):
            lazy = da.from_array(volume, chunks=tile)
            return np.asarray(lazy.map_overlap(gaussian, depth=halo, boundary="reflect").compute())
    from skimage.util import apply_parallel

    return np.asarray(apply_parallel(gaussian, volume, chunks=tile, depth=halo, mode="reflect"))


def _run_kernel(method: str, volume: np.ndarray) -> np.ndarray:
    if method == "numpy":
        return mean27_numpy(volume)
    if method == "numba-prange":
        return mean27_prange(volume)
    import tilewise

    kernel = tilewise.pixelwise(radius=1, dtype=np.float32)(mean27)
    result: np.ndarray = kernel(volume)
    return result


def slab_error(workload: str, volume: np.ndarray, result: np.ndarray) -> float:
    """Largest difference from the whole call, on a slab of planes across the middle.

    The whole call on the slab's planes and its halo more on each side is the
    whole call on the slab: the cut is beyond the filter's reach. The kernel's
    whole call is numpy's sum in float64, in the kernel's order.
    """
    halo = HALOS[workload]
    exact = functools.partial(mean27_numpy, dtype=np.float64)
    whole: Any = gaussian if workload == "gaussian" else exact
    planes = volume.shape[0]
    first, last = planes // 2 - 2 * halo, planes // 2 + 2 * halo
    if first < halo or last + halo > planes:  # too thin for a slab: all of it
        return float(np.max(np.abs(result - whole(volume))))
    expected = whole(volume[first - halo : last + halo])[halo:-halo]
    return float(np.max(np.abs(result[first:last] - expected)))


def measure(workload: str, method: str, size: str, runs: int) -> dict[str, Any]:
    """In this process: the volume, a warm-up, then ``runs`` timed runs, each sampled."""
    volume = make_volume(SIZES[size])
    tile = tuple(min(t, n) for t, n in zip(TILE, volume.shape, strict=True))
    run(workload, method, volume, tile)
    seconds, pinned = [], []
    result = None
    with TreeSampler(os.getpid()) as sampler:
        for _ in range(runs):
            result = None
            sampler.open()
            start = time.perf_counter()
            result = run(workload, method, volume, tile)
            seconds.append(time.perf_counter() - start)
            pinned.append(sampler.close().pinned)
    assert result is not None
    return {
        "seconds": seconds,
        "pinned": pinned,
        "error": slab_error(workload, volume, result),
        "data_bytes": volume.nbytes + result.nbytes,
    }


def child(argv: list[str]) -> int:
    method, workload, size, runs = argv
    report_to_parent(PREFIX, measure(workload, method, size, int(runs)))
    return 0


def run_method(workload: str, method: str, size: str, runs: int) -> Any:
    return run_child("benchmarks.volume", PREFIX, method, [workload, size, str(runs)])


def table(workload: str, size: str, results: dict[str, Any]) -> list[str]:
    shape = SIZES[size]
    megavoxels = float(np.prod(shape)) / 1e6
    versus = WORKLOADS[workload][1]
    what = "3-D Gaussian, sigma 2" if workload == "gaussian" else "3x3x3 mean, a pixelwise kernel"
    lines = [
        f"### {what}, {size}: {' x '.join(map(str, shape))} float32, halo {HALOS[workload]}",
        "",
        f"| method | median s | MVox/s | x {versus} | pinned MiB | pinned / (in + out) "
        "| max error |",
        "|---|---|---|---|---|---|---|",
    ]
    base = median_rate(results.get(versus, {}), megavoxels)
    for method, result in results.items():
        if "failed" in result:
            lines.append(f"| {method} | failed: {result['failed']} | | | | | |")
            continue
        rate = median_rate(result, megavoxels)
        pinned = max(result["pinned"])
        over = f"{rate / base:.2f}" if base else ""
        lines.append(
            f"| {method} | {statistics.median(result['seconds']):.2f} | {rate:.1f} | {over} "
            f"| {pinned / 2**20:.0f} | {pinned / result['data_bytes']:.2f} "
            f"| {result['error']:.1e} |"
        )
    tilewise = results.get("tilewise", {})
    if base and "seconds" in tilewise:
        ratio = median_rate(tilewise, megavoxels) / base
        target = SPEED_TARGETS[workload]
        judged = f"{'met' if ratio >= target else 'not met'}"
        lines += ["", f"- Targets: tilewise >= {target}x {versus}'s speed: {ratio:.2f}x, {judged}"]
        if workload == "gaussian":
            memory = max(tilewise["pinned"]) / tilewise["data_bytes"]
            fits = "met" if memory <= MEMORY_TARGET else "not met"
            lines[-1] += f"; pinned <= {MEMORY_TARGET}x input + output: {memory:.2f}x, {fits}"
        lines[-1] += "."
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.volume", description=__doc__)
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=["2gib"])
    parser.add_argument(
        "--kernel-sizes", nargs="+", choices=SIZES, default=["512cube"],
        help="sizes of the pixelwise kernel's workload",
    )  # fmt: skip
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each method")
    parser.add_argument("--out", type=Path, default=Path("out/bench-volume"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict[str, Any] = {}
    lines = ["## Volumes: a 3-D Gaussian, and a 3x3x3 pixelwise kernel", ""]
    for workload in args.workloads:
        for size in args.sizes if workload == "gaussian" else args.kernel_sizes:
            results = {}
            for method in WORKLOADS[workload]:
                results[method] = run_method(workload, method, size, args.runs)
                outcome = results[method].get("seconds", results[method].get("failed"))
                print(f"{workload} {size} {method}: {outcome}", file=sys.stderr, flush=True)
            report[f"{workload}-{size}"] = results
            lines += table(workload, size, results)
    packages = machine(("numpy", "scipy", "dask", "scikit-image", "numba"))
    write_side_by_side(args.out, lines, report, packages, args.runs, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
