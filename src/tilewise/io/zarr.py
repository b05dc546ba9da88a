"""Zarr arrays (zarr-python 3): stores by path or URL, or zarr array objects.

A Zarr chunk is compressed as a whole, so writing part of one means
reading, changing and rewriting all of it: two tiles writing parts of the
same chunk at once lose one tile's data. tilewise therefore creates output
stores with one chunk per tile, and refuses an ``out=`` array whose chunks
(or shards) a tile boundary would split.

A store behind a URL (``s3://``, ``gs://``, ``memory://``...) is opened by
zarr through fsspec with the run's ``storage_options``, and written in
place: an object store has no rename to publish it with. Its reads and
writes are retried on transient errors (:mod:`tilewise.io.retry`), and its
run's journal and lock are local files (:func:`tilewise.io.urls.state_file`).
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
from tilewise.io.axes import NO_AXES, Axes
from tilewise.io.base import Location, Window
from tilewise.io.geo import NO_GEOREFERENCE, Georeference
from tilewise.io.geozarr import dimension_names, geozarr_attributes
from tilewise.io.nodata import NodataRule
from tilewise.io.ome_zarr import Level0, level0
from tilewise.io.retry import with_retries
from tilewise.io.urls import StoreUrl, state_file
from tilewise.io.zarr_chunks import ZarrChunks

#: zarr stores that live in one process: an array in one cannot be written from another.
PROCESS_LOCAL_STORES = ("MemoryStore", "GpuMemoryStore", "ZipStore")

#: How tilewise writes the stores it makes: every chunk, even one all of the fill value
#: (zarr's check of that costs about 3 ms per 4 MiB chunk, 7% of a 3x3 mean's run).
OUTPUT_CONFIG = {"write_empty_chunks": True}

#: zarr's local store writes each chunk to ``KEY.<32 hex digits>.partial``, then
#: renames it; a killed run can leave these behind.
ZARR_TEMPORARY_GLOB = "*.partial"


def _zarr(needed_for: str) -> Any:
    return import_optional("zarr", needed_for)


def is_zarr_array(value: Any) -> bool:
    """Whether ``value`` is a zarr array object, without importing zarr needlessly."""
    return type(value).__module__.startswith("zarr.") and hasattr(value, "chunks")


def _store(location: Location) -> dict[str, Any]:
    """The ``store=`` (and ``storage_options=``) zarr opens ``location`` with."""
    if isinstance(location, StoreUrl):
        return {"store": location.url, "storage_options": dict(location.storage_options)}
    return {"store": str(location)}


def _open(location: Location, mode: str, what: str) -> Any:
    zarr = _zarr(f"{what} .zarr stores")
    try:
        return zarr.open_array(**_store(location), mode=mode)
    except (FileNotFoundError, zarr.errors.NodeTypeValidationError) as exc:
        raise ArgumentError(
            f"{what}={str(location)!r}: not a Zarr array ({exc}); "
            "for an array inside a group, give its path, e.g. 'store.zarr/0'"
        ) from exc


def _open_image(location: Location) -> tuple[Any, Location, Level0 | None]:
    """The array at ``location``, or the first level of the OME-Zarr image there."""
    zarr = _zarr("reading .zarr stores")
    try:
        return zarr.open_array(**_store(location), mode="r"), location, None
    except (FileNotFoundError, zarr.errors.NodeTypeValidationError):
        try:
            group = zarr.open_group(**_store(location), mode="r")
        except (FileNotFoundError, zarr.errors.NodeTypeValidationError):
            group = None
        found = None if group is None else level0(group, location)
        if found is None:
            _open(location, "r", "image")  # raises, saying what is there
            raise
        return _open(found.location, "r", "image"), found.location, found


def _open_output(location: Location) -> Any:
    """An output store tilewise made, opened to write, as it was created."""
    return _open(location, "r+", "out").with_config(OUTPUT_CONFIG)


def describe(array: Any) -> str:
    codecs = ", ".join(type(codec).__name__ for codec in array.compressors) or "uncompressed"
    shards = "" if array.shards is None else f", shards {array.shards}"
    return f"Zarr v{array.metadata.zarr_format}, chunks {array.chunks}{shards}, {codecs}"


class ZarrSource(Reopening):
    """A zarr array read window by window; a store opened by path or URL is reopened per process.

    The path of an OME-Zarr image (a group) is read at its first level, full resolution.
    """

    def __init__(self, array: Any = None, path: Location | None = None) -> None:
        ome = None
        if array is None:
            assert path is not None
            array, path, ome = _open_image(path)
        self.path = path
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.dtype: np.dtype = np.dtype(array.dtype)
        self.layout = describe(array)
        self.chunks: tuple[int, ...] = tuple(array.chunks)
        names = getattr(array.metadata, "dimension_names", None)
        #: The axes, as the OME metadata or the dimension_names call them (none, if any is
        #: unnamed), and the physical pixel sizes the OME metadata gives.
        self.axes = (
            Axes(tuple(str(n).lower() for n in names))
            if names and all(n is not None for n in names)
            else NO_AXES
        )
        if ome is not None:
            self.layout = f"OME-Zarr {ome.version}, level 0 of {ome.levels}: {self.layout}"
            self.axes = ome.axes if ome.axes.names is not None else self.axes
        self._array = array
        self._cache: ChunkCache | None = None
        # A store opened by path pickles as the path; a user's array object as itself.
        self._handles = ("_array", "_cache") if path is not None else ("_cache",)

    def read(self, *window: slice) -> np.ndarray:
        cache = self._cache  # one read of the handle: another thread may close it
        if cache is None or len(cache.chunks) != len(window):
            array = self._array
            if array is None:
                assert self.path is not None
                array = self._array = _open(self.path, "r", "image")
            chunks = ZarrChunks.of(array) or array
            cache = self._cache = ChunkCache(chunks, self.chunks[: len(window)])
        if isinstance(self.path, StoreUrl):
            return with_retries(lambda: cache.read(*window), f"reading from {str(self.path)!r}")
        return cache.read(*window)


class ZarrSink(Reopening):
    """Writes windows into a zarr array; each tile owns whole chunks (see the module docstring)."""

    def __init__(self, array: Any = None, path: Location | None = None) -> None:
        self.path = path
        if array is None:
            assert path is not None
            array = _open_output(path)
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.dtype: np.dtype = np.dtype(array.dtype)
        self.chunks: tuple[int, ...] | None = tuple(array.shards or array.chunks)
        self._array = array
        self._chunks = ZarrChunks.of(array)
        self._handles = ("_array", "_chunks") if path is not None else ()
        store = type(array.store).__name__
        #: A user's array in a store of this process only (a MemoryStore) is written here.
        self.process_local = path is None and store in PROCESS_LOCAL_STORES

    @classmethod
    def create(
        cls,
        path: Location,
        shape: tuple[int, ...],
        dtype: np.dtype,
        tile: tuple[int, ...],
        described: Described | None = None,
    ) -> ZarrSink:
        described = described or Described()
        array = _zarr("writing .zarr stores").create_array(
            **_store(path),
            shape=shape,
            chunks=(*tile, *shape[len(tile) :]),
            dtype=dtype,
            overwrite=True,
            attributes=described.attributes,
            dimension_names=described.dimension_names,
            fill_value=described.fill_value,
            config=OUTPUT_CONFIG,
        )
        if isinstance(path, Path):
            fsync_file(path / "zarr.json")
            fsync_dir(path)
            fsync_dir(path.parent)
        return cls(array, path)

    @classmethod
    def reopen(
        cls, path: Location, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]
    ) -> ZarrSink:
        array = _open_output(path)
        if tuple(array.shape) != shape or array.dtype != dtype or array.chunks[: len(tile)] != tile:
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

    def write(self, window: Window, data: np.ndarray) -> None:
        array = self._array  # one read of the handle: another thread may close it
        if array is None:
            array = self._array = _open_output(self.path)  # type: ignore[arg-type]
            self._chunks = ZarrChunks.of(array)
        chunks = self._chunks
        if chunks is not None:
            chunks.write(window, data)
        elif isinstance(self.path, StoreUrl):
            where = f"writing to {str(self.path)!r}"
            with_retries(lambda: array.__setitem__(window, data), where)
        else:
            array[window] = data

    def sync(self, windows: Sequence[Window]) -> None:
        """fsync the chunk files of these windows, then the folders their renames changed.

        A store behind a URL has nothing to force: its writes return once it acknowledged them.
        """
        if not isinstance(self.path, Path):
            return
        if self._array is None:
            self._array = _open_output(self.path)
        folders = set()
        for window in windows:
            for key in self._keys(window):
                file = self.path / key
                if file.exists():  # zarr skips a chunk of only the fill value, unless told not to
                    fsync_file(file)
                    folders.add(file.parent)
        for folder in folders:
            fsync_dir(folder)

    def _keys(self, window: Window) -> Iterator[str]:
        units = self.chunks
        assert units is not None
        k = len(window)
        ranges = [
            range(span.start // unit, -(-span.stop // unit))
            for span, unit in zip(window, units[:k], strict=True)
        ]
        trailing = zip(self.shape[k:], units[k:], strict=True)
        ranges += [range(-(-n // unit)) for n, unit in trailing]
        for coords in itertools.product(*ranges):
            yield self._array.metadata.encode_chunk_key(coords)


def check_tile_aligned(array: Any, tile: tuple[int, ...]) -> None:
    """Refuse an ``out=`` array in which two tiles would write the same chunk."""
    unit = tuple(array.shards or array.chunks)
    kind = "shards" if array.shards else "chunks"
    names = [f"axis {axis}" for axis in range(len(tile) - 2)] + ["rows", "cols"]
    for axis, name in enumerate(names):
        if tile[axis] % unit[axis] and tile[axis] < array.shape[axis]:
            raise ArgumentError(
                f"out: zarr {kind} {unit} do not align with tile {tile} ({name}): two tiles "
                f"would write the same chunk at once and lose data; use a tile that is a "
                f"multiple of the {kind}, e.g. tile={tuple(unit[: len(tile)])}"
            )


@dataclass(frozen=True)
class Described:
    """What a new array says of itself beyond its values: attributes, axis names, fill value."""

    attributes: dict[str, Any] = field(default_factory=dict)
    dimension_names: tuple[str, ...] | None = None
    fill_value: float | None = None  # the nodata value, which GDAL and xarray read from it

    @classmethod
    def of(
        cls,
        georeference: Georeference,
        nodata: NodataRule | None,
        shape: tuple[int, ...],
        dtype: np.dtype,
        axes: Axes = NO_AXES,
    ) -> Described:
        """What an output of ``shape`` and ``dtype`` says: where it is, which value is nodata,
        what its axes are called (the input's, when the result has them all)."""
        attributes = geozarr_attributes(georeference, shape)
        return cls(
            attributes=attributes,
            dimension_names=(
                dimension_names(shape) if attributes else axes.of_result(len(shape)).names
            ),
            fill_value=None if nodata is None else nodata.for_output(dtype),
        )


def _check_target(
    out: Location, exists: bool, is_store: bool, nodata: NodataRule | None, dtype: np.dtype | None
) -> None:
    """Refuse to replace what is not a Zarr store, or a nodata value ``dtype=`` cannot hold."""
    _zarr("writing .zarr stores")
    if exists and not is_store:
        raise ArgumentError(
            f"out={str(out)!r}: exists and is not a Zarr v3 store; "
            "refusing to replace it (remove it first)"
        )
    if nodata is not None and dtype is not None:
        nodata.for_output(dtype)  # dtype= given: refused now if it cannot hold it


class StoreOutput(OutputFile):
    """An output that is a Zarr directory store: its leftovers and its publishing."""

    def leftovers(self) -> list[Path]:
        found = list(self.partial.rglob(ZARR_TEMPORARY_GLOB)) if self.partial.is_dir() else []
        return [*super().leftovers(), *found]

    def publish(self) -> None:
        fsync_dir(self.partial)
        super().publish()


class ZarrOutput(StoreOutput):
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
        axes: Axes = NO_AXES,
    ) -> None:
        _check_target(path, path.exists(), (path / "zarr.json").is_file(), nodata, dtype)
        super().__init__(path)
        self.georeference = georeference
        self.nodata = nodata
        self.axes = axes

    def create(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> ZarrSink:
        described = Described.of(self.georeference, self.nodata, shape, dtype, self.axes)
        return ZarrSink.create(self.partial, shape, dtype, tile, described)

    def reopen(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> ZarrSink:
        return ZarrSink.reopen(self.partial, shape, dtype, tile)


def _metadata(root: str) -> str:
    """The key of a Zarr v3 store's metadata, in the filesystem its ``root`` is in."""
    return root.rstrip("/") + "/zarr.json"


class ZarrUrlOutput:
    """An output Zarr store behind a URL, written in place, one chunk per tile.

    Object stores cannot rename a store into place, so the store at the URL
    is the partial output: it is complete once the run returns, and until
    then its run's journal (a local file, :func:`tilewise.io.urls.state_file`)
    says which tiles it holds. A run started anew replaces what the URL held.
    """

    def __init__(
        self,
        url: StoreUrl,
        georeference: Georeference = NO_GEOREFERENCE,
        nodata: NodataRule | None = None,
        dtype: np.dtype | None = None,
        axes: Axes = NO_AXES,
    ) -> None:
        fs, root = url.filesystem()
        _check_target(url, fs.exists(root), fs.exists(_metadata(root)), nodata, dtype)
        self.path = url
        self.georeference = georeference
        self.nodata = nodata
        self.axes = axes

    @property
    def partial(self) -> StoreUrl:
        return self.path

    def state_file(self, suffix: str) -> Path:
        return state_file(self.path, suffix)

    def has_partial(self) -> bool:
        fs, root = self.path.filesystem()
        return bool(fs.exists(_metadata(root)))

    def discard_partial(self) -> None:
        fs, root = self.path.filesystem()
        if fs.exists(root):
            fs.rm(root, recursive=True)

    def create(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> ZarrSink:
        described = Described.of(self.georeference, self.nodata, shape, dtype, self.axes)
        return ZarrSink.create(self.path, shape, dtype, tile, described)

    def reopen(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> ZarrSink:
        return ZarrSink.reopen(self.path, shape, dtype, tile)

    def leftovers(self) -> list[Path]:
        return []  # an object store writes each chunk whole

    def publish(self) -> None:
        """Nothing to move: the store was written in place, and every write acknowledged."""
