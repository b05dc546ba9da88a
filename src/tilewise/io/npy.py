"""NumPy ``.npy`` files, memory-mapped: a tile reads and writes only its own pages."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from tilewise.errors import ArgumentError
from tilewise.io._files import OutputFile, Reopening, fsync_file, reserve
from tilewise.io.base import Window


def _load(path: Path, what: str, mode: Literal["r", "r+"] = "r") -> np.memmap:
    try:
        array = np.load(path, mmap_mode=mode)
    except ValueError as exc:
        raise ArgumentError(
            f"{what}={str(path)!r}: cannot be memory-mapped as .npy ({exc})"
        ) from exc
    if not isinstance(array, np.memmap):
        raise ArgumentError(f"{what}={str(path)!r}: holds no single array")
    return array


class NpySource(Reopening):
    """A ``.npy`` file read window by window through a read-only memory map."""

    _handles = ("_array",)
    layout = ".npy, memory-mapped (windows read in place)"

    def __init__(self, path: Path) -> None:
        self.path = path
        array = _load(path, "image")
        self.shape: tuple[int, ...] = array.shape
        self.dtype: np.dtype = array.dtype
        self._array: np.memmap | None = None

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        array = self._array  # one read of the handle: another thread may close it
        if array is None:
            array = self._array = _load(self.path, "image")
        return np.asarray(array[rows, cols])


class NpySink(Reopening):
    """A ``.npy`` file written window by window through a shared memory map."""

    _handles = ("_array",)

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = path
        self.shape = shape
        self.dtype = dtype
        self._array: np.memmap | None = None

    @classmethod
    def create(cls, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> NpySink:
        array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        size = array.offset + array.nbytes
        del array
        with open(path, "r+b") as file:
            reserve(file.fileno(), size, path)
        return cls(path, shape, dtype)

    @classmethod
    def reopen(cls, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> NpySink:
        array = _load(path, "out")
        if array.shape != shape or array.dtype != dtype or not array.flags.c_contiguous:
            raise ArgumentError(
                f"out: {str(path)!r} holds a {array.dtype} array of shape {array.shape}, "
                f"not the {dtype} {shape} the journal recorded; it was changed since"
            )
        return cls(path, shape, dtype)

    def write(self, rows: slice, cols: slice, data: np.ndarray) -> None:
        array = self._array  # one read of the handle: another thread may close it
        if array is None:
            array = self._array = _load(self.path, "out", mode="r+")
        array[rows, cols] = data

    def sync(self, windows: Sequence[Window]) -> None:
        fsync_file(self.path)


class NpyOutput(OutputFile):
    """An output ``.npy`` file."""

    def create(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, int]) -> NpySink:
        return NpySink.create(self.partial, shape, dtype)

    def reopen(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, int]) -> NpySink:
        return NpySink.reopen(self.partial, shape, dtype)
