"""In-memory images for Dask workers on other machines: in strips of rows.

Each row of tiles reads a strip of the image (its rows and their halo);
the strip is a task of its own, submitted when the first of those tiles
goes out, so Dask runs each tile where its strip is and sends each strip
once, and dropped when the last is back.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from tilewise._stages import TileJob
from tilewise.boundary import modes, source_indices
from tilewise.grid import Tile
from tilewise.io import ArraySource

__all__ = ["InMemorySource", "Rows", "Strips", "rows_read"]


class InMemorySource(ArraySource):
    """An in-memory image, sent to the workers in strips of rows as tiles need them.

    The caller reads its own array; pickled (in the job), it leaves the
    pixels behind: each task receives the rows its tiles read.
    """

    def __reduce__(self) -> tuple[type, tuple[tuple[int, ...], np.dtype]]:
        return (_ImageInTask, (self.array.shape, self.array.dtype))


class _ImageInTask:
    """Where an in-memory image stands in a worker's job until a task brings its rows."""

    path = None
    chunks = None
    process_local = True
    layout = "in-memory array, in strips"

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = shape
        self.dtype = dtype

    def read(self, *window: slice) -> np.ndarray:
        raise RuntimeError("an in-memory image's rows come with each task, not with the job")

    def close(self) -> None:
        pass


class Rows:
    """The rows of an image that one row of tiles reads: ``pieces`` of (first row, rows)."""

    path = None
    chunks = None
    process_local = True
    layout = "in-memory array, in strips"

    def __init__(
        self, shape: tuple[int, ...], dtype: np.dtype, pieces: Sequence[tuple[int, np.ndarray]]
    ) -> None:
        self.shape = shape
        self.dtype = dtype
        self.pieces = pieces

    def read(self, *window: slice) -> np.ndarray:
        rows, *others = window  # the first axis: rows of an image, planes of a volume
        for first, part in self.pieces:
            if first <= rows.start and rows.stop <= first + len(part):
                window = (slice(rows.start - first, rows.stop - first), *others)
                return part[window]
        raise RuntimeError(f"rows {rows.start}:{rows.stop} were not sent with this tile")

    def close(self) -> None:
        pass


def rows_read(tile: Tile, n_rows: int, boundary: str | tuple[str, ...]) -> list[tuple[int, int]]:
    """The image rows (first axis) ``tile``'s block reads, as (start, stop) runs (two for wrap)."""
    (span, *_), ((before, after), *_) = tile.slices, tile.margins
    mode = modes(boundary, tile.ndim)[0]
    mode = "nearest" if mode == "none" else mode  # "none": the block is inside already
    rows = source_indices(span.start - before, span.stop + after, n_rows, mode)
    rows = np.unique(rows[rows >= 0])  # -1: a cval row, read from nowhere
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return [(int(run[0]), int(run[-1]) + 1) for run in np.split(rows, breaks)]


class Strips:
    """An in-memory image, sent in strips: the rows each row of tiles reads, with its halo.

    A strip is a task holding its rows, not scattered data: Dask places a
    tile where its strip is (so rows of tiles spread over the workers, and
    each strip travels once), and should the worker holding it die, the
    scheduler, which keeps the task's bytes, sends it again. A strip is sent
    when its first tile goes out and dropped when its last tile is back, so
    the cluster holds a few strips at a time, not the image.
    """

    def __init__(self, client: Any, name: str, job: TileJob) -> None:
        self.client = client
        self.name = name
        source = job.source
        assert isinstance(source, InMemorySource)
        self.array = source.array
        self.boundary = job.boundary
        self.sent: dict[int, list[tuple[int, Any]]] = {}  # row of tiles -> pieces in flight
        self.left: dict[int, int] = {}  # row of tiles -> its tiles not back yet

    def count(self, tiles: Sequence[Tile]) -> None:
        for tile in tiles:
            self.left[tile.index[0]] = self.left.get(tile.index[0], 0) + 1

    def acquire(self, group: list[Tile]) -> list[tuple[int, Any]]:
        row = group[0].index[0]
        if row not in self.sent:
            runs = rows_read(group[0], self.array.shape[0], self.boundary)
            with warnings.catch_warnings():
                # Dask warns of "large graphs" from about 10 MB: a strip is meant to be one.
                warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
                self.sent[row] = [(start, self._send(start, stop)) for start, stop in runs]
        return self.sent[row]

    def release(self, group: tuple[Tile, ...]) -> None:
        row = group[0].index[0]
        self.left[row] -= len(group)
        if self.left[row] == 0:
            for _, future in self.sent.pop(row):
                future.release()

    def close(self) -> None:
        for pieces in self.sent.values():
            for _, future in pieces:
                future.release()
        self.sent.clear()

    def _send(self, start: int, stop: int) -> Any:
        rows = np.ascontiguousarray(self.array[start:stop])
        return self.client.submit(_rows, rows, key=f"{self.name}-rows-{start}-{stop}", pure=False)


def _rows(rows: np.ndarray) -> np.ndarray:
    """A strip's task: its rows, as the client sent them."""
    return rows
