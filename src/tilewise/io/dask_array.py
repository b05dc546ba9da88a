"""A dask array as the image: computed window by window, where the tile is read.

Each tile computes only what its block (the tile plus its halo) needs: the
chunks it overlaps, through a :class:`~tilewise.io._chunks.ChunkCache`
with the array's own chunks, as for a Zarr store, so tiles aligned to the
chunks compute each chunk about once per worker. The whole array is never
computed, nor held anywhere.

The source pickles as the array's graph, which is small when the data
lives in files (``da.from_zarr``) or is made by the graph itself
(``da.random``); a dask array made from a numpy array (``da.from_array``)
carries that array in its graph, so pass the numpy array itself instead. A
persisted array, whose chunks are futures held by a cluster, is refused:
its graph cannot be computed anywhere but through that cluster's client.

A window is computed with dask's synchronous scheduler, in the thread
that reads it, on every backend: tilewise already runs ``workers`` tiles at
once, so it already keeps every core busy. Dask's threaded scheduler would
start a pool of one thread per CPU for each thread that calls it, and per
worker process: ``workers`` x CPUs threads, each pool kept for the thread's
life, for graphs of one chunk each (the cache asks for one at a time). On 2
cores, threads backend, 12000 x 12000 from a Zarr store: 28 s synchronous,
31-37 s threaded. On the
``dask`` backend the tile's task does the same on the worker that runs it:
the windows are computed on the cluster, never on the client, with no
task of the cluster waiting on another (see docs/cluster.md).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from tilewise.errors import ArgumentError
from tilewise.io._chunks import ChunkCache
from tilewise.io._files import Reopening


def is_dask_array(value: Any) -> bool:
    """Whether ``value`` is a dask array, without importing dask needlessly."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(value, module.Array)


def regular_chunks(chunks: tuple[tuple[int, ...], ...]) -> tuple[int, ...] | None:
    """The chunk size along each axis, when every chunk but the last has it; else None.

    >>> regular_chunks(((4, 4, 2), (3, 3)))
    (4, 3)
    >>> regular_chunks(((4, 2, 4), (3, 3))) is None
    True
    """
    sizes = []
    for axis in chunks:
        first = axis[0]
        if any(size != first for size in axis[:-1]) or axis[-1] > first:
            return None
        sizes.append(first)
    return tuple(sizes)


class DaskArraySource(Reopening):
    """Reads windows of a dask array, computing only the chunks they overlap."""

    path = None
    process_local = False  # it pickles as its graph: any process computes its windows
    _handles = ("_cache",)

    def __init__(self, array: Any) -> None:
        _check(array)
        self.array = array
        self.shape: tuple[int, ...] = tuple(int(n) for n in array.shape)
        self.dtype: np.dtype = np.dtype(array.dtype)
        #: None for irregular chunks: each window is then computed alone, without a cache.
        self.chunks: tuple[int, ...] | None = regular_chunks(array.chunks)
        self.layout = (
            f"dask array, chunks {array.chunksize} ({array.npartitions} chunks"
            f"{'' if self.chunks is not None else ', irregular'}), computed window by window"
        )
        self._cache: ChunkCache | None = None

    def read(self, *window: slice) -> np.ndarray:
        if self.chunks is None:
            return _compute(self.array[window])
        cache = self._cache  # one read of the handle: another thread may close it
        if cache is None or len(cache.chunks) != len(window):
            chunks = self.chunks[: len(window)]
            cache = self._cache = ChunkCache(_Computed(self.array, chunks), chunks)
        return cache.read(*window)


def _compute(window: Any) -> np.ndarray:
    """The window's pixels, computed in this thread: see the module docstring."""
    return np.asarray(window.compute(scheduler="synchronous"))


class _Computed:
    """A dask array as the chunk cache reads it: indexing computes the window.

    The cache asks for one chunk at a time, and gets it from the chunk's own
    task in the array's graph, culled to what it needs: slicing the array
    instead makes and optimises a new graph per read, which took 2.8 times
    as long as making a random chunk of 2000 x 2000 and left 70 MiB more
    memory held per process (glibc keeps what the small allocations split).
    """

    def __init__(self, array: Any, chunks: tuple[int, ...]) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.chunks = chunks  # of the tiled axes
        # One chunk across the further dimensions: a chunk of the tiled axes is one task.
        self._whole_chunks = all(len(axis) == 1 for axis in array.chunks[len(chunks) :])

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        index = self._chunk_index(key)
        if index is None:
            return _compute(self.array[key])
        from dask.local import get_sync

        name = (self.array.name, *index, *(0 for _ in self.shape[len(index) :]))
        return np.asarray(get_sync(self.array.__dask_graph__().cull({name}), name))

    def _chunk_index(self, key: tuple[slice, ...]) -> tuple[int, ...] | None:
        """The index of the chunk ``key`` covers exactly, if it does."""
        if not self._whole_chunks:
            return None
        index = []
        for span, size, n in zip(key, self.chunks, self.shape, strict=False):
            if span.start % size or min(span.stop, n) != min(span.start + size, n):
                return None
            index.append(span.start // size)
        return tuple(index)


def _check(array: Any) -> None:
    """Refuse what cannot be read window by window as numpy pixels, before any tile runs."""
    if any(np.isnan(n) for n in array.shape):
        raise ArgumentError(
            f"image: a dask array of unknown shape {array.shape} (chunks of unknown size); "
            "compute them first: image.compute_chunk_sizes()"
        )
    distributed = sys.modules.get("distributed")
    if distributed is not None and distributed.futures_of(array):
        raise ArgumentError(
            "image: a dask array persisted on a cluster (its chunks are futures held there); "
            "tilewise computes each tile's chunks from the graph, where the tile runs: pass the "
            "array as it was before .persist(), or image.compute() if it fits in memory"
        )
    meta = getattr(array, "_meta", None)
    if isinstance(meta, np.ma.MaskedArray):
        raise ArgumentError(
            "image: a masked dask array; its mask would be lost window by window: pass "
            "dask.array.ma.filled(image, np.nan) (masked pixels as NaN) for a float image, "
            "or a numpy masked array"
        )
    if meta is not None and type(meta) is not np.ndarray:
        raise ArgumentError(
            f"image: a dask array of {type(meta).__module__}.{type(meta).__name__} chunks; "
            "tilewise reads numpy chunks: pass image.map_blocks(np.asarray) or convert it"
        )
