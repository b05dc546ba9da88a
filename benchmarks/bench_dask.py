"""The dask backend against the processes backend and dask.array on the same cluster.

One LocalCluster of 2 single-threaded worker processes on loopback (its
start-up is timed on its own line), then, side by side in one run:

a) the pure-Python per-pixel slope (a 3x3 double loop) on a 1024x1024
   float64 image, tiles and chunks of 256 (16), halo 1, boundary "nearest";
b) ``scipy.ndimage.gaussian_filter(sigma=3)`` on a 6000x4000 float32 image
   (24 megapixels), halo 12 (the filter's radius), boundary "reflect",
   tiles and chunks of 512;
c) the same filter from a Zarr store to a Zarr store (chunks of 512, zarr's
   default compression), as a cluster is meant to be used: workers read
   their windows and write their tiles themselves.

Each through ``tilewise.map_tiles(backend="dask", client=...)`` on that
cluster, ``backend="processes"`` with 2 workers on this machine, and
``dask.array`` ``map_overlap`` computed on the same cluster (a, b:
``from_array``, the numpy image in, a numpy array out; c: ``from_zarr`` to
``to_zarr``). Every result must equal the first method's exactly (checked
in the warm-up round); then the methods take turns,
``--repeats`` rounds, and the tables give medians of the wall time and of
the CPU time of the whole process tree (this process, which also hosts the
scheduler, and every worker process): on a shared machine the CPU time
shows what each method costs when the wall time is blurred by other load.

Usage::

    python benchmarks/bench_dask.py            # everything
    python benchmarks/bench_dask.py --quick    # small images, 2 rounds
    python benchmarks/bench_dask.py --only slope|gaussian   # gaussian: b and c
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import psutil
import zarr
from distributed import Client, LocalCluster
from scipy import ndimage as ndi

import tilewise
from tilewise.executors.dask import PRE_SPAWN_ENVIRON

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Timing, machine, table

WORKERS = 2
PROCESSES = "tilewise processes, 2 workers"
DASK = "tilewise dask, 2-worker LocalCluster"
MAP_OVERLAP = "dask.array map_overlap, same cluster"
SIGMA = 3.0
HALO = 12  # gaussian_filter's radius: int(truncate * sigma + 0.5) with truncate=4


def slope(block: np.ndarray) -> np.ndarray:
    """Slope from the 3x3 neighbourhood, one pixel at a time; border pixels stay 0."""
    rows, cols = block.shape
    out = np.zeros((rows, cols))
    for y in range(1, rows - 1):
        for x in range(1, cols - 1):
            dzdx = (block[y, x + 1] - block[y, x - 1]) / 2
            dzdy = (block[y + 1, x] - block[y - 1, x]) / 2
            out[y, x] = math.atan(math.hypot(dzdx, dzdy))
    return out


def gaussian(block: np.ndarray) -> np.ndarray:
    return ndi.gaussian_filter(block, SIGMA)


def start_cluster() -> tuple[LocalCluster, Client, float]:
    """Two worker processes, made as tilewise makes its own LocalCluster (docs/cluster.md)."""
    start = time.perf_counter()
    # Without Dask's MALLOC_TRIM_THRESHOLD_ in the workers, which costs array
    # work about a third more CPU time; both dask methods run on this cluster.
    with dask.config.set({f"{PRE_SPAWN_ENVIRON}.MALLOC_TRIM_THRESHOLD_": None}):
        cluster = LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    # As tilewise's own LocalCluster does: results come straight from the workers.
    client = Client(cluster, direct_to_workers=True)
    client.wait_for_workers(WORKERS)
    return cluster, client, time.perf_counter() - start


def compare(
    title: str,
    func: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    *,
    client: Client,
    tile: int,
    halo: int,
    boundary: str,
    repeats: int,
) -> str:
    """In memory: every method gets the numpy image and returns a numpy array."""
    options = {"tile": tile, "halo": halo, "boundary": boundary}
    dask_boundary = {"nearest": "nearest", "reflect": "reflect"}[boundary]  # numpy's names

    def on_dask() -> np.ndarray:
        return tilewise.map_tiles(func, image, backend="dask", client=client, **options)

    def on_processes() -> np.ndarray:
        return tilewise.map_tiles(func, image, backend="processes", workers=WORKERS, **options)

    def with_map_overlap() -> np.ndarray:
        array = da.from_array(image, chunks=tile)
        result = array.map_overlap(func, depth=halo, boundary=dask_boundary, dtype=image.dtype)
        with warnings.catch_warnings():
            # "Sending large graph": from_array puts the image in the graph, as
            # users write it; scattering it first measured no faster here.
            warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
            return client.compute(result).result()

    runs = {PROCESSES: on_processes, DASK: on_dask, MAP_OVERLAP: with_map_overlap}
    return side_by_side(title, runs, lambda result: result, image.size / 1e6, repeats)


def compare_files(
    title: str,
    func: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    *,
    client: Client,
    folder: Path,
    tile: int,
    halo: int,
    repeats: int,
) -> str:
    """Zarr to Zarr: workers read their windows and write their tiles themselves."""
    source = folder / "in.zarr"
    zarr.create_array(str(source), data=image, chunks=(tile, tile))
    out = folder / "out.zarr"
    options = {"tile": tile, "halo": halo, "boundary": "reflect", "out": out}

    def on_dask() -> object:
        return tilewise.map_tiles(func, source, backend="dask", client=client, **options)

    def on_processes() -> object:
        return tilewise.map_tiles(func, source, backend="processes", workers=WORKERS, **options)

    def with_map_overlap() -> object:
        array = da.from_zarr(str(source))
        result = array.map_overlap(func, depth=halo, boundary="reflect", dtype=image.dtype)
        return client.compute(result.to_zarr(str(out), compute=False)).result()

    def read_and_remove(_: object) -> np.ndarray:
        result = np.asarray(zarr.open_array(str(out), mode="r")[:])
        shutil.rmtree(out)
        return result

    runs = {
        f"{PROCESSES}, zarr to zarr": on_processes,
        f"{DASK}, zarr to zarr": on_dask,
        f"{MAP_OVERLAP} + to_zarr": with_map_overlap,
    }
    try:
        return side_by_side(
            title,
            runs,
            read_and_remove,
            image.size / 1e6,
            repeats,
            after=lambda: shutil.rmtree(out),
        )
    finally:
        shutil.rmtree(source)


def side_by_side(
    title: str,
    runs: dict[str, Callable[[], object]],
    result_of: Callable[[object], np.ndarray],
    megapixels: float,
    repeats: int,
    after: Callable[[], object] = lambda: None,
) -> str:
    """Check every method against the first once, then time them taking turns."""
    reference = None
    for label, run in runs.items():
        result = result_of(run())
        if reference is None:
            reference = result
        np.testing.assert_array_equal(result, reference, err_msg=label)
    load = _load_before()
    timings, cpu = measure_wall_and_cpu(runs, repeats, after)
    cpu_lines = "\n".join(
        f"- {label}: {seconds:.2f} CPU s per run (whole process tree)"
        for label, seconds in cpu.items()
    )
    return (
        table(title, timings, timings[0], megapixels)
        + f"\n\n{targets(timings)}\n\n{cpu_lines}\n\n{load}"
    )


def tree_cpu_seconds() -> float:
    """User + system CPU time of this process and all its descendants alive now."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def measure_wall_and_cpu(
    runs: dict[str, Callable[[], object]], repeats: int, after: Callable[[], object]
) -> tuple[list[Timing], dict[str, float]]:
    """Like harness.measure_interleaved (methods take turns), also timing the CPU.

    ``after`` runs after each timed call, untimed (removing an output file).
    """
    wall: dict[str, list[float]] = {label: [] for label in runs}
    cpu: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            cpu_start, start = tree_cpu_seconds(), time.perf_counter()
            run()
            wall[label].append(time.perf_counter() - start)
            cpu[label].append(tree_cpu_seconds() - cpu_start)
            after()
    timings = [Timing(label, seconds) for label, seconds in wall.items()]
    for timing in timings:
        print(f"  {timing.label:<44} median {timing.median:8.4f} s", flush=True)
    return timings, {label: statistics.median(seconds) for label, seconds in cpu.items()}


def targets(timings: list[Timing]) -> str:
    """The ratios the dask backend is held to, in the order of the table's rows."""
    processes, on_dask, overlap = (t.median for t in timings)
    return (
        f"- dask backend / processes backend: {on_dask / processes:.2f}x (target <= 1.30x)\n"
        f"- dask backend / map_overlap on the same cluster: {on_dask / overlap:.2f}x "
        "(target <= 1.00x)"
    )


def _load_before() -> str:
    with contextlib.suppress(OSError, AttributeError):
        return f"Load average (1 min) before the timings: {os.getloadavg()[0]:.2f}"
    return "Load average: n/a"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small images, 2 rounds")
    parser.add_argument("--only", choices=("slope", "gaussian"))
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    slope_size = 256 if args.quick else 1024
    shape = (1200, 800) if args.quick else (6000, 4000)
    repeats = args.repeats or (2 if args.quick else 5)
    print(machine(("numpy", "scipy", "dask", "distributed")))
    cluster, client, started = start_cluster()
    sections = [f"LocalCluster start-up ({WORKERS} worker processes): {started:.2f} s"]
    try:
        if args.only in (None, "slope"):
            rng = np.random.default_rng(0)
            terrain = rng.standard_normal((slope_size, slope_size)).cumsum(0).cumsum(1)
            sections.append(
                compare(
                    f"a) pure-Python slope, {slope_size}x{slope_size} float64, tiles of "
                    f"{slope_size // 4}, halo 1",
                    slope,
                    terrain,
                    client=client,
                    tile=slope_size // 4,
                    halo=1,
                    boundary="nearest",
                    repeats=repeats,
                )
            )
        if args.only in (None, "gaussian"):
            image = np.random.default_rng(1).random(shape, dtype=np.float32)
            sections.append(
                compare(
                    f"b) gaussian_filter(sigma={SIGMA:g}), {shape[0]}x{shape[1]} float32, "
                    f"tiles of 512, halo {HALO}",
                    gaussian,
                    image,
                    client=client,
                    tile=512,
                    halo=HALO,
                    boundary="reflect",
                    repeats=repeats,
                )
            )
            with tempfile.TemporaryDirectory(prefix="bench-dask-") as folder:
                sections.append(
                    compare_files(
                        f"c) the same, file to file: Zarr (chunks of 512) to Zarr, "
                        f"{shape[0]}x{shape[1]} float32",
                        gaussian,
                        image,
                        client=client,
                        folder=Path(folder),
                        tile=512,
                        halo=HALO,
                        repeats=repeats,
                    )
                )
    finally:
        client.close()
        cluster.close()
        tilewise.shutdown()
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
