"""A file's dimensions taken in another order: the axes ``axes=`` names first, as tiles need.

tilewise tiles an image's first axes. When ``axes="zyx"`` picks z, y and x
of a (T, Z, C, Y, X) stack, its source is read as (Z, Y, X, T, C): each
window of the tiled axes is read with the other axes whole, in the file's
order, then its dimensions are moved (a view, not a copy).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tilewise.errors import ArgumentError
from tilewise.io.base import FileSink, Location, Source, Window


class ReorderedSource:
    """``inner`` read with its dimensions in ``order``: ``order[i]`` is the inner axis of axis i."""

    def __init__(self, inner: Source, order: tuple[int, ...]) -> None:
        self.inner = inner
        self.order = order
        self.shape: tuple[int, ...] = tuple(inner.shape[i] for i in order)
        chunks = inner.chunks
        full = chunks is not None and len(chunks) == len(inner.shape)
        self.chunks = tuple(chunks[i] for i in order) if full and chunks else None
        self.layout = f"{inner.layout}; axes taken in the order {order}"

    @property
    def dtype(self) -> np.dtype:
        return self.inner.dtype

    @property
    def path(self) -> Location | None:
        return self.inner.path

    @property
    def process_local(self) -> bool:
        return self.inner.process_local

    def read(self, *window: slice) -> np.ndarray:
        spans = [slice(0, n) for n in self.inner.shape]
        for axis, span in zip(self.order, window, strict=False):
            spans[axis] = span
        return np.transpose(self.inner.read(*spans), self.order)

    def close(self) -> None:
        self.inner.close()


def reordered(source: Source, order: tuple[int, ...]) -> Source:
    """``source`` with its dimensions in ``order``; itself when that is its own."""
    if order == tuple(range(len(order))):
        return source
    if source.process_local:
        raise ArgumentError(
            "axes=: names the axes of a file or store; pass an array in memory with its "
            "dimensions already in the order to tile them (numpy.moveaxis), or as a DataArray"
        )
    return ReorderedSource(source, order)


class ReorderedSink:
    """Writes windows taken in ``order`` into ``inner``, which holds the image's own order.

    A run that tiled a (T, Z, C, Y, X) stack by ``axes="zyx"`` makes (Z, Y, X,
    T, C) results; an output that keeps the stack's order (OME-Zarr) gets
    each moved back to (T, Z, C, Y, X) as it is written.
    """

    def __init__(self, inner: FileSink, order: tuple[int, ...]) -> None:
        self.inner = inner
        self.order = order
        self._back = tuple(int(i) for i in np.argsort(order))
        self.shape: tuple[int, ...] = tuple(inner.shape[i] for i in order)

    @property
    def dtype(self) -> np.dtype:
        return self.inner.dtype

    @property
    def path(self) -> Location | None:
        return self.inner.path

    @property
    def chunks(self) -> tuple[int, ...] | None:
        chunks = self.inner.chunks
        return None if chunks is None else tuple(chunks[i] for i in self.order)

    @property
    def process_local(self) -> bool:
        return self.inner.process_local

    def write(self, window: Window, data: np.ndarray) -> None:
        self.inner.write(self._inner_window(window), np.transpose(data, self._back))

    def sync(self, windows: Sequence[Window]) -> None:
        self.inner.sync([self._inner_window(window) for window in windows])

    def close(self) -> None:
        self.inner.close()

    def _inner_window(self, window: Window) -> Window:
        spans = [slice(0, n) for n in self.inner.shape]
        for axis, span in zip(self.order, window, strict=False):
            spans[axis] = span
        return tuple(spans)
