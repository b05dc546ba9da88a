"""In-memory numpy arrays as a source and a sink."""

from __future__ import annotations

import numpy as np


class ArraySource:
    """Reads windows of a numpy array as views (no copy)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        return self.array[rows, cols]


class ArraySink:
    """Writes windows into a numpy array, casting to its dtype."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def write(self, rows: slice, cols: slice, data: np.ndarray) -> None:
        self.array[rows, cols] = data
