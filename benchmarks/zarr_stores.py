"""Zarr -> 3x3 mean -> Zarr, on a local disk and in S3: tilewise against dask, side by side.

``python -m benchmarks.zarr_stores`` writes a float32 Zarr v3 store (zarr's
default codec, zstd; chunks of 1024) at each size asked for, on the local
disk and in moto's S3 server (started on loopback, in a process of its own),
then times three ways of computing its 3x3 mean into a new store of the same
chunks and codec:

- ``tilewise``: ``map_tiles(mean3, store, out=store, tile=1024, halo=1,
  backend="threads")``, each tile's data forced to disk (or acknowledged by
  the store) before it is journalled;
- ``tilewise-processes``: the same on worker processes;
- ``dask``: ``da.from_zarr(store).map_overlap(mean3, depth=1,
  boundary="reflect").to_zarr(out)`` on dask's threaded scheduler, which
  neither journals nor forces its writes to disk.

Each method runs in a process of its own, which samples its whole process
tree's pinned memory (:mod:`benchmarks.memory`) over each timed run; before
each run the page cache's dirty pages are written out (``os.sync``), so no
run pays for another's writes. Each result is checked against
``scipy.ndimage.uniform_filter`` of the whole input on a window of its
interior. moto keeps every object in its own memory and is a Python
server: the S3 figures are what both libraries make of one such store on
two cores, not of a real bucket. The report (``results.md``,
``results.json``) goes to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import machine
from benchmarks.memory import TreeSampler

#: Sizes as (rows, cols) of float32.
SIZES = {"small": (2048, 1536), "256mib": (8192, 8192), "4gib": (32768, 32768)}
CHUNK = 1024
METHODS = ("tilewise", "tilewise-processes", "dask")
#: The targets of the local runs: tilewise's speed against dask's, its memory.
SPEEDUP_TARGET = 1.5
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

    array = zarr.create_array(
        url, shape=(rows, cols), chunks=(CHUNK, CHUNK), dtype="float32", overwrite=True,
        storage_options=options,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for top in range(0, rows, CHUNK):
        band = rng.random((min(CHUNK, rows - top), cols), dtype=np.float32)
        array[top : top + CHUNK] = ndi.gaussian_filter(band, 2)


def run(method: str, source: str, out: str, options: dict[str, Any] | None) -> None:
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


def interior_error(source: str, out: str, options: dict[str, Any] | None) -> float:
    """Largest difference from scipy's 3x3 mean on a window inside the image."""
    import zarr
    from scipy import ndimage as ndi

    given = zarr.open_array(source, mode="r", storage_options=options)
    result = zarr.open_array(out, mode="r", storage_options=options)
    rows, cols = given.shape
    side = min(1500, rows - 2, cols - 2)
    top, left = (rows - side) // 2, (cols - side) // 2
    padded = np.asarray(given[top - 1 : top + side + 1, left - 1 : left + side + 1])
    expected = ndi.uniform_filter(padded, 3)[1:-1, 1:-1]
    got = np.asarray(result[top : top + side, left : left + side])
    return float(np.max(np.abs(got - expected)))


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
    error = interior_error(source, out, options)
    remove(out, options)
    return {"seconds": seconds, "pinned": pinned, "error": error}


def child(argv: list[str]) -> int:
    method, source, out, endpoint, runs = argv
    report = measure(method, source, out, endpoint or None, int(runs))
    print(PREFIX + json.dumps(report), flush=True)
    return 0


def run_method(method: str, source: str, out: str, endpoint: str | None, runs: int) -> Any:
    """One method in a process of its own, from the repository's root."""
    command = [sys.executable, "-m", "benchmarks.zarr_stores", "--child", method]
    done = subprocess.run(
        [*command, source, out, endpoint or "", str(runs)],
        capture_output=True, text=True, check=False, env={**os.environ},
    )  # fmt: skip
    if done.returncode != 0:
        print(f"{method} failed:\n{done.stderr[-4000:]}", file=sys.stderr)
        return {"failed": done.stderr.strip().splitlines()[-1][:200]}
    line = next(line for line in done.stdout.splitlines() if line.startswith(PREFIX))
    return json.loads(line[len(PREFIX) :])


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


def table(store: str, size: str, rows: int, results: dict[str, Any]) -> list[str]:
    megapixels = rows * SIZES[size][1] / 1e6
    lines = [
        f"### {store}, {size} ({rows} x {SIZES[size][1]} float32)",
        "",
        "| method | median s | MP/s | x dask | pinned MiB | max error |",
        "|---|---|---|---|---|---|",
    ]
    dask_rate = _rate(results.get("dask", {}), megapixels)
    for method, result in results.items():
        if "failed" in result:
            lines.append(f"| {method} | failed: {result['failed']} | | | | |")
            continue
        rate = _rate(result, megapixels)
        ratio = f"{rate / dask_rate:.2f}" if dask_rate else ""
        pinned = max(result["pinned"]) / 2**20
        lines.append(
            f"| {method} | {statistics.median(result['seconds']):.2f} | {rate:.1f} | {ratio} "
            f"| {pinned:.0f} | {result['error']:.1e} |"
        )
    lines.append("")
    if store == "local" and dask_rate and "failed" not in results.get("tilewise", {"failed": 1}):
        rate = _rate(results["tilewise"], megapixels)
        met = "met" if rate >= SPEEDUP_TARGET * dask_rate else "not met"
        fits = max(results["tilewise"]["pinned"]) <= PINNED_TARGET
        lines += [
            f"- Target: tilewise >= {SPEEDUP_TARGET}x dask's MP/s: {rate / dask_rate:.2f}x, "
            f"{met}; tilewise pins at most 400 MiB: {'met' if fits else 'not met'}.",
            "",
        ]
    return lines


def _rate(result: dict[str, Any], megapixels: float) -> float:
    if "seconds" not in result:
        return 0.0
    return megapixels / statistics.median(result["seconds"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.zarr_stores", description=__doc__)
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=["256mib", "4gib"])
    parser.add_argument(
        "--s3-sizes", nargs="*", choices=SIZES, default=["256mib"],
        help="sizes also run against the S3 server (it holds them in its memory)",
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each method")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/tilewise-zarr-bench"))
    parser.add_argument("--out", type=Path, default=Path("out/bench-zarr"))
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TILEWISE_STATE_DIR", str(args.work / "state"))
    started = time.perf_counter()
    report: dict[str, Any] = {}
    lines = ["## Zarr -> 3x3 mean -> Zarr, local and in S3", ""]
    runs: list[tuple[str, str, str | None]] = [("local", size, None) for size in args.sizes]
    with MotoServer() as endpoint:
        runs += [("s3", size, endpoint) for size in args.s3_sizes]
        for store, size, where in runs:
            rows, cols = SIZES[size]
            base = str(args.work) if where is None else f"s3://{BUCKET}"
            source = f"{base}/in-{size}.zarr"
            if where is not None or not Path(source).exists():
                write_input(source, rows, cols, storage_options(where))
            results = {}
            for method in args.methods:
                out = f"{base}/{method}-{size}.zarr"
                results[method] = run_method(method, source, out, where, args.runs)
                outcome = results[method].get("seconds", results[method].get("failed"))
                print(f"{store} {size} {method}: {outcome}", file=sys.stderr, flush=True)
            report[f"{store}-{size}"] = results
            lines += table(store, size, rows, results)
    lines += [
        f"- Machine: {machine(('numpy', 'zarr', 'numcodecs', 'dask', 's3fs', 'moto'))}.",
        f"- {args.runs} timed runs of each method, medians; the run took "
        f"{(time.perf_counter() - started) / 60:.1f} min.",
    ]
    (args.out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
