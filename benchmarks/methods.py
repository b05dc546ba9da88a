"""Every method the suite runs, by key: how to label it and how to build one run of it.

A method's :class:`Run` is built once per process, after the input exists
(and the Dask cluster, for the methods that need one); its ``call`` is then
timed again and again. ``call`` returns the result (an array, or the path of
the output file) so that the runner can check it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import alternatives
from benchmarks.workloads import Workload, slope
from tilewise import map_tiles


@dataclass(frozen=True)
class Context:
    """What a run works on: its workload's image (or files), the workers, the cluster."""

    workload: Workload
    image: np.ndarray | None
    folder: Path | None
    workers: int
    client: Any = None

    @property
    def array(self) -> np.ndarray:
        assert self.image is not None, f"{self.workload.name} has no in-memory image"
        return self.image

    @property
    def files(self) -> Path:
        assert self.folder is not None, f"{self.workload.name} has no input files"
        return self.folder


@dataclass(frozen=True)
class Run:
    """One timed call, and what to undo after it, untimed (an output file to delete)."""

    call: Callable[[], Any]
    cleanup: Callable[[], None] | None = None


@dataclass(frozen=True)
class Method:
    """A way to compute a workload: ``name`` for the plot, ``label`` (with its sizes) for tables."""

    key: str
    name: str
    label: Callable[[Workload, int], str]
    build: Callable[[Context], Run]
    tilewise: bool
    cluster: bool = False


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _blockwise(workload: Workload) -> str:
    return "map_overlap" if workload.halo else "map_blocks"


def _remove(path: Path) -> Callable[[], None]:
    def remove() -> None:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    return remove


# --- the plain calls -------------------------------------------------------------------------


def _whole(ctx: Context) -> Run:
    return Run(lambda: ctx.workload.whole(ctx.array))


def _whole_file(ctx: Context) -> Run:
    target = ctx.files / "whole.npy"
    return Run(lambda: alternatives.whole_file(ctx.files / "in.npy", target), _remove(target))


# --- tilewise --------------------------------------------------------------------------------


def _tilewise(backend: str, into_array: bool = False) -> Callable[[Context], Run]:
    """A tilewise backend; with ``into_array``, writing into ``out=`` an array made beforehand."""

    def build(ctx: Context) -> Run:
        workload = ctx.workload
        settings: dict[str, Any] = {
            "tile": workload.tile_for(backend),
            "halo": workload.halo,
            "boundary": "reflect",
            "backend": backend,
        }
        if backend == "dask":
            settings["client"] = ctx.client
        elif backend != "serial":
            settings["workers"] = workload.workers_for(ctx.workers)
        if workload.on_files:
            target = ctx.files / f"tilewise-{backend}.npy"
            return Run(
                lambda: map_tiles(workload.func, ctx.files / "in.npy", out=target, **settings),
                _remove(target),
            )
        if into_array:
            # Made once, untimed, as a caller who keeps an output buffer would.
            out = np.empty_like(ctx.array)
            return Run(lambda: map_tiles(workload.func, ctx.array, out=out, **settings))
        return Run(lambda: map_tiles(workload.func, ctx.array, **settings))

    return build


def _tilewise_label(backend: str, into_array: bool = False) -> Callable[[Workload, int], str]:
    def label(workload: Workload, workers: int) -> str:
        workers = workload.workers_for(workers)
        where = {
            "serial": "serial",
            "threads": f"threads ({workers})",
            "processes": f"processes ({workers})",
            "dask": f"dask backend, LocalCluster of {workers} workers",
        }[backend]
        files = ".npy -> .npy, " if workload.on_files else ""
        tile = workload.tile_for(backend)
        strips = f"row strips of {tile[0]}" if tile[1] == workload.shape[1] > tile[0] else None
        into = ", out= a preallocated array" if into_array else ""
        return f"tilewise {files}{where}, {strips or 'tile ' + _size(tile)}{into}"

    return label


def _tilewise_zarr(ctx: Context) -> Run:
    workload = ctx.workload
    target = ctx.files / "tilewise.zarr"
    return Run(
        lambda: map_tiles(
            workload.func,
            ctx.files / "in.zarr",
            out=target,
            tile=workload.tile,
            halo=workload.halo,
            backend="threads",
            workers=ctx.workers,
        ),
        _remove(target),
    )


def _pixelwise_call(ctx: Context) -> Run:
    return Run(lambda: slope(ctx.array))


# --- what users pick instead -----------------------------------------------------------------


def _pool(method: str | None) -> Callable[[Context], Run]:
    def build(ctx: Context) -> Run:
        w = ctx.workload
        return Run(
            lambda: alternatives.pool_imap(w.func, ctx.array, w.halo, w.blocks, ctx.workers, method)
        )

    return build


def _shm_pool(ctx: Context) -> Run:
    w = ctx.workload
    return Run(
        lambda: alternatives.shared_memory_pool(w.func, ctx.array, w.halo, w.blocks, ctx.workers)
    )


def _dask(scheduler: str) -> Callable[[Context], Run]:
    def build(ctx: Context) -> Run:
        w = ctx.workload
        client = ctx.client if scheduler == "distributed" else None
        return Run(
            lambda: alternatives.dask_array(
                w.func, ctx.array, w.halo, w.chunks, scheduler, ctx.workers, client
            )
        )

    return build


def _dask_label(scheduler: str) -> Callable[[Workload, int], str]:
    def label(workload: Workload, workers: int) -> str:
        where = f"LocalCluster of {workers} workers" if scheduler == "distributed" else scheduler
        return f"dask.array {_blockwise(workload)}, {where}, chunks {_size(workload.chunks)}"

    return label


def _apply_parallel(ctx: Context) -> Run:
    w = ctx.workload
    return Run(lambda: alternatives.apply_parallel(w.func, ctx.array, w.halo, w.chunks))


def _joblib(ctx: Context) -> Run:
    w = ctx.workload
    return Run(lambda: alternatives.joblib_blocks(w.func, ctx.array, w.halo, w.blocks, ctx.workers))


def _numba_prange(ctx: Context) -> Run:
    return Run(lambda: alternatives.numba_prange_slope(ctx.array))


def _dask_zarr(distributed: bool) -> Callable[[Context], Run]:
    def build(ctx: Context) -> Run:
        target = ctx.files / "dask.zarr"
        client = ctx.client if distributed else None
        return Run(
            lambda: alternatives.dask_zarr(ctx.files / "in.zarr", target, client), _remove(target)
        )

    return build


def _fixed(text: str) -> Callable[[Workload, int], str]:
    return lambda workload, workers: text


METHODS: dict[str, Method] = {
    method.key: method
    for method in [
        Method("whole", "whole array", lambda w, n: f"whole array: {w.whole_name}", _whole, False),
        Method(
            "numpy-slope",
            "numpy, vectorised",
            _fixed("numpy, vectorised (whole array)"),
            _whole,
            tilewise=False,
        ),
        Method(
            "whole-file",
            "whole file",
            _fixed("whole file: np.load, uniform_filter, np.save"),
            _whole_file,
            tilewise=False,
        ),
        Method(
            "tilewise-serial",
            "tilewise serial",
            _tilewise_label("serial"),
            _tilewise("serial"),
            tilewise=True,
        ),
        Method(
            "tilewise-threads",
            "tilewise threads",
            _tilewise_label("threads"),
            _tilewise("threads"),
            tilewise=True,
        ),
        Method(
            "tilewise-threads-out",
            "tilewise threads out=",
            _tilewise_label("threads", into_array=True),
            _tilewise("threads", into_array=True),
            tilewise=True,
        ),
        Method(
            "tilewise-processes",
            "tilewise processes",
            _tilewise_label("processes"),
            _tilewise("processes"),
            tilewise=True,
        ),
        Method(
            "tilewise-dask",
            "tilewise dask",
            _tilewise_label("dask"),
            _tilewise("dask"),
            tilewise=True,
            cluster=True,
        ),
        Method(
            "tilewise-zarr-threads",
            "tilewise Zarr threads",
            lambda w, n: f"tilewise Zarr -> Zarr, threads ({n}), tile {_size(w.tile)}",
            _tilewise_zarr,
            tilewise=True,
        ),
        Method(
            "pixelwise-call",
            "tilewise slope(dem)",
            lambda w, n: f"tilewise pixelwise kernel, whole-array call slope(dem), {n} threads",
            _pixelwise_call,
            tilewise=True,
        ),
        Method(
            "pool",
            "Pool.imap_unordered",
            lambda w, n: f"multiprocessing Pool.imap_unordered, {w.blocks} pickled blocks",
            _pool(None),
            tilewise=False,
        ),
        Method(
            "spawn",
            "spawn Pool",
            lambda w, n: f"spawn Pool.imap_unordered, {w.blocks} pickled blocks",
            _pool("spawn"),
            tilewise=False,
        ),
        Method(
            "shm-pool",
            "SharedMemory pool",
            lambda w, n: f"hand-rolled SharedMemory pool, {w.blocks} blocks",
            _shm_pool,
            tilewise=False,
        ),
        Method(
            "dask-threads",
            "dask threads",
            _dask_label("threads"),
            _dask("threads"),
            tilewise=False,
        ),
        Method(
            "dask-processes",
            "dask processes",
            _dask_label("processes"),
            _dask("processes"),
            tilewise=False,
        ),
        Method(
            "dask-distributed",
            "dask distributed",
            _dask_label("distributed"),
            _dask("distributed"),
            tilewise=False,
            cluster=True,
        ),
        Method(
            "apply-parallel",
            "skimage apply_parallel",
            lambda w, n: f"skimage apply_parallel, chunks {_size(w.chunks)}",
            _apply_parallel,
            tilewise=False,
        ),
        Method(
            "joblib",
            "joblib",
            lambda w, n: f"joblib, {w.blocks} blocks",
            _joblib,
            tilewise=False,
        ),
        Method(
            "numba-prange",
            "numba prange",
            lambda w, n: f"numba prange, hand-written, {n} threads",
            _numba_prange,
            tilewise=False,
        ),
        Method(
            "dask-zarr-threads",
            "dask Zarr threads",
            _fixed("dask from_zarr.map_overlap.to_zarr, threads"),
            _dask_zarr(distributed=False),
            tilewise=False,
        ),
        Method(
            "dask-zarr-distributed",
            "dask Zarr distributed",
            lambda w, n: f"dask from_zarr.map_overlap.to_zarr, LocalCluster of {n} workers",
            _dask_zarr(distributed=True),
            tilewise=False,
            cluster=True,
        ),
    ]
}
