"""Zarr arrays (zarr-python 3): local directory stores by path, or zarr array objects.

A Zarr chunk is compressed as a whole, so writing part of one means
reading, changing and rewriting all of it: two tiles writing parts of the
same chunk at once lose one tile's data. tilewise therefore creates output
stores with one chunk per tile, and refuses an ``out=`` array whose chunks
(or shards) a tile boundary would split.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tilewise._optional import import_optional
from tilewise.errors import ArgumentError
from tilewise.io._chunks import ChunkCache
from tilewise.io._files import OutputFile, Reopening, fsync_dir, fsync_file
from tilewise.io.base import Window
from tilewise.io.geo import NO_GEOREFERENCE, Georeference
from tilewise.io.geozarr import dimension_names, geozarr_attributes
from tilewise.io.nodata import NodataRule

#: zarr stores that live in one process: an array in one cannot be written from another.
PROCESS_LOCAL_STORES = ("MemoryStore", "GpuMemoryStore", "ZipStore")

#: zarr's local store writes each chunk to ``KEY.<32 hex digits>.partial``, then
#: renames it; a killed run can leave these behind.
ZARR_TEMPORARY_GLOB = "*.partial"


def _zarr(needed_for: str) -> Any:
    return import_optional("zarr", needed_for)


def is_zarr_array(value: Any) -> bool:
    """Whether ``value`` is a zarr array object, without importing zarr needlessly."""
    return type(value).__module__.startswith("zarr.") and hasattr(value, "chunks")


def _open(path: Path, mode: str, what: str) -> Any:
    zarr = _zarr(f"{what} .zarr stores")
    try:
        return zarr.open_array(store=str(path), mode=mode)
    except (FileNotFoundError, zarr.errors.NodeTypeValidationError) as exc:
        raise ArgumentError(
            f"{what}={str(path)!r}: not a Zarr array ({exc}); "
            "for an array inside a group, give its path, e.g. 'store.zarr/0'"
        ) from exc


def describe(array: Any) -> str:
    codecs = ", ".join(type(codec).__name__ for codec in array.compressors) or "uncompressed"
    shards = "" if array.shards is None else f", shards {array.shards}"
    return f"Zarr v{array.metadata.zarr_format}, chunks {array.chunks}{shards}, {codecs}"


class ZarrSource(Reopening):
    """A zarr array read window by window; a store opened by path is reopened per process."""

    def __init__(self, array: Any = None, path: Path | None = None) -> None:
        self.path = path
        if array is None:
            assert path is not None
            array = _open(path, "r", "image")
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.dtype: np.dtype = np.dtype(array.dtype)
        self.layout = describe(array)
        self.chunks: tuple[int, ...] = tuple(array.chunks)
        self._array = array
        self._cache: ChunkCache | None = None
        # A store opened by path pickles as the path; a user's array object as itself.
        self._handles = ("_array", "_cache") if path is not None else ("_cache",)

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        cache = self._cache  # one read of the handle: another thread may close it
        if cache is None:
            array = self._array
            if array is None:
                assert self.path is not None
                array = self._array = _open(self.path, "r", "image")
            cache = self._cache = ChunkCache(array, self.chunks)
        return cache.read(rows, cols)


class ZarrSink(Reopening):
    """Writes windows into a zarr array; each tile owns whole chunks (see the module docstring)."""

    def __init__(self, array: Any = None, path: Path | None = None) -> None:
        self.path = path
        if array is None:
            assert path is not None
            array = _open(path, "r+", "out")
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.dtype: np.dtype = np.dtype(array.dtype)
        self.chunks: tuple[int, ...] | None = tuple(array.shards or array.chunks)
        self._array = array
        self._handles = ("_array",) if path is not None else ()
        store = type(array.store).__name__
        #: A user's array in a store of this process only (a MemoryStore) is written here.
        self.process_local = path is None and store in PROCESS_LOCAL_STORES

    @classmethod
    def create(
        cls,
        path: Path,
        shape: tuple[int, ...],
        dtype: np.dtype,
        tile: tuple[int, int],
        described: Described | None = None,
    ) -> ZarrSink:
        described = described or Described()
        array = _zarr("writing .zarr stores").create_array(
            store=str(path),
            shape=shape,
            chunks=(*tile, *shape[2:]),
            dtype=dtype,
            overwrite=True,
            attributes=described.attributes,
            dimension_names=described.dimension_names,
            fill_value=described.fill_value,
        )
        fsync_file(path / "zarr.json")
        fsync_dir(path)
        fsync_dir(path.parent)
        return cls(array, path)

    @classmethod
    def reopen(
        cls, path: Path, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, int]
    ) -> ZarrSink:
        array = _open(path, "r+", "out")
        if tuple(array.shape) != shape or array.dtype != dtype or array.chunks[:2] != tile:
            raise ArgumentError(
                f"out: {str(path)!r} holds a {array.dtype} array of shape {array.shape} in "
                f"chunks {array.chunks}, not the {dtype} {shape} in tiles {tile} the journal "
                "recorded; it was changed since"
            )
        return cls(array, path)

    def __getstate__(self) -> dict[str, object]:
        if self.process_local:
            # A copy would be written in the other process, and silently lost.
            raise TypeError("a zarr array in a store of this process only cannot be pickled")
        return super().__getstate__()

    def write(self, rows: slice, cols: slice, data: np.ndarray) -> None:
        array = self._array  # one read of the handle: another thread may close it
        if array is None:
            array = self._array = _open(self.path, "r+", "out")  # type: ignore[arg-type]
        array[rows, cols] = data

    def sync(self, windows: Sequence[Window]) -> None:
        """fsync the chunk files of these windows, then the folders their renames changed."""
        if self.path is None:
            return
        if self._array is None:
            self._array = _open(self.path, "r+", "out")
        folders = set()
        for window in windows:
            for key in self._keys(window):
                file = self.path / key
                if file.exists():  # zarr skips chunks that hold only the fill value
                    fsync_file(file)
                    folders.add(file.parent)
        for folder in folders:
            fsync_dir(folder)

    def _keys(self, window: Window) -> Iterator[str]:
        units = self.chunks
        assert units is not None
        ranges = [
            range(span.start // unit, -(-span.stop // unit))
            for span, unit in zip(window, units[:2], strict=True)
        ]
        trailing = zip(self.shape[2:], units[2:], strict=True)
        ranges += [range(-(-n // unit)) for n, unit in trailing]
        for coords in itertools.product(*ranges):
            yield self._array.metadata.encode_chunk_key(coords)


def check_tile_aligned(array: Any, tile: tuple[int, int]) -> None:
    """Refuse an ``out=`` array in which two tiles would write the same chunk."""
    unit = tuple(array.shards or array.chunks)
    kind = "shards" if array.shards else "chunks"
    for axis, name in enumerate(("rows", "cols")):
        if tile[axis] % unit[axis] and tile[axis] < array.shape[axis]:
            raise ArgumentError(
                f"out: zarr {kind} {unit} do not align with tile {tile} ({name}): two tiles "
                f"would write the same chunk at once and lose data; use a tile that is a "
                f"multiple of the {kind}, e.g. tile={tuple(unit[:2])}"
            )


@dataclass(frozen=True)
class Described:
    """What a new array says of itself beyond its values: attributes, axis names, fill value."""

    attributes: dict[str, Any] = field(default_factory=dict)
    dimension_names: tuple[str, ...] | None = None
    fill_value: float | None = None  # the nodata value, which GDAL and xarray read from it


class ZarrOutput(OutputFile):
    """An output ``.zarr`` directory store, one chunk per tile.

    A georeferenced input's CRS and transform go in the array's attributes
    (:mod:`tilewise.io.geozarr`); the output's nodata value is its fill value.
    """

    def __init__(
        self,
        path: Path,
        georeference: Georeference = NO_GEOREFERENCE,
        nodata: NodataRule | None = None,
        dtype: np.dtype | None = None,
    ) -> None:
        _zarr("writing .zarr stores")
        if path.exists() and not (path / "zarr.json").is_file():
            raise ArgumentError(
                f"out={str(path)!r}: exists and is not a Zarr v3 store; "
                "refusing to replace it (remove it first)"
            )
        super().__init__(path)
        if nodata is not None and dtype is not None:
            nodata.for_output(dtype)  # dtype= given: refused now if it cannot hold it
        self.georeference = georeference
        self.nodata = nodata

    def create(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, int]) -> ZarrSink:
        attributes = geozarr_attributes(self.georeference, shape)
        described = Described(
            attributes=attributes,
            dimension_names=dimension_names(shape) if attributes else None,
            fill_value=None if self.nodata is None else self.nodata.for_output(dtype),
        )
        return ZarrSink.create(self.partial, shape, dtype, tile, described)

    def reopen(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, int]) -> ZarrSink:
        return ZarrSink.reopen(self.partial, shape, dtype, tile)

    def leftovers(self) -> list[Path]:
        found = list(self.partial.rglob(ZARR_TEMPORARY_GLOB)) if self.partial.is_dir() else []
        return [*super().leftovers(), *found]

    def publish(self) -> None:
        fsync_dir(self.partial)
        super().publish()
