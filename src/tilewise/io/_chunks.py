"""Windows of a chunked, compressed array, assembled from recently decoded chunks.

A chunk is decoded whole, however little of it a window needs. A tile's
block (the tile plus its halo) overlaps up to nine chunks when tiles and
chunks are the same size, most of them by a few rows or columns, and the
next tile along the row needs six of the same nine; when chunks are larger
than tiles, many tiles share one chunk. Keeping the last chunks decoded
(up to :data:`CACHE_BYTES` per process) decodes each about once per tile
instead of up to nine times.

That holds only if a chunk is still cached when the last tile needing it
runs. In row-major order, the chunks below a row of tiles are decoded for
its halos, then again for the next row once the cache has let them go:
each chunk about three times. :func:`in_strips` orders the tiles in
vertical strips narrow enough for the chunks of two rows of blocks to stay
cached, so each chunk is decoded about ``(width + 2) / width`` times
(measured on 8192 x 8192 float32, zstd chunks of 1024: 215 decodes of its
64 chunks in row-major order, 131 in strips of 3, 83 in strips of 8).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from tilewise.grid import Tile
from tilewise.io.base import Source

#: Decoded chunks kept per process; part of the run's peak memory, per worker process.
CACHE_BYTES = 64 * 2**20
#: Above this many chunks per window, zarr's own loop beats one call per chunk.
MAX_CHUNKS_PER_WINDOW = 64


def chunk_nbytes(shape: tuple[int, ...], chunks: tuple[int, ...], dtype: np.dtype) -> int:
    """The bytes of one decoded chunk of the axes ``chunks`` sizes, further axes whole."""
    tiled = math.prod(min(c, n) for c, n in zip(chunks, shape, strict=False))
    return tiled * math.prod(shape[len(chunks) :]) * dtype.itemsize


class ChunkCache:
    """Reads windows of ``array`` (a zarr array) through a small cache of decoded chunks.

    ``chunks`` are the chunk sizes of the axes a window slices (the tiled
    axes); a chunk spans the further axes whole.
    """

    def __init__(self, array: Any, chunks: tuple[int, ...]) -> None:
        self.array = array
        self.chunks = tuple(int(c) for c in chunks)
        self.chunk_bytes = chunk_nbytes(tuple(array.shape), self.chunks, np.dtype(array.dtype))
        self._decoded: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, *window: slice) -> np.ndarray:
        spans = [
            range(span.start // size, -(-span.stop // size))
            for span, size in zip(window, self.chunks, strict=True)
        ]
        if math.prod(map(len, spans)) > MAX_CHUNKS_PER_WINDOW:
            return np.asarray(self.array[window])
        out = np.empty(
            (*(span.stop - span.start for span in window), *self.array.shape[len(window) :]),
            self.array.dtype,
        )
        for index in itertools.product(*spans):
            chunk = self._chunk(index)
            origins = [i * size for i, size in zip(index, self.chunks, strict=True)]
            overlap = [
                (max(span.start, origin), min(span.stop, origin + n))
                for span, origin, n in zip(window, origins, chunk.shape, strict=False)
            ]
            into = [
                slice(a - w.start, b - w.start) for (a, b), w in zip(overlap, window, strict=False)
            ]
            part = [slice(a - o, b - o) for (a, b), o in zip(overlap, origins, strict=True)]
            out[tuple(into)] = chunk[tuple(part)]
        return out

    def _chunk(self, index: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            chunk = self._decoded.get(index)
            if chunk is not None:
                self._decoded.move_to_end(index)
                return chunk
        # Decoded outside the lock, so threads decode different chunks at once.
        key = tuple(slice(i * n, (i + 1) * n) for i, n in zip(index, self.chunks, strict=True))
        chunk = np.asarray(self.array[key])
        with self._lock:
            self._decoded[index] = chunk
            while len(self._decoded) > 1 and len(self._decoded) * self.chunk_bytes > CACHE_BYTES:
                self._decoded.popitem(last=False)
        return chunk


def strip_width(
    tile: tuple[int, ...],
    halo: tuple[int, ...],
    chunks: tuple[int, ...],
    chunk_bytes: int,
    in_flight: int = 1,
) -> int | None:
    """Tile columns per strip such that the chunks two rows of blocks overlap stay cached.

    Going down a strip, the chunk rows one block (the tile and its halo) can
    overlap, and one more, are needed at once (one more row again per tile
    in flight beyond the first: threads sharing the cache), across the
    strip's chunk columns and one more on each side for the halos. None: the
    cache holds too few chunks for strips to decode fewer than rows do.

    Examples
    --------
    Tiles of 1024 on float32 chunks of 1024 (4 MiB; 16 fit in the cache):

    >>> strip_width((1024, 1024), (1, 1), (1024, 1024), 4 * 2**20)
    3
    >>> strip_width((1024, 1024), (1, 1), (1024, 1024), 4 * 2**20, in_flight=2)
    2
    >>> strip_width((1024, 1024), (1, 1), (1024, 1024), 4 * 2**20, in_flight=4) is None
    True
    """
    rows_held = math.ceil((tile[0] + 2 * halo[0]) / chunks[0]) + in_flight
    capacity = CACHE_BYTES // max(chunk_bytes, 1)
    chunk_cols = capacity // rows_held - 2
    if chunk_cols < 2:  # strips of one column decode each chunk as often as rows do
        return None
    return max(chunk_cols * chunks[1] // tile[1], 1)


def in_strips(tiles: Sequence[Tile], width: int | None) -> list[Tile]:
    """``tiles`` strip by strip of ``width`` tile columns, row by row within each strip.

    ``width`` None: as they are.
    """
    if width is None:
        return list(tiles)
    return sorted(tiles, key=lambda t: (t.index[1] // width, t.index[0], t.index[1]))


def in_decode_order(
    tiles: Sequence[Tile],
    source: Source,
    tile: tuple[int, ...],
    halo: tuple[int, ...],
    in_flight: int = 1,
) -> list[Tile]:
    """``tiles`` of a chunked ``source`` in strips that decode each chunk about once.

    Tiles of a source read in place (no chunks) keep their order, and so do
    those of a volume (more than two tiled axes), whose tiles follow its
    planes.
    """
    if source.chunks is None or len(source.chunks) < 2 or len(tile) != 2:
        return list(tiles)
    chunks = (source.chunks[0], source.chunks[1])
    size = chunk_nbytes(tuple(source.shape), chunks, source.dtype)
    return in_strips(tiles, strip_width(tile, halo, chunks, size, in_flight))
