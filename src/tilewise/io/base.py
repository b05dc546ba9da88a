"""The two protocols every input and output format implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


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


def image_shape(source: Source) -> tuple[int, int]:
    """The (rows, cols) of a source, without its trailing dimensions."""
    return (source.shape[0], source.shape[1])
