"""map_tiles on threads against the plain whole-array call, dask and scikit-image.

Two workloads on a 6000x4000 float32 image (24 megapixels):

a) ``np.square``: memory-bound, no halo. Tiling can at best tie the
   whole-array call; the question is how little it costs.
b) ``scipy.ndimage.gaussian_filter(sigma=3)``: compute-bound, a 12-pixel halo
   (the filter's radius at scipy's default ``truncate=4``). Two cores can at
   best halve the time, less the halo each tile recomputes.

Every method is called once first, as the warm-up, and its result must equal
the whole-array result exactly; then all methods take turns, ``--repeats``
rounds, so a burst of load from elsewhere on a shared machine slows every
method alike. Tables give the median, the ratio to the whole-array call and
megapixels per second.

The tile and chunk sizes used are fixed below; ``--sweep`` times every
candidate they were picked from (see benchmarks/README.md for the figures).

Usage::

    python benchmarks/bench_foundation.py            # the full benchmark
    python benchmarks/bench_foundation.py --quick    # small image, 2 rounds
    python benchmarks/bench_foundation.py --sweep    # every tile and chunk size
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from scipy import ndimage as ndi
from skimage.util import apply_parallel

import tilewise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    LoadElsewhere,
    Timing,
    machine,
    measure_interleaved,
    table,
    usable_cpus,
)

FULL_SHAPE = (6000, 4000)
QUICK_SHAPE = (1200, 800)
SIGMA = 3
HALO = 12  # = int(truncate * sigma + 0.5): the Gaussian kernel's radius

#: (rows, cols) sizes; None in cols means the image's full width (a row strip).
Size = tuple[int, "int | None"]

# The sizes used, picked with --sweep (figures and reasons in benchmarks/README.md).
# np.square is memory-bound: full-width row strips keep every read and write
# contiguous, and a strip's 4 MB temporary result is still warm in cache when
# it is copied into the output.
SQUARE_TILE: Size = (256, None)
SQUARE_DASK_CHUNKS: Size = (1500, None)
# The Gaussian is compute-bound: 96 tiles share evenly between the threads and
# leave little for the first tile (computed alone) and the last; each 536x536
# block (1.1 MB) is filtered in cache; the halo adds 10% to the work.
GAUSSIAN_TILE: Size = (512, 512)
GAUSSIAN_DASK_CHUNKS: Size = (1500, 2000)
GAUSSIAN_SKIMAGE_CHUNKS: Size = (2000, 2000)

SQUARE_TILE_CANDIDATES: list[Size] = [
    (128, None),
    (256, None),
    (512, None),
    (1024, None),
    (512, 512),
    (1024, 1024),
]
GAUSSIAN_TILE_CANDIDATES: list[Size] = [
    (128, None),
    (256, None),
    (384, None),
    (512, None),
    (512, 512),
    (768, 768),
    (1024, 1024),
]
CHUNK_CANDIDATES: list[Size] = [
    (500, None),
    (1000, None),
    (1500, None),
    (3000, None),
    (1000, 1000),
    (1500, 2000),
    (2000, 2000),
    (3000, 2000),
]


@dataclass(frozen=True)
class Method:
    label: str
    run: Callable[[], np.ndarray]


@dataclass(frozen=True)
class Workload:
    title: str
    reference: Method  # the plain whole-array call
    methods: list[Method]
    target: Callable[[Timing, Timing], str]  # (reference, tilewise) -> verdict line


def resolve(size: Size, image: np.ndarray) -> tuple[int, int]:
    rows, cols = size
    return (rows, image.shape[1] if cols is None else cols)


def square_workload(
    image: np.ndarray, tiles: list[Size], chunks: list[Size], serial: bool
) -> Workload:
    def tilewise_run(tile: tuple[int, int], backend: str = "threads") -> Method:
        return Method(
            f"tilewise {backend}, tile={tile}",
            lambda: tilewise.map_tiles(np.square, image, tile=tile, backend=backend),
        )

    def dask_run(chunk: tuple[int, int]) -> Method:
        return Method(
            f"dask map_blocks threads, chunks={chunk}",
            lambda: (
                da.from_array(image, chunks=chunk)
                .map_blocks(np.square, dtype=image.dtype)
                .compute(scheduler="threads")
            ),
        )

    def target(reference: Timing, tiled: Timing) -> str:
        ratio = tiled.median / reference.median
        verdict = "met" if ratio <= 1.5 else "NOT met"
        return f"tilewise threads: {ratio:.2f}x the whole-array time (target <= 1.5x): {verdict}"

    return Workload(
        title=f"np.square, {image.shape[0]}x{image.shape[1]} float32",
        reference=Method("whole array: np.square(img)", lambda: np.square(image)),
        methods=[tilewise_run(resolve(t, image)) for t in tiles]
        + ([tilewise_run(resolve(tiles[0], image), "serial")] if serial else [])
        + [dask_run(resolve(c, image)) for c in chunks],
        target=target,
    )


def gaussian(block: np.ndarray) -> np.ndarray:
    return ndi.gaussian_filter(block, sigma=SIGMA, mode="reflect")


def gaussian_workload(
    image: np.ndarray,
    tiles: list[Size],
    dask_chunks: list[Size],
    skimage_chunks: list[Size],
    serial: bool,
) -> Workload:
    def tilewise_run(tile: tuple[int, int], backend: str = "threads") -> Method:
        return Method(
            f"tilewise {backend}, tile={tile}",
            lambda: tilewise.map_tiles(
                gaussian, image, tile=tile, halo=HALO, boundary="reflect", backend=backend
            ),
        )

    def dask_run(chunk: tuple[int, int]) -> Method:
        return Method(
            f"dask map_overlap threads, chunks={chunk}",
            lambda: da.map_overlap(
                gaussian,
                da.from_array(image, chunks=chunk),
                depth=HALO,
                boundary="reflect",
                dtype=image.dtype,
            ).compute(scheduler="threads"),
        )

    def skimage_run(chunk: tuple[int, int]) -> Method:
        return Method(
            f"skimage apply_parallel, chunks={chunk}",
            lambda: apply_parallel(
                gaussian, image, chunks=chunk, depth=HALO, mode="reflect", dtype=image.dtype
            ),
        )

    def target(reference: Timing, tiled: Timing) -> str:
        speedup = reference.median / tiled.median
        verdict = "met" if speedup >= 1.8 else "NOT met"
        return f"tilewise threads: {speedup:.2f}x the whole-array speed (target >= 1.8x): {verdict}"

    return Workload(
        title=f"gaussian_filter(sigma={SIGMA}), halo {HALO}, "
        f"{image.shape[0]}x{image.shape[1]} float32",
        reference=Method(f"whole array: gaussian_filter(img, {SIGMA})", lambda: gaussian(image)),
        methods=[tilewise_run(resolve(t, image)) for t in tiles]
        + ([tilewise_run(resolve(tiles[0], image), "serial")] if serial else [])
        + [dask_run(resolve(c, image)) for c in dask_chunks]
        + [skimage_run(resolve(c, image)) for c in skimage_chunks],
        target=target,
    )


def check(method: Method, expected: np.ndarray) -> None:
    """Run ``method`` once (its warm-up) and fail loudly unless it equals ``expected``."""
    result = method.run()
    if result.shape != expected.shape or result.dtype != expected.dtype:
        raise SystemExit(
            f"{method.label}: result has shape {result.shape} and dtype {result.dtype}, "
            f"expected {expected.shape} and {expected.dtype}"
        )
    if not np.array_equal(result, expected):
        wrong = np.argwhere(result != expected)
        diff = np.abs(result.astype(np.float64) - expected.astype(np.float64)).max()
        raise SystemExit(
            f"{method.label}: result differs from the whole-array call at {len(wrong)} pixels "
            f"(first at {tuple(int(i) for i in wrong[0])}, largest difference {diff:g})"
        )


def run(workload: Workload, repeats: int, megapixels: float, targets: bool) -> str:
    print(f"\n{workload.title}", flush=True)
    expected = workload.reference.run()
    for method in workload.methods:
        check(method, expected)
    del expected
    methods = [workload.reference, *workload.methods]
    timings = measure_interleaved({m.label: m.run for m in methods}, repeats, warmup=0)
    reference, tiled = timings[0], timings[1]
    text = table(workload.title, timings, reference, megapixels)
    return f"{text}\n\n{workload.target(reference, tiled)}" if targets else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 1200x800 image, 2 rounds")
    parser.add_argument("--sweep", action="store_true", help="time every tile and chunk size")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 5, 2 with --quick)")
    args = parser.parse_args(argv)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    repeats = args.repeats or (2 if args.quick else 5)
    if repeats < 1:
        parser.error(f"--repeats={repeats}: must be at least 1")

    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    megapixels = image.size / 1e6
    if args.sweep:
        workloads = [
            square_workload(image, SQUARE_TILE_CANDIDATES, CHUNK_CANDIDATES, serial=False),
            gaussian_workload(
                image,
                GAUSSIAN_TILE_CANDIDATES,
                CHUNK_CANDIDATES,
                CHUNK_CANDIDATES,
                serial=False,
            ),
        ]
    else:
        workloads = [
            square_workload(image, [SQUARE_TILE], [SQUARE_DASK_CHUNKS], serial=True),
            gaussian_workload(
                image,
                [GAUSSIAN_TILE],
                [GAUSSIAN_DASK_CHUNKS],
                [GAUSSIAN_SKIMAGE_CHUNKS],
                serial=True,
            ),
        ]

    print(f"machine: {machine(('numpy', 'scipy', 'dask', 'scikit-image', 'tilewise'))}")
    print(
        f"image: {shape[0]}x{shape[1]} float32 ({megapixels:g} megapixels); "
        f"median of {repeats} rounds after a checked warm-up; "
        f"threads: tilewise {usable_cpus()}, dask {dask.system.CPU_COUNT}",
        flush=True,
    )
    with LoadElsewhere() as load:
        # The targets are set for the chosen tiles on the full-size image.
        targets = shape == FULL_SHAPE and not args.sweep
        tables = [run(workload, repeats, megapixels, targets) for workload in workloads]
    print()
    for text in tables:
        print(text, end="\n\n")
    if load.share is not None:
        print(f"Other processes took {load.share:.0%} of the machine's CPU time during the run.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
