"""NumPy ``.npy`` files, memory-mapped: a tile reads and writes only its own pages."""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from tilewise.errors import ArgumentError
from tilewise.io._files import OutputFile, Reopening, fsync_file, reserve
from tilewise.io.base import Window

#: The bytes every .npy file starts with (numpy.lib.format.MAGIC_PREFIX).
_SIGNATURE = b"\x93NUMPY"


def _load(path: Path, what: str, mode: Literal["r", "r+"] = "r") -> np.memmap:
    try:
        array = np.load(path, mmap_mode=mode)
    except FileNotFoundError:
        raise
    except (EOFError, ValueError, OSError, pickle.UnpicklingError) as exc:
        raise ArgumentError(
            f"{what}={str(path)!r}: not a readable .npy file ({_why_unreadable(path, exc)})"
        ) from exc
    if not isinstance(array, np.memmap):
        raise ArgumentError(f"{what}={str(path)!r}: holds no single array")
    return array


def _why_unreadable(path: Path, exc: BaseException) -> str:
    """numpy's reason, unless the file's bytes tell a plainer one.

    numpy reads a file without the .npy signature as a pickle, and says a text
    file holds "pickled (object) data"; a file cut short in its data fails to
    map with "mmap length is greater than file size".
    """
    try:
        with open(path, "rb") as file:
            start = file.read(len(_SIGNATURE))
            short = _cut_short(file) if start == _SIGNATURE else None
    except OSError:
        start, short = None, None
    if start == b"":
        return "the file is empty"
    if start is not None and start != _SIGNATURE:
        if _SIGNATURE.startswith(start):
            return f"cut short: {len(start)} bytes, in the .npy signature"
        return f"it does not start with the .npy signature {_SIGNATURE!r}"
    if short is not None:
        return short
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, EOFError) else str(exc)


def _cut_short(file: BinaryIO) -> str | None:
    """How much of its data a .npy file lacks, if its header reads and it lacks some."""
    file.seek(0)
    try:
        version = np.lib.format.read_magic(file)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }[version]
        shape, _, dtype = read_header(file)
    except (ValueError, KeyError, EOFError):  # numpy's own reason says it better
        return None
    needed = file.tell() + math.prod(shape) * dtype.itemsize
    size = os.fstat(file.fileno()).st_size
    if size >= needed:
        return None
    return (
        f"cut short: {size} bytes, where its header's {dtype} array of shape {shape} needs {needed}"
    )


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

    def read(self, *window: slice) -> np.ndarray:
        array = self._array  # one read of the handle: another thread may close it
        if array is None:
            array = self._array = _load(self.path, "image")
        return np.asarray(array[window])


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

    def write(self, window: Window, data: np.ndarray) -> None:
        array = self._array  # one read of the handle: another thread may close it
        if array is None:
            array = self._array = _load(self.path, "out", mode="r+")
        array[window] = data

    def sync(self, windows: Sequence[Window]) -> None:
        fsync_file(self.path)


class NpyOutput(OutputFile):
    """An output ``.npy`` file."""

    def create(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> NpySink:
        return NpySink.create(self.partial, shape, dtype)

    def reopen(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> NpySink:
        return NpySink.reopen(self.partial, shape, dtype)
