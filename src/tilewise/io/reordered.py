"""A file's dimensions taken in another order: the axes ``axes=`` names first, as tiles need.

tilewise tiles an image's first axes. When ``axes="zyx"`` picks z, y and x
of a (T, Z, C, Y, X) stack, its source is read as (Z, Y, X, T, C): each
window of the tiled axes is read with the other axes whole, in the file's
order, then its dimensions are moved (a view, not a copy). An output that
keeps the stack's own order has each result moved back as it is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

import numpy as np

from tilewise.errors import ArgumentError
from tilewise.io.base import FileSink, Location, Source, Window


def inverse(order: tuple[int, ...]) -> tuple[int, ...]:
    """The order that undoes ``order``.

    >>> inverse((1, 3, 4, 0, 2))
    (3, 0, 4, 1, 2)
    """
    return tuple(order.index(i) for i in range(len(order)))


#: What a reordered array stands for: a source, or a sink.
Inner = TypeVar("Inner", Source, FileSink)


class _Reordered(Generic[Inner]):
    """An array of ``inner`` with its dimensions in ``order``: ``order[i]`` is inner's axis i."""

    def __init__(self, inner: Inner, order: tuple[int, ...]) -> None:
        self.inner: Inner = inner
        self.order = order
        self.shape: tuple[int, ...] = tuple(inner.shape[i] for i in order)

    @property
    def dtype(self) -> np.dtype:
        return self.inner.dtype

    @property
    def path(self) -> Location | None:
        return self.inner.path

    @property
    def process_local(self) -> bool:
        return self.inner.process_local

    def close(self) -> None:
        self.inner.close()

    def _inner_window(self, window: Window) -> Window:
        """``window`` of the leading axes in this order as inner's, its other axes whole."""
        spans = [slice(0, n) for n in self.inner.shape]
        for axis, span in zip(self.order, window, strict=False):
            spans[axis] = span
        return tuple(spans)


class ReorderedSource(_Reordered[Source]):
    """``inner`` read with its dimensions in ``order``."""

    def __init__(self, inner: Source, order: tuple[int, ...]) -> None:
        super().__init__(inner, order)
        chunks = inner.chunks
        full = chunks is not None and len(chunks) == len(inner.shape)
        self.chunks = tuple(chunks[i] for i in order) if full and chunks else None
        self.layout = f"{inner.layout}; axes taken in the order {order}"

    def read(self, *window: slice) -> np.ndarray:
        return np.transpose(self.inner.read(*self._inner_window(window)), self.order)


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


class ReorderedSink(_Reordered[FileSink]):
    """Writes windows taken in ``order`` into ``inner``, which holds the image's own order.

    A run that tiled a (T, Z, C, Y, X) stack by ``axes="zyx"`` makes (Z, Y, X,
    T, C) results; an output that keeps the stack's order (OME-Zarr) gets
    each moved back to (T, Z, C, Y, X) as it is written.
    """

    def __init__(self, inner: FileSink, order: tuple[int, ...]) -> None:
        super().__init__(inner, order)
        self._back = inverse(order)

    @property
    def chunks(self) -> tuple[int, ...] | None:
        chunks = self.inner.chunks
        return None if chunks is None else tuple(chunks[i] for i in self.order)

    def write(self, window: Window, data: np.ndarray) -> None:
        self.inner.write(self._inner_window(window), np.transpose(data, self._back))

    def sync(self, windows: Sequence[Window]) -> None:
        self.inner.sync([self._inner_window(window) for window in windows])
