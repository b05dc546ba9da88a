"""In-memory numpy arrays as a source, a sink, and a new result."""

from __future__ import annotations

import numpy as np

from tilewise.io.base import Allocate, Window


class ArraySource:
    """Reads windows of a numpy array as views (no copy)."""

    path = None
    chunks = None
    process_local = True
    layout = "in-memory array"

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def read(self, *window: slice) -> np.ndarray:
        return self.array[window]

    def close(self) -> None:
        pass  # the caller's own array


class ArraySink:
    """Writes windows into a numpy array, casting to its dtype."""

    path = None
    chunks = None
    process_local = True

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def write(self, window: Window, data: np.ndarray) -> None:
        self.array[window] = data

    def close(self) -> None:
        pass  # the caller's own array


class NewArray:
    """The result as a new numpy array, allocated by the executor where its workers write.

    ``array`` is set once the first results give its shape and dtype.
    """

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def create(self, shape: tuple[int, ...], dtype: np.dtype, allocate: Allocate) -> ArraySink:
        self.array = allocate(shape, dtype)
        return ArraySink(self.array)
