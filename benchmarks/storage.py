"""A 3x3 mean from store to store: Zarr on a local disk, Zarr in S3, .npy files.

``python -m benchmarks.storage`` writes a float32 input at each size asked
for: a Zarr v3 store (zarr's default codec, zstd; chunks of 1024) on the
local disk and in moto's S3 server (started on loopback, in a process of its
own), and a ``.npy`` file. Then, side by side, for each store:

- ``tilewise``: ``map_tiles(mean3, input, out=output, tile=1024, halo=1,
  backend="threads")``, each tile's data forced to disk (or acknowledged by
  the store) before it is journalled;
- ``tilewise-processes``: the same on worker processes;
- ``dask`` (Zarr): ``da.from_zarr(store).map_overlap(mean3, depth=1,
  boundary="reflect").to_zarr(out)`` on dask's threaded scheduler, which
  neither journals nor forces its writes to disk;
- ``memmap-copy`` (``.npy``): no mean, a plain copy of the file through two
  memory maps, band by band, as the bound a disk sets; and
  ``memmap-copy-durable``: the same, then ``flush()`` (``msync``), so that
  its output is on disk when it returns, as tilewise's is.

Each method runs in a process of its own, which samples its whole process
tree's pinned memory (:mod:`benchmarks.memory`) over each timed run; before
each run the page cache's dirty pages are written out (``os.sync``), so no
run pays for another's writes. Each result is checked against
``scipy.ndimage.uniform_filter`` of the whole input (a copy against the
input) on a window of its interior. moto keeps every object in its own
memory and is a Python server: the S3 figures are what both libraries make
of one such store on two cores, not of a real bucket. The report
(``results.md``, ``results.json``) goes to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.child import median_rate, report_to_parent, run_child
from benchmarks.machine import machine
from benchmarks.memory import TreeSampler
from benchmarks.report import write_side_by_side

#: Sizes as (rows, cols) of float32.
SIZES = {"small": (2048, 1536), "256mib": (8192, 8192), "4gib": (32768, 32768)}
CHUNK = 1024
#: What runs on each store; the last is what tilewise is compared with.
METHODS = {
    "local": ("tilewise", "tilewise-processes", "dask"),
    "s3": ("tilewise", "tilewise-processes", "dask"),
    "npy": ("tilewise", "tilewise-processes", "memmap-copy", "memmap-copy-durable"),
}
#: The targets: tilewise's speed over the last method's, on the local stores; its memory.
SPEED_TARGETS = {"local": 1.5, "npy": 0.9}
PINNED_TARGET = 400 * 2**20
#: Marks the child's report on its stdout.
PREFIX = "zarr-bench: "
BUCKET = "tilewise-bench"


def mean3(block: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.uniform_filter(block, 3)


def storage_options(endpoint: str | None) -> dict[str, Any] | None:
    """moto's S3 server at ``endpoint`` (any credentials do), or None for a local store."""
    if endpoint is None:
        return None
    return {"key": "bench", "secret": "bench", "endpoint_url": endpoint}


def write_input(url: str, rows: int, cols: int, options: dict[str, Any] | None) -> None:
    """Smooth noise, row of chunks by row of chunks: nothing whole in memory."""
    import zarr
    from scipy import ndimage as ndi

    if url.endswith(".npy"):
        array: Any = np.lib.format.open_memmap(url, "w+", np.float32, (rows, cols))
    else:
        array = zarr.create_array(
            url, shape=(rows, cols), chunks=(CHUNK, CHUNK), dtype="float32", overwrite=True,
            storage_options=options,
        )  # fmt: skip
    rng = np.random.default_rng(0)
    for top in range(0, rows, CHUNK):
        band = rng.random((min(CHUNK, rows - top), cols), dtype=np.float32)
        array[top : top + CHUNK] = ndi.gaussian_filter(band, 2)


def run(method: str, source: str, out: str, options: dict[str, Any] | None) -> None:
    if method.startswith("memmap-copy"):
        given = np.load(source, mmap_mode="r")
        copy = np.lib.format.open_memmap(out, "w+", given.dtype, given.shape)
        for top in range(0, given.shape[0], CHUNK):
            copy[top : top + CHUNK] = given[top : top + CHUNK]
        if method == "memmap-copy-durable":
            copy.flush()
        del copy
        return
    if method == "dask":
        import dask
        import dask.array as da

        with dask.config.set(scheduler="threads"):
            image = da.from_zarr(source, storage_options=options)
            smooth = image.map_overlap(mean3, depth=1, boundary="reflect")
            smooth.to_zarr(out, storage_options=options, overwrite=True)
        return
    from tilewise import map_tiles

    backend = "processes" if method == "tilewise-processes" else "threads"
    map_tiles(mean3, source, out=out, tile=CHUNK, halo=1, backend=backend, storage_options=options)


def interior_error(method: str, source: str, out: str, options: dict[str, Any] | None) -> float:
    """Largest difference from scipy's 3x3 mean (or the input) on a window inside the image."""
    from scipy import ndimage as ndi

    given, result = _open(source, options), _open(out, options)
    rows, cols = given.shape
    side = min(1500, rows - 2, cols - 2)
    top, left = (rows - side) // 2, (cols - side) // 2
    padded = np.asarray(given[top - 1 : top + side + 1, left - 1 : left + side + 1])
    copied = method.startswith("memmap-copy")
    expected = (padded if copied else ndi.uniform_filter(padded, 3))[1:-1, 1:-1]
    got = np.asarray(result[top : top + side, left : left + side])
    return float(np.max(np.abs(got - expected)))


def _open(url: str, options: dict[str, Any] | None) -> Any:
    import zarr

    if url.endswith(".npy"):
        return np.load(url, mmap_mode="r")
    return zarr.open_array(url, mode="r", storage_options=options)


def remove(url: str, options: dict[str, Any] | None) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    if fs.exists(path):
        fs.rm(path, recursive=True)


def measure(method: str, source: str, out: str, endpoint: str | None, runs: int) -> dict[str, Any]:
    """In this process: a warm-up, then ``runs`` timed runs, each sampled."""
    options = storage_options(endpoint)
    run(method, source, out, options)
    seconds, pinned = [], []
    with TreeSampler(os.getpid()) as sampler:
        for _ in range(runs):
            remove(out, options)
            os.sync()  # the last run's writes reach the disk outside this run's time
            sampler.open()
            start = time.perf_counter()
            run(method, source, out, options)
            seconds.append(time.perf_counter() - start)
            pinned.append(sampler.close().pinned)
    error = interior_error(method, source, out, options)
    remove(out, options)
    return {"seconds": seconds, "pinned": pinned, "error": error}


def child(argv: list[str]) -> int:
    method, source, out, endpoint, runs = argv
    report_to_parent(PREFIX, measure(method, source, out, endpoint or None, int(runs)))
    return 0


def run_method(method: str, source: str, out: str, endpoint: str | None, runs: int) -> Any:
    """One method in a process of its own, from the repository's root."""
    args = [source, out, endpoint or "", str(runs)]
    return run_child("benchmarks.storage", PREFIX, method, args)


class MotoServer:
    """moto's S3 server on a free loopback port, in a process of its own."""

    def __enter__(self) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        endpoint = f"http://127.0.0.1:{port}"
        import s3fs

        fs = s3fs.S3FileSystem(**(storage_options(endpoint) or {}))
        for _ in range(200):  # until it answers
            try:
                fs.call_s3("create_bucket", Bucket=BUCKET)
                return endpoint
            except OSError:  # noqa: PERF203 - polled until the server answers
                time.sleep(0.05)
        raise RuntimeError("moto's S3 server did not start")

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.wait()


def table(store: str, size: str, results: dict[str, Any]) -> list[str]:
    """One store and size: each method's figures, over the last method's, and the targets."""
    rows, cols = SIZES[size]
    megapixels = rows * cols / 1e6
    versus = METHODS[store][-1]
    lines = [
        f"### {store}, {size} ({rows} x {cols} float32)",
        "",
        f"| method | median s | MP/s | x {versus} | pinned MiB | max error |",
        "|---|---|---|---|---|---|",
    ]
    base = median_rate(results.get(versus, {}), megapixels)
    for method, result in results.items():
        if "failed" in result:
            lines.append(f"| {method} | failed: {result['failed']} | | | | |")
            continue
        rate = median_rate(result, megapixels)
        over = f"{rate / base:.2f}" if base else ""
        pinned = max(result["pinned"]) / 2**20
        lines.append(
            f"| {method} | {statistics.median(result['seconds']):.2f} | {rate:.1f} | {over} "
            f"| {pinned:.0f} | {result['error']:.1e} |"
        )
    lines.append("")
    target = SPEED_TARGETS.get(store)
    ran = [m for m in ("tilewise", "tilewise-processes") if "seconds" in results.get(m, {})]
    if target is not None and base and ran:
        best = max(ran, key=lambda m: median_rate(results[m], megapixels))
        ratio = median_rate(results[best], megapixels) / base
        fits = max(results[best]["pinned"]) <= PINNED_TARGET
        lines += [
            f"- Target: tilewise >= {target}x the MP/s of {versus}: {ratio:.2f}x ({best}), "
            f"{'met' if ratio >= target else 'not met'}; tilewise pins at most 400 MiB: "
            f"{'met' if fits else 'not met'}.",
            "",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.storage", description=__doc__)
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=["256mib", "4gib"])
    parser.add_argument(
        "--s3-sizes", nargs="*", choices=SIZES, default=["256mib"],
        help="sizes also run against the S3 server (it holds them in its memory)",
    )  # fmt: skip
    parser.add_argument("--stores", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each method")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tilewise-storage-bench"))
    parser.add_argument("--out", type=Path, default=Path("out/bench-storage"))
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TILEWISE_STATE_DIR", str(args.work / "state"))
    started = time.perf_counter()
    report: dict[str, Any] = {}
    lines = ["## A 3x3 mean from store to store: Zarr local and in S3, .npy", ""]
    runs = [(store, size) for store in args.stores if store != "s3" for size in args.sizes]
    runs += [("s3", size) for size in args.s3_sizes if "s3" in args.stores]
    with MotoServer() as endpoint:
        for store, size in runs:
            where = endpoint if store == "s3" else None
            base = f"s3://{BUCKET}" if store == "s3" else str(args.work)
            suffix = ".npy" if store == "npy" else ".zarr"
            source = f"{base}/in-{size}{suffix}"
            if where is not None or not Path(source).exists():
                write_input(source, *SIZES[size], storage_options(where))
            results = {}
            for method in METHODS[store]:
                out = f"{base}/{method}-{size}{suffix}"
                results[method] = run_method(method, source, out, where, args.runs)
                outcome = results[method].get("seconds", results[method].get("failed"))
                print(f"{store} {size} {method}: {outcome}", file=sys.stderr, flush=True)
            report[f"{store}-{size}"] = results
            lines += table(store, size, results)
    packages = machine(("numpy", "zarr", "numcodecs", "dask", "s3fs", "moto"))
    write_side_by_side(args.out, lines, report, packages, args.runs, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
