"""What users pick instead of tilewise, written as the usual answers write them.

Each function applies a block function ``func`` with ``halo`` pixels of
context (scipy's "reflect" edges) to a whole in-memory image and returns the
result, as a user would: blocks pickled to a ``multiprocessing.Pool`` and
placed as they come back; the same under ``spawn``; a pool over
``SharedMemory``; ``dask.array`` on its three schedulers;
``skimage.util.apply_parallel``; joblib; a hand-written numba kernel. The
results keep the image's dtype (true of every workload here).
"""

from __future__ import annotations

import functools
import itertools
import math
import multiprocessing as mp
from collections.abc import Callable
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.workloads import CELL, mean3

Func = Callable[[np.ndarray], np.ndarray]
Slices = tuple[slice, slice]


def block_slices(shape: tuple[int, ...], n: int) -> list[Slices]:
    """``n`` blocks, in a grid as square as possible, covering ``shape``.

    >>> len(block_slices((100, 60), 16)), block_slices((100, 60), 16)[-1]
    (16, (slice(75, 100, None), slice(45, 60, None)))
    """
    side = 2 ** math.ceil(math.log2(n) / 2)
    grid_rows, grid_cols = n // side, side
    ys = np.linspace(0, shape[0], grid_rows + 1).astype(int).tolist()
    xs = np.linspace(0, shape[1], grid_cols + 1).astype(int).tolist()
    return [
        (slice(y0, y1), slice(x0, x1))
        for y0, y1 in itertools.pairwise(ys)
        for x0, x1 in itertools.pairwise(xs)
    ]


def _padded(image: np.ndarray, halo: int) -> np.ndarray:
    # numpy's "symmetric" is scipy's "reflect" (the edge pixel repeated)
    return np.pad(image, halo, mode="symmetric") if halo else image


def _with_halo(padded: np.ndarray, where: Slices, halo: int) -> np.ndarray:
    rows, cols = where
    return padded[rows.start : rows.stop + 2 * halo, cols.start : cols.stop + 2 * halo]


def _core(result: np.ndarray, halo: int) -> np.ndarray:
    return result[halo:-halo, halo:-halo] if halo else result


def _apply_block(func: Func, halo: int, item: tuple[int, np.ndarray]) -> tuple[int, np.ndarray]:
    index, block = item
    return index, _core(func(block), halo)


def pool_imap(
    func: Func, image: np.ndarray, halo: int, blocks: int, workers: int, method: str | None = None
) -> np.ndarray:
    """The accepted answer: blocks pickled to a ``Pool``, results pickled back and placed.

    ``method`` is the start method (None: the platform's default).
    """
    slices = block_slices(image.shape, blocks)
    padded = _padded(image, halo)
    out = np.empty_like(image)
    with mp.get_context(method).Pool(workers) as pool:
        items = ((i, _with_halo(padded, where, halo)) for i, where in enumerate(slices))
        for index, result in pool.imap_unordered(
            functools.partial(_apply_block, func, halo), items
        ):
            out[slices[index]] = result
    return out


_ATTACHED: dict[str, Any] = {}


def _attach(
    names: tuple[str, str],
    padded_shape: tuple[int, ...],
    shape: tuple[int, ...],
    dtype: str,
    func: Func,
    halo: int,
) -> None:
    # Forked workers share the parent's resource tracker, so attaching (which
    # registers the segment again before Python 3.13) leaves nothing behind.
    segments = [shared_memory.SharedMemory(name=name) for name in names]
    _ATTACHED.update(
        segments=segments,
        padded=np.ndarray(padded_shape, dtype, buffer=segments[0].buf),
        out=np.ndarray(shape, dtype, buffer=segments[1].buf),
        func=func,
        halo=halo,
    )


def _shared_block(where: Slices) -> None:
    halo = _ATTACHED["halo"]
    block = _with_halo(_ATTACHED["padded"], where, halo)
    _ATTACHED["out"][where] = _core(_ATTACHED["func"](block), halo)


def shared_memory_pool(
    func: Func, image: np.ndarray, halo: int, blocks: int, workers: int
) -> np.ndarray:
    """A ``SharedMemory`` pool as one writes it by hand: copy in, attach, work, copy out."""
    padded = _padded(image, halo)
    segments = [
        shared_memory.SharedMemory(create=True, size=padded.nbytes),
        shared_memory.SharedMemory(create=True, size=image.nbytes),
    ]
    try:
        shared_in = np.ndarray(padded.shape, padded.dtype, buffer=segments[0].buf)
        shared_in[:] = padded
        del shared_in, padded
        names = (segments[0].name, segments[1].name)
        spec = (names, _padded_shape(image.shape, halo), image.shape, image.dtype.str, func, halo)
        with mp.get_context("fork").Pool(workers, _attach, spec) as pool:
            pool.map(_shared_block, block_slices(image.shape, blocks))
        return np.ndarray(image.shape, image.dtype, buffer=segments[1].buf).copy()
    finally:
        for segment in segments:
            segment.close()
            segment.unlink()


def _padded_shape(shape: tuple[int, ...], halo: int) -> tuple[int, ...]:
    return (shape[0] + 2 * halo, shape[1] + 2 * halo, *shape[2:])


def dask_array(
    func: Func,
    image: np.ndarray,
    halo: int,
    chunks: tuple[int, int],
    scheduler: str,
    workers: int,
    client: Any = None,
) -> np.ndarray:
    """``dask.array`` ``map_blocks`` (no halo) or ``map_overlap`` on one of its schedulers.

    ``scheduler`` is "threads" or "processes"; with ``client``, the
    distributed cluster computes it.
    """
    import dask.array as da

    array = da.from_array(image, chunks=chunks)
    if halo:
        lazy = array.map_overlap(func, depth=halo, boundary="reflect", dtype=image.dtype)
    else:
        lazy = array.map_blocks(func, dtype=image.dtype)
    if client is not None:
        return np.asarray(client.compute(lazy, sync=True))
    return np.asarray(lazy.compute(scheduler=scheduler, num_workers=workers))


def apply_parallel(func: Func, image: np.ndarray, halo: int, chunks: tuple[int, int]) -> np.ndarray:
    """``skimage.util.apply_parallel``: dask's ``map_overlap`` on threads, behind one call."""
    from skimage.util import apply_parallel as skimage_apply_parallel

    result = skimage_apply_parallel(
        func, image, chunks=chunks, depth=halo, mode="reflect", dtype=image.dtype
    )
    return np.asarray(result)


def joblib_blocks(
    func: Func, image: np.ndarray, halo: int, blocks: int, workers: int
) -> np.ndarray:
    """joblib's ``Parallel`` over blocks (its default loky backend), results placed."""
    import joblib

    slices = block_slices(image.shape, blocks)
    padded = _padded(image, halo)
    results = joblib.Parallel(n_jobs=workers)(
        joblib.delayed(_apply_block)(func, halo, (i, _with_halo(padded, where, halo)))
        for i, where in enumerate(slices)
    )
    out = np.empty_like(image)
    for index, result in results:
        out[slices[index]] = result
    return out


@functools.cache
def prange_slope_kernel() -> Callable[[np.ndarray, np.ndarray], None]:
    """The slope as a hand-written numba kernel, ``prange`` over rows (compiled on first call)."""
    import numba

    @numba.njit(parallel=True)
    def kernel(z: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        for y in numba.prange(out.shape[0]):
            for x in range(out.shape[1]):
                dzdx = (z[y + 1, x + 2] - z[y + 1, x]) / (2 * CELL)
                dzdy = (z[y + 2, x + 1] - z[y, x + 1]) / (2 * CELL)
                out[y, x] = math.atan(math.sqrt(dzdx * dzdx + dzdy * dzdy))

    return kernel


def numba_prange_slope(dem: np.ndarray) -> np.ndarray:
    """What a user who learnt numba writes: pad, then the ``prange`` kernel."""
    z = np.pad(dem, 1, mode="symmetric")
    out = np.empty(dem.shape, np.float32)
    prange_slope_kernel()(z, out)
    return out


def whole_file(source: Path, target: Path) -> Path:
    """The plain call on files: load the whole image, filter it, save the result."""
    np.save(target, mean3(np.load(source)))
    return target


def dask_zarr(source: Path, target: Path, client: Any = None) -> Path:
    """``da.from_zarr(...).map_overlap(...).to_zarr(...)``: what a dask user writes."""
    import dask.array as da

    image = da.from_zarr(str(source))
    lazy = image.map_overlap(mean3, depth=1, boundary="reflect", dtype=image.dtype)
    if client is None:
        lazy.to_zarr(str(target), overwrite=True)
    else:
        client.compute(lazy.to_zarr(str(target), overwrite=True, compute=False), sync=True)
    return target
