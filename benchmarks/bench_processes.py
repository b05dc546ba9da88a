"""The processes backend against what a user would write instead, side by side.

a) The original question: a 3x3-neighbourhood slope written as a pure-Python
   double loop over a 1024x1024 image. Compute-bound and GIL-bound: only
   processes can use both cores. tilewise (64 tiles of 128x128, and 16 of
   256x256; halo 1) against the plain loop, a hand-written ``multiprocessing.Pool`` over row
   strips, joblib over the same strips, and dask ``map_overlap`` on threads.
b) ``np.square`` on a 6000x4000 float32 image (24 megapixels): memory-bound,
   so the question is what moving pixels between processes costs. tilewise
   against the plain whole-array call, the usual ``Pool.imap_unordered``
   answer (blocks pickled to the workers and back; 64 and 512 blocks), the
   same under ``spawn``, a hand-rolled ``SharedMemory`` pool, and dask's
   ``processes`` scheduler. tilewise reuses its shared memory from one call
   to the next (a loop's case); a "cold" row frees it before each call (a
   first call's case), and another keeps input and output in
   :class:`tilewise.sharedmem.SharedArray` across calls.
c) Peak memory of the whole process tree (parent and workers) for one run of
   (b), measured by ``../shared/tools/peakmem`` in a fresh interpreter per
   method: memory pinned (anonymous + shared PSS), and plain RSS.

Every method's result must equal the reference exactly (checked once, in the
warm-up); then the methods take turns, ``--repeats`` rounds, and the tables
give medians.

Usage::

    python benchmarks/bench_processes.py             # everything
    python benchmarks/bench_processes.py --quick     # smaller images, 2 rounds
    python benchmarks/bench_processes.py --only slope|square|memory
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import multiprocessing as mp
import os
import subprocess
import sys
from collections.abc import Callable
from multiprocessing import shared_memory
from pathlib import Path

import dask
import dask.array as da
import joblib
import numpy as np

import tilewise
from tilewise.executors.processes import shutdown
from tilewise.sharedmem import SharedArray, clear_cache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine, measure_interleaved, table, usable_cpus

PEAKMEM = Path(__file__).resolve().parents[2] / "shared" / "tools" / "peakmem"
WORKERS = usable_cpus()


# --- a) the pure-Python slope -----------------------------------------------------------------


def slope(block: np.ndarray) -> np.ndarray:
    """Slope from the 3x3 neighbourhood, one pixel at a time: the loop people write first.

    Border pixels of ``block`` are left at 0: they only serve as context.
    """
    rows, cols = block.shape
    out = np.zeros((rows, cols))
    for y in range(1, rows - 1):
        for x in range(1, cols - 1):
            dzdx = (block[y, x + 1] - block[y, x - 1]) / 2
            dzdy = (block[y + 1, x] - block[y - 1, x]) / 2
            out[y, x] = math.atan(math.hypot(dzdx, dzdy))
    return out


def strips(padded: np.ndarray, n: int) -> list[np.ndarray]:
    """Row strips of a padded image, each with one row of context above and below."""
    rows = padded.shape[0] - 2
    bounds = np.linspace(0, rows, n + 1).astype(int)
    return [padded[a : b + 2] for a, b in itertools.pairwise(bounds)]


def stitch(results: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([r[1:-1, 1:-1] for r in results])


def slope_workload(size: int, repeats: int) -> str:
    image = np.random.default_rng(0).standard_normal((size, size)).cumsum(0).cumsum(1)
    padded = np.pad(image, 1, mode="edge")
    pieces = strips(padded, 4 * WORKERS)

    def serial() -> np.ndarray:
        return slope(padded)[1:-1, 1:-1]

    def pool() -> np.ndarray:
        with mp.Pool(WORKERS) as workers:
            return stitch(workers.map(slope, pieces))

    def with_joblib() -> np.ndarray:
        # max_nbytes=None: by default joblib hands strips over 1 MB to workers as
        # np.memmap, and indexing a memmap pixel by pixel is several times slower.
        parallel = joblib.Parallel(n_jobs=WORKERS, max_nbytes=None)
        return stitch(parallel(joblib.delayed(slope)(piece) for piece in pieces))

    def dask_threads() -> np.ndarray:
        array = da.from_array(image, chunks=size // 4)
        return array.map_overlap(slope, depth=1, boundary="nearest").compute(scheduler="threads")

    def processes(tiles_per_side: int) -> Callable[[], np.ndarray]:
        tile = size // tiles_per_side
        return lambda: tilewise.map_tiles(
            slope, image, tile=tile, halo=1, boundary="nearest", backend="processes"
        )

    runs: dict[str, Callable[[], np.ndarray]] = {
        "plain loop (serial)": serial,
        "tilewise processes, 64 tiles": processes(8),
        "tilewise processes, 16 tiles": processes(4),
        "multiprocessing.Pool": pool,
        "joblib": with_joblib,
        "dask threads": dask_threads,
    }
    reference = serial()
    for label, run in runs.items():
        np.testing.assert_array_equal(run(), reference, err_msg=label)
    load = _load_before()
    timings = measure_interleaved(runs, repeats=repeats, warmup=0)
    by_label = {t.label: t for t in timings}
    speedups = "\n".join(
        f"- {t.label}: {by_label['plain loop (serial)'].median / t.median:.2f}x the serial speed"
        for t in timings[1:]
    )
    return (
        table(
            f"a) pure-Python slope, {size}x{size} float64",
            timings,
            by_label["plain loop (serial)"],
            size * size / 1e6,
        )
        + f"\n\n{speedups}\n\n{load}"
    )


# --- b) np.square, 24 megapixels ----------------------------------------------------------------


def square_block(item: tuple[int, np.ndarray]) -> tuple[int, np.ndarray]:
    index, block = item
    return index, np.square(block)


def block_slices(shape: tuple[int, int], n: int) -> list[tuple[slice, slice]]:
    """``n`` blocks (a grid as square as possible) covering ``shape``."""
    side = 2 ** math.ceil(math.log2(n) / 2)
    grid_rows, grid_cols = n // side, side
    ys = np.linspace(0, shape[0], grid_rows + 1).astype(int)
    xs = np.linspace(0, shape[1], grid_cols + 1).astype(int)
    return [
        (slice(y0, y1), slice(x0, x1))
        for y0, y1 in itertools.pairwise(ys)
        for x0, x1 in itertools.pairwise(xs)
    ]


def pool_imap(image: np.ndarray, n_blocks: int, method: str | None = None) -> np.ndarray:
    """The accepted answer: blocks pickled to a Pool, results pickled back and placed."""
    slices = block_slices(image.shape, n_blocks)
    out = np.empty_like(image)
    with mp.get_context(method).Pool(WORKERS) as pool:
        items = ((i, image[s]) for i, s in enumerate(slices))
        for index, result in pool.imap_unordered(square_block, items):
            out[slices[index]] = result
    return out


_SHARED: dict[str, np.ndarray] = {}


def _attach(names: tuple[str, str], shape: tuple[int, ...], dtype: str) -> None:
    # Forked workers share the parent's resource tracker, so attaching (which
    # registers the segment again before Python 3.13) is harmless here; under
    # spawn each worker would have to unregister it or see it unlinked at exit.
    for key, name in zip(("in", "out"), names, strict=True):
        segment = shared_memory.SharedMemory(name=name)
        _SHARED[key] = np.ndarray(shape, dtype, buffer=segment.buf)
        _SHARED[key + "-segment"] = segment  # type: ignore[assignment]


def _square_rows(rows: tuple[int, int]) -> None:
    np.square(_SHARED["in"][rows[0] : rows[1]], out=_SHARED["out"][rows[0] : rows[1]])


def hand_rolled_shared_memory(image: np.ndarray) -> np.ndarray:
    """A SharedMemory pool as one writes it by hand: copy in, attach, work, copy out."""
    segments = [shared_memory.SharedMemory(create=True, size=image.nbytes) for _ in range(2)]
    try:
        shared_in = np.ndarray(image.shape, image.dtype, buffer=segments[0].buf)
        shared_in[:] = image
        names = (segments[0].name, segments[1].name)
        bounds = np.linspace(0, image.shape[0], 8 * WORKERS + 1).astype(int)
        with mp.Pool(WORKERS, _attach, (names, image.shape, image.dtype.str)) as pool:
            pool.map(_square_rows, list(itertools.pairwise(bounds)))
        out = np.ndarray(image.shape, image.dtype, buffer=segments[1].buf).copy()
        del shared_in
        return out
    finally:
        for segment in segments:
            segment.close()
            segment.unlink()


def cold(run: Callable[[], np.ndarray]) -> np.ndarray:
    """``run`` as a first call would: no shared memory left from earlier calls to reuse."""
    clear_cache()
    return run()


def square_workload(shape: tuple[int, int], repeats: int) -> str:
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    tile = 1024 if shape[0] > 2000 else 256
    kept_in = SharedArray.copy_of(image)
    kept_out = SharedArray.create(image.shape, image.dtype)

    runs: dict[str, Callable[[], np.ndarray]] = {
        "np.square (whole array)": lambda: np.square(image),
        "tilewise processes": lambda: tilewise.map_tiles(
            np.square, image, tile=tile, backend="processes"
        ),
        "tilewise processes, cold (no segment reused)": lambda: cold(
            lambda: tilewise.map_tiles(np.square, image, tile=tile, backend="processes")
        ),
        "tilewise processes, SharedArray in and out": lambda: tilewise.map_tiles(
            np.square, kept_in.array, tile=tile, out=kept_out.array, backend="processes"
        ),
        "Pool.imap_unordered, 64 blocks": lambda: pool_imap(image, 64),
        "Pool.imap_unordered, 512 blocks": lambda: pool_imap(image, 512),
        "spawn Pool, 64 pickled blocks": lambda: pool_imap(image, 64, "spawn"),
        "hand-rolled SharedMemory pool": lambda: hand_rolled_shared_memory(image),
        "dask processes scheduler": lambda: (
            da.from_array(image, chunks=tile)
            .map_blocks(np.square)
            .compute(scheduler="processes", num_workers=WORKERS)
        ),
    }
    try:
        reference = np.square(image)
        for label, run in runs.items():
            np.testing.assert_array_equal(run(), reference, err_msg=label)
        load = _load_before()
        timings = measure_interleaved(runs, repeats=repeats, warmup=0)
    finally:
        for kept in (kept_in, kept_out):
            kept.unlink()
            kept.close()
    return (
        table(
            f"b) np.square, {shape[0]}x{shape[1]} float32, tiles of {tile}",
            timings,
            timings[0],
            image.size / 1e6,
        )
        + f"\n\n{load}"
    )


# --- c) peak memory of the process tree ---------------------------------------------------------


def memory_run(method: str, shape: tuple[int, int]) -> None:
    """One run of workload (b) by ``method``, in this (fresh) interpreter."""
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    tile = 1024 if shape[0] > 2000 else 256
    if method == "tilewise":
        out = tilewise.map_tiles(np.square, image, tile=tile, backend="processes")
    elif method == "joblib":
        slices = block_slices(image.shape, 64)
        blocks = joblib.Parallel(n_jobs=WORKERS)(
            joblib.delayed(np.square)(image[s]) for s in slices
        )
        out = np.empty_like(image)
        for s, block in zip(slices, blocks, strict=True):
            out[s] = block
    elif method == "dask":
        array = da.from_array(image, chunks=tile).map_blocks(np.square)
        out = array.compute(scheduler="processes", num_workers=WORKERS)
    elif method == "baseline":
        out = np.square(image)
    assert out[0, 0] == np.square(image[0, 0])


def memory_table(shape: tuple[int, int]) -> str:
    mib = np.dtype(np.float32).itemsize * shape[0] * shape[1] / 2**20
    budget = 2 * mib + 100 * WORKERS
    lines = [
        f"### c) peak memory of the process tree, one np.square run on {shape[0]}x{shape[1]}",
        "",
        f"Input {mib:.0f} MiB, output {mib:.0f} MiB; budget for tilewise: input + output + "
        f"100 MiB per worker = {budget:.0f} MiB (pinned).",
        "",
        "| method | peak pinned (MiB) | peak RSS (MiB) | processes | wall (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {
        "baseline": "np.square (whole array, one process)",
        "tilewise": "tilewise processes",
        "joblib": "joblib, 64 blocks",
        "dask": "dask processes scheduler",
    }
    for method, label in labels.items():
        command = [sys.executable, __file__, "--memory-run", method, "--shape", *map(str, shape)]
        done = subprocess.run(
            [sys.executable, str(PEAKMEM), "--json", "--", *command],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stderr.strip().splitlines()[-1])  # peakmem reports on stderr
        lines.append(
            f"| {label} | {result['peak_pinned_mib']} | {result['peak_rss_mib']} "
            f"| {result['max_processes']} | {result['wall_s']} |"
        )
        print(f"  {label:<44} pinned {result['peak_pinned_mib']} MiB", flush=True)
    return "\n".join(lines)


def _load_before() -> str:
    """The machine's load before a section, as a hint of other work on it.

    harness.LoadElsewhere is not used: it would count the worker processes of
    the methods measured here as load from elsewhere.
    """
    with contextlib.suppress(OSError, AttributeError):
        return f"Load average (1 min) before the timings: {os.getloadavg()[0]:.2f}"
    return "Load average: n/a"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small images, 2 rounds")
    parser.add_argument("--only", choices=("slope", "square", "memory"))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--memory-run", help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_run:
        memory_run(args.memory_run, tuple(args.shape))
        return
    dask.config.set({"array.slicing.split_large_chunks": False})
    slope_size = 256 if args.quick else 1024
    shape = (1200, 800) if args.quick else (6000, 4000)
    repeats = args.repeats or (2 if args.quick else 5)
    print(machine(("numpy", "joblib", "dask")))
    sections = []
    if args.only in (None, "slope"):
        sections.append(slope_workload(slope_size, max(2, repeats - 2)))
    if args.only in (None, "square"):
        sections.append(square_workload(shape, repeats))
    if args.only in (None, "memory"):
        sections.append(memory_table(shape))
    shutdown()
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
