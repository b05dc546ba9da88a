"""One method of one workload, timed in a process of its own: ``python -m benchmarks.runner``.

The suite starts one runner per method, so that the memory it samples
(:mod:`benchmarks.memory`) is that method's alone. The runner makes the
input, starts a Dask cluster if the method needs one, and then, inside the
memory window, does a warm-up run and the timed runs. It talks to the suite
on stdout, one JSON object per line after :data:`PREFIX`, and waits on
stdin for the suite's answer at each edge of the memory window, so the
window holds exactly the runs: the input is made before it opens, the
result is checked after it closes.

The argument is the run's settings as JSON (see :func:`settings`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.methods import METHODS, Context, Method, Run
from benchmarks.timing import repeats_for
from benchmarks.workloads import (
    Workload,
    check_window,
    expected_window,
    make_workloads,
    slope,
)
from tilewise._reach import check_reach
from tilewise.executors.dask import MALLOC_TRIM_SETTING

#: Marks the runner's own lines on stdout, among whatever the methods print.
PREFIX = "tilewise-bench: "
#: Every STRIDE-th pixel of each row and column of a result is checked.
STRIDE = 5


def settings(
    workload: str,
    method: str,
    *,
    quick: bool,
    file_gib: float,
    folder: str | None,
    workers: int,
    most: int,
    least: int,
    budget: float,
) -> str:
    """The runner's argument: which method, at which size, how many timed runs.

    >>> json.loads(settings("square", "whole", quick=True, file_gib=0.03, folder=None,
    ...                     workers=2, most=2, least=1, budget=2.0))["method"]
    'whole'
    """
    return json.dumps(
        {
            "workload": workload,
            "method": method,
            "quick": quick,
            "file_gib": file_gib,
            "folder": folder,
            "workers": workers,
            "most": most,
            "least": least,
            "budget": budget,
        }
    )


def send(message: dict[str, Any]) -> None:
    print(PREFIX + json.dumps(message), flush=True)


def handshake(event: str) -> None:
    """Tell the suite ``event`` and wait until it has acted on it (the memory window's edges)."""
    send({"event": event})
    sys.stdin.readline()


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    workload = next(
        w for w in make_workloads(spec["quick"], spec["file_gib"]) if w.name == spec["workload"]
    )
    method = METHODS[spec["method"]]
    folder = Path(spec["folder"]) if spec["folder"] else None
    setup: dict[str, float] = {}
    try:
        image = None if workload.on_files else workload.image()
        with _cluster(method, spec["workers"], setup) as client:
            ctx = Context(workload, image, folder, spec["workers"], client)
            _compile(workload, method, ctx, setup)
            run = method.build(ctx)
            handshake("open")
            warmup, sample = _timed(run, keep=True)
            repeats = repeats_for(warmup, spec["most"], spec["least"], spec["budget"])
            times = [_timed(run)[0] for _ in range(repeats)]
            handshake("close")
        check = _check(workload, ctx, sample)
    except Exception as exc:
        send({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"})
        return 1
    send({"seconds": times, "warmup": warmup, "setup": setup, "check": check})
    return 0


def _timed(run: Run, keep: bool = False) -> tuple[float, np.ndarray | None]:
    """Seconds of one call (the result's release not included); a sample of it if ``keep``."""
    start = time.perf_counter()
    result = run.call()
    elapsed = time.perf_counter() - start
    sample = _sample(result) if keep else None
    del result
    if run.cleanup is not None:
        run.cleanup()
    return elapsed, sample


def _sample(result: Any) -> np.ndarray:
    """What is checked of a result: a grid of its pixels, or a window of its file."""
    if isinstance(result, np.ndarray):
        return np.array(result[::STRIDE, ::STRIDE])
    path = Path(result)
    side = _file_side(path)
    window = check_window(side)
    if path.suffix == ".zarr":
        import zarr

        return np.asarray(zarr.open_array(str(path), mode="r")[window])
    return np.array(np.load(path, mmap_mode="r")[window])


def _file_side(path: Path) -> int:
    if path.suffix == ".zarr":
        import zarr

        return int(zarr.open_array(str(path), mode="r").shape[0])
    return int(np.load(path, mmap_mode="r").shape[0])


def _check(workload: Workload, ctx: Context, sample: np.ndarray | None) -> str:
    """ "ok", or how the result differs from the whole-array call's."""
    assert sample is not None
    if workload.on_files:
        expected = expected_window(ctx.files, workload.shape[0])
    else:
        expected = np.asarray(workload.whole(ctx.array))[::STRIDE, ::STRIDE]
    if sample.shape != expected.shape:
        return f"result sample has shape {sample.shape}, expected {expected.shape}"
    close = np.isclose(sample, expected, rtol=1e-5, atol=1e-6)
    if close.all():
        return "ok"
    largest = float(np.abs(sample.astype(np.float64) - expected).max())
    return (
        f"differs from the whole-array call at {int((~close).sum())} of {close.size} "
        f"checked pixels (largest difference {largest:g})"
    )


@contextlib.contextmanager
def _cluster(method: Method, workers: int, setup: dict[str, float]) -> Iterator[Any]:
    """A LocalCluster of ``workers`` single-threaded processes, if ``method`` needs one.

    Its workers run without the ``MALLOC_TRIM_THRESHOLD_`` Dask's nanny gives
    them, as the cluster guide recommends for tile work: the tilewise dask
    backend and dask.array's methods alike.
    """
    if not method.cluster:
        yield None
        return
    import dask.config
    from distributed import Client, LocalCluster

    start = time.perf_counter()
    with (
        dask.config.set({MALLOC_TRIM_SETTING: None}),
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        setup["LocalCluster start-up"] = time.perf_counter() - start
        yield client


def _compile(workload: Workload, method: Method, ctx: Context, setup: dict[str, float]) -> None:
    """Compile what the method compiles, before timing it, and say how long that took."""
    if workload.func is slope and method.tilewise:
        start = time.perf_counter()
        loop = slope.loop_for(np.dtype(np.float32), (3, 3))
        loaded = sum(getattr(getattr(loop, "stats", None), "cache_hits", {}).values())
        how = "load from numba's disk cache" if loaded else "compile"
        setup[f"pixelwise kernel {how}"] = time.perf_counter() - start
        start = time.perf_counter()
        check_reach(slope.func, slope.__name__, slope.reach, np.dtype(np.float32), None)
        setup["pixelwise radius check (within the above)"] = time.perf_counter() - start
    elif method.key == "numba-prange":
        import numba

        from benchmarks.alternatives import prange_slope_kernel

        numba.set_num_threads(min(ctx.workers, numba.get_num_threads()))
        start = time.perf_counter()
        prange_slope_kernel()(np.zeros((3, 3), np.float32), np.empty((1, 1), np.float32))
        setup["numba prange compile"] = time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
