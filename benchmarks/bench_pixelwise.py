"""Per-pixel slope four ways: a pure-Python loop, numpy, tilewise.pixelwise, numba prange.

The workload is the slope of a 6000x4000 float32 elevation model, in radians,
from central differences, with scipy's "reflect" edge. One scalar function,
``slope_at(z, y, x)``, is what the user writes; it is run

a) as a pure-Python double loop over the padded image (timed on a strip of
   rows and extrapolated: the whole image would take minutes),
b) through ``tilewise.pixelwise``: the same function, compiled, on threads,

and compared with what a user might write instead:

c) the vectorised numpy version of the same formula (float32 throughout, as
   numpy computes on a float32 image),
d) a hand-written numba kernel with ``prange`` over the rows.

Compile times are reported on their own lines, never inside a median: the
pixelwise kernel's with an empty disk cache, and its load from the disk cache
by a new process. Every method's result is checked against numpy's first;
then the three fast methods take turns, ``--repeats`` rounds.

Usage::

    python benchmarks/bench_pixelwise.py            # the full benchmark
    python benchmarks/bench_pixelwise.py --quick    # a 1200x800 image, 2 rounds
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# An empty disk cache of this run's own, so that the first compile is a cold
# one; set before numba is imported, which reads it once. The processes this
# script starts inherit it.
os.environ.setdefault("NUMBA_CACHE_DIR", tempfile.mkdtemp(prefix="tilewise-bench-numba-"))

import numba
import numpy as np

import tilewise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import LoadElsewhere, Timing, machine, measure_interleaved, table, usable_cpus

FULL_SHAPE = (6000, 4000)
QUICK_SHAPE = (1200, 800)
CELL = 10.0  # metres between pixels
PYTHON_SAMPLE_ROWS = 40


def slope_at(z, y, x):
    """Slope at one pixel of the padded elevation ``z``: what the user writes."""
    dzdx = (z[y, x + 1] - z[y, x - 1]) / (2 * CELL)
    dzdy = (z[y + 1, x] - z[y - 1, x]) / (2 * CELL)
    return math.atan(math.sqrt(dzdx * dzdx + dzdy * dzdy))


slope = tilewise.pixelwise(radius=1, dtype=np.float32)(slope_at)


def python_loop(dem: np.ndarray) -> np.ndarray:
    z = np.pad(dem, 1, mode="symmetric")  # numpy's "symmetric" is scipy's "reflect"
    out = np.empty(dem.shape, np.float32)
    for y in range(dem.shape[0]):
        for x in range(dem.shape[1]):
            out[y, x] = slope_at(z, y + 1, x + 1)
    return out


def numpy_slope(dem: np.ndarray) -> np.ndarray:
    z = np.pad(dem, 1, mode="symmetric")
    dzdx = (z[1:-1, 2:] - z[1:-1, :-2]) / np.float32(2 * CELL)
    dzdy = (z[2:, 1:-1] - z[:-2, 1:-1]) / np.float32(2 * CELL)
    return np.arctan(np.sqrt(dzdx * dzdx + dzdy * dzdy))


@numba.njit(parallel=True)
def _prange_loop(z: np.ndarray, out: np.ndarray) -> None:
    for y in numba.prange(out.shape[0]):
        for x in range(out.shape[1]):
            dzdx = (z[y + 1, x + 2] - z[y + 1, x]) / (2 * CELL)
            dzdy = (z[y + 2, x + 1] - z[y, x + 1]) / (2 * CELL)
            out[y, x] = math.atan(math.sqrt(dzdx * dzdx + dzdy * dzdy))


def numba_prange(dem: np.ndarray) -> np.ndarray:
    z = np.pad(dem, 1, mode="symmetric")
    out = np.empty(dem.shape, np.float32)
    _prange_loop(z, out)
    return out


def seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def compile_in_new_process() -> tuple[float, int]:
    """Seconds a new process takes to compile the kernel or load it, and whether it loaded."""
    script = (
        "import time, numpy as np\n"
        "from bench_pixelwise import slope\n"
        "start = time.perf_counter()\n"
        "loop = slope.loop_for(np.dtype(np.float32), 2)\n"
        "print(time.perf_counter() - start, sum(loop.stats.cache_hits.values()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed, hits = done.stdout.split()
    return float(elapsed), int(hits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 1200x800 image, 2 rounds")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 5, 2 with --quick)")
    args = parser.parse_args(argv)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    repeats = args.repeats or (2 if args.quick else 5)
    dem = (np.random.default_rng(0).random(shape, dtype=np.float32) * 100).astype(np.float32)
    pixels = dem.size
    print(machine(("numpy", "numba")))
    print(f"slope of a {shape[0]}x{shape[1]} float32 image, {repeats} rounds", flush=True)

    compile_s, _ = compile_in_new_process()
    load_s, loaded = compile_in_new_process()
    slope.loop_for(dem.dtype, dem.ndim)  # this process's own copy, before any timing
    prange_compile_s = seconds(lambda: _prange_loop(dem[:4, :4], np.empty((2, 2), np.float32)))

    expected = numpy_slope(dem)
    sample = dem[:PYTHON_SAMPLE_ROWS]
    for name, result, reference in [
        ("pixelwise", slope(dem), expected),
        ("numba prange", numba_prange(dem), expected),
        ("python loop", python_loop(sample), numpy_slope(sample)),
    ]:
        if not np.allclose(result, reference, rtol=1e-5, atol=1e-6):
            raise AssertionError(f"{name}: differs from the numpy result")

    with LoadElsewhere() as load:
        python_sample = [seconds(lambda: python_loop(sample)) for _ in range(min(repeats, 3))]
        scale = pixels / sample.size
        python = Timing(
            f"pure-Python double loop (timed on {PYTHON_SAMPLE_ROWS} rows, extrapolated)",
            [s * scale for s in python_sample],
        )
        fast = measure_interleaved(
            {
                "numpy, vectorised (1 thread)": lambda: numpy_slope(dem),
                f"tilewise.pixelwise, {usable_cpus()} threads": lambda: slope(dem),
                f"numba prange, {numba.get_num_threads()} threads": lambda: numba_prange(dem),
            },
            repeats=repeats,
        )
    numpy_t, pixelwise_t, prange_t = fast
    megapixels = pixels / 1e6
    print()
    print(
        table(
            f"slope, {shape[0]}x{shape[1]} float32",
            [python, numpy_t, pixelwise_t, prange_t],
            numpy_t,
            megapixels,
        )
    )
    print()
    per_pixel = python.median / pixelwise_t.median
    print(f"pixelwise vs the pure-Python loop, per pixel: {per_pixel:,.0f}x faster (target 100x)")
    print(
        f"pixelwise vs numpy: {numpy_t.median / pixelwise_t.median:.2f}x "
        "the speed (target: at least 1x)"
    )
    print(f"pixelwise vs numba prange: {prange_t.median / pixelwise_t.median:.2f}x the speed")
    print(f"pixelwise compile, empty disk cache: {compile_s:.2f} s (once per dtype)")
    print(
        f"pixelwise load from the disk cache by the next process: {load_s:.2f} s"
        + ("" if loaded else " (NOT loaded: compiled again)")
    )
    print(f"numba prange compile: {prange_compile_s:.2f} s")
    if load.share is not None:
        print(f"CPU taken by other processes meanwhile: {load.share:.0%} of the machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
