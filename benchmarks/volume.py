"""A 3-D Gaussian (sigma 2) on a float32 volume: tilewise against dask, skimage and scipy.

``python -m benchmarks.volume`` runs, side by side, each method in a process
of its own on the same volume (made in that process, seeded):

- ``tilewise``: ``map_tiles(gaussian, volume, tile=TILE, halo=8,
  backend="threads")``, a new numpy array as the result;
- ``dask``: ``da.from_array(volume, chunks=TILE).map_overlap(gaussian,
  depth=8, boundary="reflect").compute()`` on dask's threaded scheduler;
- ``skimage``: ``skimage.util.apply_parallel(gaussian, volume,
  chunks=TILE, depth=8, mode="reflect")``, which runs dask's map_overlap;
- ``whole``: ``scipy.ndimage.gaussian_filter(volume, 2)``, one call on one
  thread: the oracle, and the speed of not tiling at all.

Each is checked against the whole call on a slab across the volume's
middle, and samples its process tree's pinned memory over each timed run
(:mod:`benchmarks.memory`). The targets: tilewise at least 1.3x dask's
speed, and pinning at most the input plus the output plus 25%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import machine
from benchmarks.memory import TreeSampler
from benchmarks.report import write_side_by_side

#: Volumes as (Z, Y, X) float32.
SIZES = {"small": (64, 160, 192), "512mib": (128, 1024, 1024), "2gib": (512, 1024, 1024)}
SIGMA = 2.0
#: scipy's radius for SIGMA: int(truncate * sigma + 0.5), truncate 4.
HALO = 8
TILE = (128, 256, 256)
METHODS = ("tilewise", "dask", "skimage", "whole")
SPEED_TARGET = 1.3  # tilewise over dask
MEMORY_TARGET = 1.25  # pinned over input + output
PREFIX = "volume-bench: "


def gaussian(block: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(block, SIGMA, mode="reflect")


def make_volume(shape: tuple[int, int, int]) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def run(method: str, volume: np.ndarray, tile: tuple[int, ...]) -> np.ndarray:
    if method == "whole":
        return gaussian(volume)
    if method == "tilewise":
        from tilewise import map_tiles

        result: np.ndarray = map_tiles(gaussian, volume, tile=tile, halo=HALO, backend="threads")
        return result
    if method == "dask":
        import dask
        import dask.array as da

        with dask.config.set(scheduler="threads"):
            lazy = da.from_array(volume, chunks=tile)
            return np.asarray(lazy.map_overlap(gaussian, depth=HALO, boundary="reflect").compute())
    from skimage.util import apply_parallel

    return np.asarray(apply_parallel(gaussian, volume, chunks=tile, depth=HALO, mode="reflect"))


def slab_error(volume: np.ndarray, result: np.ndarray) -> float:
    """Largest difference from the whole call, on a slab of planes across the middle.

    The whole call on the slab's planes and HALO more on each side is the
    whole call on the slab: the cut is beyond the filter's reach.
    """
    planes = volume.shape[0]
    first, last = planes // 2 - HALO, planes // 2 + HALO
    if first < HALO or last + HALO > planes:  # too thin for a slab: all of it
        return float(np.max(np.abs(result - gaussian(volume))))
    expected = gaussian(volume[first - HALO : last + HALO])[HALO:-HALO]
    return float(np.max(np.abs(result[first:last] - expected)))


def measure(method: str, size: str, runs: int) -> dict[str, Any]:
    """In this process: the volume, a warm-up, then ``runs`` timed runs, each sampled."""
    volume = make_volume(SIZES[size])
    tile = tuple(min(t, n) for t, n in zip(TILE, volume.shape, strict=True))
    run(method, volume, tile)
    seconds, pinned = [], []
    result = None
    with TreeSampler(os.getpid()) as sampler:
        for _ in range(runs):
            result = None
            sampler.open()
            start = time.perf_counter()
            result = run(method, volume, tile)
            seconds.append(time.perf_counter() - start)
            pinned.append(sampler.close().pinned)
    assert result is not None
    return {
        "seconds": seconds,
        "pinned": pinned,
        "error": slab_error(volume, result),
        "data_bytes": volume.nbytes + result.nbytes,
    }


def child(argv: list[str]) -> int:
    method, size, runs = argv
    print(PREFIX + json.dumps(measure(method, size, int(runs))), flush=True)
    return 0


def run_method(method: str, size: str, runs: int) -> Any:
    command = [sys.executable, "-m", "benchmarks.volume", "--child", method, size, str(runs)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"{method} failed:\n{done.stderr[-4000:]}", file=sys.stderr)
        return {"failed": done.stderr.strip().splitlines()[-1][:200]}
    line = next(line for line in done.stdout.splitlines() if line.startswith(PREFIX))
    return json.loads(line[len(PREFIX) :])


def table(size: str, results: dict[str, Any]) -> list[str]:
    shape = SIZES[size]
    megavoxels = float(np.prod(shape)) / 1e6
    lines = [
        f"### {size}: {' x '.join(map(str, shape))} float32, tiles {TILE}, halo {HALO}",
        "",
        "| method | median s | MVox/s | x dask | pinned MiB | pinned / (in + out) | max error |",
        "|---|---|---|---|---|---|---|",
    ]
    base = _rate(results.get("dask", {}), megavoxels)
    for method, result in results.items():
        if "failed" in result:
            lines.append(f"| {method} | failed: {result['failed']} | | | | | |")
            continue
        rate = _rate(result, megavoxels)
        pinned = max(result["pinned"])
        lines.append(
            f"| {method} | {statistics.median(result['seconds']):.2f} | {rate:.1f} "
            f"| {rate / base:.2f} | {pinned / 2**20:.0f} "
            f"| {pinned / result['data_bytes']:.2f} | {result['error']:.1e} |"
            if base
            else f"| {method} | {statistics.median(result['seconds']):.2f} | {rate:.1f} | | "
            f"{pinned / 2**20:.0f} | {pinned / result['data_bytes']:.2f} | {result['error']:.1e} |"
        )
    tilewise = results.get("tilewise", {})
    if base and "seconds" in tilewise:
        ratio = _rate(tilewise, megavoxels) / base
        memory = max(tilewise["pinned"]) / tilewise["data_bytes"]
        lines += [
            "",
            f"- Targets: tilewise >= {SPEED_TARGET}x dask's speed: {ratio:.2f}x, "
            f"{'met' if ratio >= SPEED_TARGET else 'not met'}; pinned <= {MEMORY_TARGET}x "
            f"input + output: {memory:.2f}x, {'met' if memory <= MEMORY_TARGET else 'not met'}.",
        ]
    return [*lines, ""]


def _rate(result: dict[str, Any], megavoxels: float) -> float:
    if "seconds" not in result:
        return 0.0
    return megavoxels / statistics.median(result["seconds"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.volume", description=__doc__)
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=["2gib"])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each method")
    parser.add_argument("--out", type=Path, default=Path("out/bench-volume"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict[str, Any] = {}
    lines = ["## A 3-D Gaussian (sigma 2) on a float32 volume", ""]
    for size in args.sizes:
        results = {}
        for method in args.methods:
            results[method] = run_method(method, size, args.runs)
            outcome = results[method].get("seconds", results[method].get("failed"))
            print(f"{size} {method}: {outcome}", file=sys.stderr, flush=True)
        report[size] = results
        lines += table(size, results)
    packages = machine(("numpy", "scipy", "dask", "scikit-image"))
    write_side_by_side(args.out, lines, report, packages, args.runs, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
