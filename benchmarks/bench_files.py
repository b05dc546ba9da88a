"""File to file, bigger than memory: a 3x3 mean over a 4 GiB image, tilewise against dask.

The image (float32, square, ``--gib`` GiB) is generated into a temporary
folder as ``.npy`` and as a Zarr store (chunks 1024 x 1024), then filtered
with ``scipy.ndimage.uniform_filter(size=3)`` (halo 1, reflect) by:

- tilewise, ``.npy`` -> ``.npy``, on threads and on processes;
- tilewise, Zarr -> Zarr (one chunk per tile), on threads;
- dask, ``da.from_zarr(...).map_overlap(uniform_filter, depth=1,
  boundary="reflect").to_zarr(...)`` on its threaded scheduler: what a
  user would write instead.

Each run is a fresh process under ``../shared/tools/peakmem``, which
samples the memory of the whole process tree: *pinned* (anonymous plus
shared memory, PSS: what the run holds) is the budget, RSS (which also
counts the file pages memory maps touch, which the kernel can drop) is
shown beside it. The time is that of the call alone, measured in the
child. tilewise's file outputs are durable (fsync before each journal
record, for resume); dask's are not, so tilewise also pays for writing the
output to disk. The methods take turns, ``--repeats`` rounds; medians are
reported. One window of every output is checked against dask's, then the
output is deleted, so every run sees the same files on disk.

Usage::

    python benchmarks/bench_files.py                    # 4 GiB, 3 rounds
    python benchmarks/bench_files.py --gib 0.25 --repeats 1   # a quick look
    python benchmarks/bench_files.py --dir /scratch     # where the 12 GiB of files go
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import LoadElsewhere, machine

PEAKMEM = Path(__file__).resolve().parents[2] / "shared" / "tools" / "peakmem"
CHUNK = 1024  # Zarr chunks of the input, and dask's chunks
TILE = 1024  # tilewise's tiles (and so the output's Zarr chunks)

METHODS = {
    "tilewise npy->npy, threads": ("npy", "threads"),
    "tilewise npy->npy, processes": ("npy", "processes"),
    "tilewise zarr->zarr, threads": ("zarr", "threads"),
    "dask zarr->zarr (map_overlap, threads)": ("zarr", "dask"),
}
DASK = "dask zarr->zarr (map_overlap, threads)"


def generate(folder: Path, side: int) -> None:
    """The same float32 image as .npy and as Zarr, written band by band (bounded memory)."""
    import zarr

    npy = np.lib.format.open_memmap(folder / "in.npy", "w+", np.float32, (side, side))
    store = zarr.create_array(
        store=str(folder / "in.zarr"), shape=(side, side), chunks=(CHUNK, CHUNK), dtype="f4"
    )
    rng = np.random.default_rng(0)
    for start in range(0, side, CHUNK):
        band = rng.random((min(CHUNK, side - start), side), dtype=np.float32)
        npy[start : start + len(band)] = band
        store[start : start + len(band)] = band
    npy.flush()
    del npy


def run_method(label: str, folder: Path, workers: int) -> float:
    """Run one method on the files in ``folder``; the seconds its call took."""
    from scipy import ndimage as ndi

    kind, backend = METHODS[label]
    smooth = partial(ndi.uniform_filter, size=3)
    start = time.perf_counter()
    if backend == "dask":
        import dask.array as da

        image = da.from_zarr(str(folder / "in.zarr"))
        image.map_overlap(smooth, depth=1, boundary="reflect").to_zarr(
            str(folder / "dask.zarr"), overwrite=True
        )
    else:
        import tilewise

        tilewise.map_tiles(
            smooth,
            folder / f"in.{kind}",
            out=folder / f"out.{kind}",
            tile=TILE,
            halo=1,
            backend=backend,
            workers=workers,
        )
    return time.perf_counter() - start


def measured(label: str, folder: Path, workers: int) -> dict[str, float]:
    """One run in a fresh process tree, under peakmem: seconds, pinned MiB, RSS MiB."""
    os.sync()  # the last run's dirty pages are written now, not during this one
    command = [
        sys.executable, __file__, "--child", label, "--dir", str(folder), "--workers", str(workers)
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(PEAKMEM), "--json", "--", *command],
        capture_output=True,
        text=True,
        check=True,
    )
    memory = json.loads(done.stderr.strip().splitlines()[-1])
    seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    print(
        f"  {label:<40} {seconds:7.2f} s  pinned {memory['peak_pinned_mib']:4d} MiB  "
        f"RSS {memory['peak_rss_mib']:5d} MiB",
        flush=True,
    )
    return {
        "seconds": seconds,
        "pinned": memory["peak_pinned_mib"],
        "rss": memory["peak_rss_mib"],
    }


def output_window(label: str, folder: Path) -> np.ndarray:
    """A window of the method's output across a tile edge, read back; then the output is deleted.

    Deleting each output at once keeps the files on disk (and in the page
    cache) the same for every method: the two inputs and one output.
    """
    import zarr

    kind, backend = METHODS[label]
    path = folder / ("dask.zarr" if backend == "dask" else f"out.{kind}")
    side = np.load(folder / "in.npy", mmap_mode="r").shape[0]
    window = (slice(side // 2 - 300, side // 2 + 300), slice(0, 600))
    if path.suffix == ".zarr":
        found = zarr.open_array(str(path), mode="r")[window]
        shutil.rmtree(path)
    else:
        found = np.array(np.load(path, mmap_mode="r")[window])
        path.unlink()
    return found


def table(results: dict[str, list[dict[str, float]]], megapixels: float) -> str:
    dask_rate = megapixels / statistics.median(r["seconds"] for r in results[DASK])
    lines = [
        "| method | median (s) | megapixels/s | x dask | peak pinned (MiB) | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        lines.append(
            f"| {label} | {seconds:.2f} | {megapixels / seconds:.0f} | "
            f"{megapixels / seconds / dask_rate:.2f} | {max(r['pinned'] for r in runs):.0f} | "
            f"{max(r['rss'] for r in runs):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=4.0, help="input size in GiB (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every method")
    parser.add_argument("--workers", type=int, default=None, help="default: the CPUs available")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from tilewise._plan import available_cpus

    workers = args.workers or available_cpus()
    if args.child:
        print(json.dumps({"seconds": run_method(args.child, args.dir, workers)}))
        return
    side = int((args.gib * 2**30 / 4) ** 0.5)
    megapixels = side * side / 1e6
    print(f"{machine(('numpy', 'scipy', 'zarr', 'dask'))}")
    print(
        f"image {side} x {side} float32 ({side * side * 4 / 2**30:.2f} GiB, "
        f"{megapixels:.0f} MP), tile {TILE}, {workers} workers, {args.repeats} rounds"
    )
    folder = Path(tempfile.mkdtemp(prefix="tilewise-bench-files-", dir=args.dir))
    try:
        started = time.perf_counter()
        generate(folder, side)
        print(f"generated the .npy and Zarr inputs in {time.perf_counter() - started:.0f} s")
        results: dict[str, list[dict[str, float]]] = {label: [] for label in METHODS}
        with LoadElsewhere() as load:
            for round_ in range(args.repeats):
                print(f"round {round_ + 1}:")
                windows = {}
                for label in METHODS:
                    results[label].append(measured(label, folder, workers))
                    windows[label] = output_window(label, folder)
                reference = windows.pop(DASK)
                for window in windows.values():  # tilewise's results are dask's
                    np.testing.assert_allclose(window, reference, rtol=1e-5, atol=1e-6)
        print()
        print(table(results, megapixels))
        if load.share is not None:
            print(f"\nCPU time taken elsewhere during the runs: {load.share:.0%} of all CPUs")
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
