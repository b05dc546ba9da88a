"""Windows of a chunked, compressed array, assembled from recently decoded chunks.

A chunk is decoded whole, however little of it a window needs. A tile's
block (the tile plus its halo) overlaps up to nine chunks when tiles and
chunks are the same size, most of them by a few rows or columns, and the
next tile along the row needs six of the same nine; when chunks are larger
than tiles, many tiles share one chunk. Keeping the last chunks decoded
(up to :data:`CACHE_BYTES` per process) decodes each about once per tile
instead of up to nine times.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

#: Decoded chunks kept per process; part of the run's peak memory, per worker process.
CACHE_BYTES = 64 * 2**20
#: Above this many chunks per window, zarr's own loop beats one call per chunk.
MAX_CHUNKS_PER_WINDOW = 64


class ChunkCache:
    """Reads windows of ``array`` (a zarr array) through a small cache of decoded chunks."""

    def __init__(self, array: Any, chunks: tuple[int, ...]) -> None:
        self.array = array
        self.chunks = (int(chunks[0]), int(chunks[1]))
        rows, cols = array.shape[:2]
        self.chunk_bytes = (
            min(self.chunks[0], rows)
            * min(self.chunks[1], cols)
            * int(np.prod(array.shape[2:], dtype=np.int64))
            * np.dtype(array.dtype).itemsize
        )
        self._decoded: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        spans = [
            range(span.start // size, -(-span.stop // size))
            for span, size in zip((rows, cols), self.chunks, strict=True)
        ]
        if len(spans[0]) * len(spans[1]) > MAX_CHUNKS_PER_WINDOW:
            return np.asarray(self.array[rows, cols])
        out = np.empty(
            (rows.stop - rows.start, cols.stop - cols.start, *self.array.shape[2:]),
            self.array.dtype,
        )
        for i, j in itertools.product(*spans):
            y0, x0 = i * self.chunks[0], j * self.chunks[1]
            chunk = self._chunk(i, j)
            y1, x1 = max(rows.start, y0), max(cols.start, x0)
            y2 = min(rows.stop, y0 + chunk.shape[0])
            x2 = min(cols.stop, x0 + chunk.shape[1])
            out[y1 - rows.start : y2 - rows.start, x1 - cols.start : x2 - cols.start] = chunk[
                y1 - y0 : y2 - y0, x1 - x0 : x2 - x0
            ]
        return out

    def _chunk(self, i: int, j: int) -> np.ndarray:
        with self._lock:
            chunk = self._decoded.get((i, j))
            if chunk is not None:
                self._decoded.move_to_end((i, j))
                return chunk
        # Decoded outside the lock, so threads decode different chunks at once.
        ys = slice(i * self.chunks[0], (i + 1) * self.chunks[0])
        xs = slice(j * self.chunks[1], (j + 1) * self.chunks[1])
        chunk = np.asarray(self.array[ys, xs])
        with self._lock:
            self._decoded[(i, j)] = chunk
            while len(self._decoded) > 1 and len(self._decoded) * self.chunk_bytes > CACHE_BYTES:
                self._decoded.popitem(last=False)
        return chunk
