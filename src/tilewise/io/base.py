"""The protocols every input and output format implements."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

#: A window of the image: (rows, cols).
Window = tuple[slice, slice]


@runtime_checkable
class Source(Protocol):
    """An image that can be read window by window."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        """The window ``[rows, cols]`` with any trailing dimensions; may be a view."""
        ...


@runtime_checkable
class Sink(Protocol):
    """An output that can be written window by window."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def write(self, rows: slice, cols: slice, data: np.ndarray) -> None:
        """Store ``data`` at ``[rows, cols]``; windows of different tiles never overlap."""
        ...


@runtime_checkable
class FileSink(Sink, Protocol):
    """A sink backed by files, whose writes the resume journal can make durable."""

    def sync(self, windows: Sequence[Window]) -> None:
        """Force the data already written at ``windows`` (by any process) to disk."""
        ...


class FileOutput(Protocol):
    """An output file in the making.

    Tiles are written to ``partial``, beside ``path``; ``publish`` moves the
    finished result to ``path`` in one atomic rename, so a file at ``path``
    is always complete.
    """

    path: Path

    @property
    def partial(self) -> Path: ...

    def create(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, int]) -> FileSink:
        """A new, empty ``partial`` of this shape and dtype, tile-aligned."""
        ...

    def reopen(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, int]) -> FileSink:
        """The ``partial`` of an interrupted run, checked against its journalled shape."""
        ...

    def publish(self) -> None:
        """Make the complete ``partial`` the output at ``path``, durably."""
        ...

    def leftovers(self) -> list[Path]:
        """Temporary files a killed run may have left; never needed again."""
        ...


def image_shape(source: Source) -> tuple[int, int]:
    """The (rows, cols) of a source, without its trailing dimensions."""
    return (source.shape[0], source.shape[1])
