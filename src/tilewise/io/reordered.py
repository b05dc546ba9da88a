"""A file's dimensions taken in another order: the axes ``axes=`` names first, as tiles need.

tilewise tiles an image's first axes. When ``axes="zyx"`` picks z, y and x
of a (T, Z, C, Y, X) stack, its source is read as (Z, Y, X, T, C): each
window of the tiled axes is read with the other axes whole, in the file's
order, then its dimensions are moved (a view, not a copy).
"""

from __future__ import annotations

import numpy as np

from tilewise.errors import ArgumentError
from tilewise.io.base import Location, Source


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
