"""TIFF files (tifffile): windows read from strips or tiles, tiles written in place.

Reading: an uncompressed contiguous image is memory-mapped; any other
(compressed, striped or tiled, BigTIFF or not) is read strip by strip or
tile by tile, decoding only those a window overlaps, each by tifffile's
page decoder (:mod:`tilewise.io.tiff_chunks`); images stored plane by
plane go through tifffile's Zarr interface.
A TIFF behind a URL (``https://``, ``s3://``) is read the same way, by
range requests (:data:`URL_BLOCK`). A compressed single-strip image has to
be decoded whole for every window:
rewrite it tiled (``tifffile.imwrite(..., tile=(256, 256))``) first. Of a
file with overviews (a COG), the full-resolution image is read. A GeoTIFF's
georeferencing and nodata value are read with it (:mod:`tilewise.io.geo`).

Writing: tiles are written to an *uncompressed* tiled BigTIFF beside the
output, created in full (as a sparse file, then reserved) before any tile
runs. Every pixel then has a fixed place in it, so workers in any process
write their windows in place through a memory map, concurrently, and a
resumed run finds the file as the journal left it. A compressed TIFF cannot
be written that way (its tiles change size, and one writer must place them
in order). With a lossless ``compression=`` and run tiles that cover whole
TIFF tiles, the workers encode their tiles and one writer places them
(:mod:`tilewise.io.tiff_tiles`). Otherwise (JPEG, other tilings,
``cog=True``) the uncompressed partial gets a last step once every tile is
written: the tiles are encoded in parallel, by a thread per CPU (the codecs
release the GIL), and placed in the output by one writer, tifffile's;
``cog=True`` hands that step to GDAL's COG driver, which also builds the
overviews. That step needs disk room for the uncompressed result beside the
output.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tilewise._optional import import_optional
from tilewise.errors import ArgumentError, MissingInputError
from tilewise.io._chunks import ChunkCache
from tilewise.io._files import (
    OutputFile,
    Reopening,
    fsync_file,
    publish,
    remove,
    reserve,
    temporary_path,
)
from tilewise.io.base import Window
from tilewise.io.geo import (
    GDAL_NODATA,
    NO_GEOREFERENCE,
    ExtraTag,
    Georeference,
    read_georeference,
)
from tilewise.io.nodata import NodataRule
from tilewise.io.overviews import Downsampling, Pyramid
from tilewise.io.retry import with_retries
from tilewise.io.tiff_chunks import TiffChunks, decodes_directly
from tilewise.io.tiff_encode import AS_WRITTEN, Encoding, check_encodable, encode, write_cog
from tilewise.io.tiff_tiles import EncodedTilesSink, worker_tiff_tile
from tilewise.io.urls import StoreUrl

#: Bytes asked for per range request of a TIFF behind a URL: the header's IFDs in
#: one, and a few tiles ahead of each one read.
URL_BLOCK = 256 * 2**10
#: Rows and columns of each TIFF tile written: the common choice of GIS tools,
#: a multiple of 16 as TIFF requires.
TIFF_TILE = (256, 256)


def _tifffile(needed_for: str) -> Any:
    return import_optional("tifffile", needed_for)


@contextlib.contextmanager
def _open_tiff(path: Path | StoreUrl, what: str) -> Iterator[Any]:
    """A TiffFile of ``path``; of a URL, over a file that reads by range requests."""
    tifffile = _tifffile(f"{what} .tif files")
    with contextlib.ExitStack() as opened:
        file = opened.enter_context(_url_file(path)) if isinstance(path, StoreUrl) else path
        try:
            tif = opened.enter_context(_tiff_of(file, path))
        except (tifffile.TiffFileError, ValueError) as exc:
            raise ArgumentError(f"{what}={str(path)!r}: not a readable TIFF ({exc})") from exc
        yield tif


def _tiff_of(file: Any, path: Path | StoreUrl) -> Any:
    """tifffile's TiffFile of ``file``; a URL's header read with the retries of its tiles."""
    tifffile = _tifffile("reading .tif files")
    if isinstance(path, StoreUrl):
        return with_retries(lambda: tifffile.TiffFile(file), f"reading {str(path)!r}")
    return tifffile.TiffFile(file)


def _url_file(url: StoreUrl) -> Any:
    """The file behind ``url``, read in range requests of :data:`URL_BLOCK` bytes."""
    fs, path = url.filesystem()
    try:
        return with_retries(
            lambda: fs.open(path, "rb", block_size=URL_BLOCK, cache_type="readahead"),
            f"opening {str(url)!r}",
        )
    except FileNotFoundError as exc:
        raise MissingInputError(f"image={str(url)!r}: no such file") from exc


class TiffSource(Reopening):
    """The first image of a TIFF file, read window by window."""

    _handles = ("_memmap", "_zarr", "_cache", "_tif")

    def __init__(self, path: Path | StoreUrl) -> None:
        self.path = path
        with _open_tiff(path, "image") as tif:
            series = tif.series[0]
            page = series.keyframe
            axes, shape = series.axes, tuple(series.shape)
            self._file_dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder)
            local = isinstance(path, Path)
            self._offset = series.dataoffset if page.is_memmappable and local else None
            if page.is_tiled:
                chunking = f"tiles {page.tile}"
            else:
                chunking = f"strips of {page.rowsperstrip} rows"
            compression = page.compression.name.lower()
            chunks = tuple(page.chunks[:2])
            #: Where its pixels are on the Earth, and which carry no value (a GeoTIFF's tags).
            self.georeference: Georeference = read_georeference(page)
        if len(shape) == 3 and axes[0] == "S":
            self._planar = True  # samples stored plane by plane: (S, H, W) in the file
            self.shape: tuple[int, ...] = (*shape[1:], shape[0])
        elif len(shape) == 2 or (len(shape) == 3 and axes[-1] == "S"):
            self._planar = False
            self.shape = shape
        else:
            raise ArgumentError(
                f"image={str(path)!r}: a TIFF of shape {shape} (axes {axes!r}); "
                "tilewise reads one 2-D image, with or without samples per pixel"
            )
        self._file_shape = shape
        self.dtype: np.dtype = self._file_dtype.newbyteorder("=")
        access = "memory-mapped" if self._offset is not None else "decoded per window"
        #: What a window read decodes whole (None: read in place).
        self.chunks = None if self._offset is not None else chunks
        self.layout = f"TIFF, {chunking}, {compression}, {access}"
        self._memmap: np.memmap | None = None
        self._zarr: Any = None
        self._cache: ChunkCache | None = None
        self._tif: Any = None  # this process's TiffFile, which every window is read from

    def read(self, *window: slice) -> np.ndarray:
        rows, cols, *bands = window  # bands too, when they are tiled
        if isinstance(self.path, StoreUrl):
            where = f"reading from {str(self.path)!r}"
            pixels = with_retries(lambda: self._read(rows, cols), where)
        else:
            pixels = self._read(rows, cols)
        whole = (slice(None), slice(None), *bands)
        return pixels[whole] if bands else pixels

    def _read(self, rows: slice, cols: slice) -> np.ndarray:
        if self._offset is not None:
            image = self._memmapped()
            window = image[:, rows, cols] if self._planar else image[rows, cols]
        elif self._planar:
            window = self._zarr_array()[:, rows, cols]
        else:
            if self._cache is None:
                assert self.chunks is not None
                self._cache = ChunkCache(self._chunked(), self.chunks)
            window = self._cache.read(rows, cols)
        window = np.asarray(window)
        if self._planar:
            window = np.moveaxis(window, 0, -1)
        return window.astype(self.dtype, copy=False)

    def _memmapped(self) -> np.memmap:
        if self._memmap is None:
            assert self._offset is not None
            assert isinstance(self.path, Path)  # a URL is never memory-mapped
            self._memmap = np.memmap(
                self.path, self._file_dtype, "r", int(self._offset), self._file_shape
            )
        return self._memmap

    def _tiff(self) -> Any:
        """This process's TiffFile of the image; threads share its file under one lock."""
        if self._tif is None:
            file = _url_file(self.path) if isinstance(self.path, StoreUrl) else self.path
            tif = _tiff_of(file, self.path)
            tif.filehandle.set_lock(True)  # for tifffile's Zarr interface and TiffChunks alike
            self._tif = tif
        return self._tif

    def _chunked(self) -> Any:
        """The image as an array of chunks, each decoded by tifffile alone where it can.

        It holds no reference to this source: a cycle would keep a finished
        run's cache of decoded chunks alive until the garbage collector ran.
        """
        tif = self._tiff()
        if not decodes_directly(tif.series[0].keyframe):
            return self._zarr_array()
        return TiffChunks(tif, self.dtype)

    def _zarr_array(self) -> Any:
        if self._zarr is None:
            zarr = import_optional("zarr", "reading compressed or tiled .tif files by window")
            store = self._tiff().aszarr(series=0, level=0)
            self._zarr = zarr.open_array(store=store, mode="r")
        return self._zarr


class _SparseFile(io.FileIO):
    """A file in which tifffile's all-zero placeholder tiles become holes, not writes.

    Creating a 4 GB empty tiled TIFF then takes milliseconds instead of
    writing 4 GB of zeros; ``reserve`` allocates the blocks afterwards.
    """

    _zeros: bytes | None = None
    end = 0

    def write(self, data: Any) -> int:
        if isinstance(data, bytes) and len(data) >= 4096:
            if data is not self._zeros and data.count(0) == len(data):
                self._zeros = data
            if data is self._zeros:
                self.seek(len(data), os.SEEK_CUR)
                self.end = max(self.end, self.tell())
                return len(data)
        written = super().write(data)
        self.end = max(self.end, self.tell())
        return written


class TiffSink(Reopening):
    """An uncompressed tiled TIFF whose tiles are written in place through a memory map."""

    _handles = ("_tiles",)

    def __init__(
        self,
        path: Path,
        shape: tuple[int, ...],
        dtype: np.dtype,
        offset: int,
        tile: tuple[int, ...],
    ) -> None:
        self.path = path
        self.shape = shape
        self.dtype = dtype
        self._offset = offset
        self._tile = tile
        self._tiles: np.memmap | None = None

    @classmethod
    def create(
        cls,
        path: Path,
        shape: tuple[int, ...],
        dtype: np.dtype,
        extratags: Sequence[ExtraTag] = (),
    ) -> TiffSink:
        _check_storable(path, shape, dtype)
        with _SparseFile(path, "w+") as file:
            _tifffile("writing .tif files").imwrite(
                file,
                shape=shape,
                dtype=dtype,
                tile=TIFF_TILE,
                bigtiff=True,
                photometric=photometric(shape),
                planarconfig="contig",
                compression=None,
                extratags=list(extratags),
                metadata=None,
            )
            file.truncate(max(file.end, file.seek(0, os.SEEK_END)))
            reserve(file.fileno(), file.end, path)
        return cls.reopen(path, shape, dtype)

    @classmethod
    def reopen(cls, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> TiffSink:
        """Check that the file is the uncompressed tiled layout ``write`` relies on."""
        with _open_tiff(path, "out") as tif:
            page = tif.pages[0]
            found = (page.imagelength, page.imagewidth, page.samplesperpixel, page.dtype)
            offsets = np.asarray(page.dataoffsets, dtype=np.int64)
            counts = np.asarray(page.databytecounts, dtype=np.int64)
            tile = (int(page.tilelength), int(page.tilewidth))
            compressed = page.compression != 1
        samples = shape[2] if len(shape) == 3 else 1
        tile_bytes = tile[0] * tile[1] * samples * dtype.itemsize
        laid_out = offsets[0] + tile_bytes * np.arange(len(offsets))
        if (
            found != (*shape[:2], samples, dtype)
            or compressed
            or not np.array_equal(offsets, laid_out)
            or not np.all(counts == tile_bytes)
        ):
            raise ArgumentError(
                f"out: {str(path)!r} is not the uncompressed tiled {dtype} TIFF of shape "
                f"{shape} the journal recorded; it was changed since"
            )
        return cls(path, shape, dtype, int(offsets[0]), tile)

    def write(self, window: Window, data: np.ndarray) -> None:
        rows, cols = window
        tiles = self._open()
        th, tw = self._tile
        data = data.reshape(*data.shape[:2], -1)
        for ty in range(rows.start // th, (rows.stop - 1) // th + 1):
            y0, y1 = max(rows.start, ty * th), min(rows.stop, (ty + 1) * th)
            for tx in range(cols.start // tw, (cols.stop - 1) // tw + 1):
                x0, x1 = max(cols.start, tx * tw), min(cols.stop, (tx + 1) * tw)
                tiles[ty, tx, y0 - ty * th : y1 - ty * th, x0 - tx * tw : x1 - tx * tw] = data[
                    y0 - rows.start : y1 - rows.start, x0 - cols.start : x1 - cols.start
                ]

    def tiles(self) -> np.memmap:
        """The file's pixels as (tile row, tile col, row in tile, col in tile, sample)."""
        return self._open()

    def _open(self) -> np.memmap:
        tiles = self._tiles  # one read of the handle: another thread may close it
        if tiles is None:
            th, tw = self._tile
            grid = (-(-self.shape[0] // th), -(-self.shape[1] // tw))
            samples = self.shape[2] if len(self.shape) == 3 else 1
            tiles = self._tiles = np.memmap(
                self.path, self.dtype, "r+", self._offset, (*grid, th, tw, samples)
            )
        return tiles

    def sync(self, windows: Sequence[Window]) -> None:
        fsync_file(self.path)


def photometric(shape: tuple[int, ...]) -> str:
    """How a TIFF of ``shape`` says its samples are seen: RGB(A) for 3 or 4, else gray."""
    samples = shape[2] if len(shape) == 3 else 1
    return "rgb" if samples in (3, 4) else "minisblack"


def _check_storable(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if len(shape) > 3:
        raise ArgumentError(
            f"out={str(path)!r}: a TIFF holds (H, W) or (H, W, C) images; the result has "
            f"shape {shape}; write it to .npy or .zarr instead"
        )
    if dtype.kind not in "uifc":
        raise ArgumentError(
            f"out={str(path)!r}: a TIFF cannot hold {dtype} pixels; pass dtype='uint8' "
            "(or another number type), or write to .npy or .zarr"
        )


class TiffOutput(OutputFile):
    """An output ``.tif``: uncompressed tiled BigTIFF, or encoded at the end (module docstring).

    ``georeference`` is the input's, carried over when the output has the
    input's width and height; ``nodata`` the rule that gives the output's
    nodata value for its dtype, declared in the file.
    """

    def __init__(
        self,
        path: Path,
        encoding: Encoding = AS_WRITTEN,
        georeference: Georeference = NO_GEOREFERENCE,
        nodata: NodataRule | None = None,
        dtype: np.dtype | None = None,
    ) -> None:
        _tifffile("writing .tif files")
        super().__init__(path)
        if dtype is not None:  # dtype= given: known before any tile runs
            check_encodable(encoding, path, None, dtype)
            if nodata is not None:
                nodata.for_output(dtype)
        self.encoding = encoding
        self.georeference = georeference
        self.nodata = nodata
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self._tiles: EncodedTilesSink | None = None  # tiles the workers encoded
        self._extratags: list[ExtraTag] = []

    def create(
        self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]
    ) -> TiffSink | EncodedTilesSink:
        check_encodable(self.encoding, self.path, shape, dtype)
        _check_storable(self.path, shape, dtype)
        extratags = self._carried_tags(shape, dtype)
        self._shape, self._dtype = shape, dtype
        tiles = self._encoded_tiles(shape, dtype, tile)
        if tiles is not None:
            self._extratags = extratags
            self._tiles = EncodedTilesSink.create(self.partial, *tiles)
            return self._tiles
        return TiffSink.create(self.partial, shape, dtype, extratags)

    def reopen(
        self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]
    ) -> TiffSink | EncodedTilesSink:
        self._shape, self._dtype = shape, dtype
        tiles = self._encoded_tiles(shape, dtype, tile)
        if tiles is not None:
            self._extratags = self._carried_tags(shape, dtype)
            self._tiles = EncodedTilesSink.reopen(self.partial, *tiles)
            return self._tiles
        return TiffSink.reopen(self.partial, shape, dtype)

    def _encoded_tiles(
        self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]
    ) -> tuple[Any, ...] | None:
        """The arguments of the sink of tiles the workers encode, or None when they cannot."""
        tiff_tile = worker_tiff_tile(self.encoding, shape, tile)
        if tiff_tile is None:
            return None
        pyramid = None
        if self.encoding.cog:
            nodata = None if self.nodata is None else self.nodata.for_output(dtype)
            downsampling = Downsampling(self.encoding.overview_resampling, nodata)
            pyramid = Pyramid.plan(shape, tile, downsampling)
        return (shape, dtype, self.encoding, tiff_tile, tile, pyramid)

    def _carried_tags(self, shape: tuple[int, ...], dtype: np.dtype) -> list[ExtraTag]:
        """The input's georeferencing and the output's nodata, as the output's TIFF tags."""
        bands = shape[2] if len(shape) == 3 else 1
        nodata = None if self.nodata is None else self.nodata.for_output(dtype)
        return self.georeference.extratags(bands, nodata)

    def publish(self) -> None:
        if not self.encoding.encodes:
            super().publish()
            return
        assert self._shape is not None, "created or reopened before it is published"
        assert self._dtype is not None
        encoded = temporary_path(self.path)
        if self._tiles is not None:
            nodata = [tag for tag in self._extratags if tag[0] == GDAL_NODATA]
            self._tiles.assemble(encoded, self._extratags, nodata, photometric(self._shape))
        elif self.encoding.cog:
            write_cog(self.partial, encoded, self.encoding)
        else:
            sink = TiffSink.reopen(self.partial, self._shape, self._dtype)
            try:
                encode(
                    sink.tiles(),
                    encoded,
                    self._shape,
                    self._dtype,
                    self.encoding,
                    _extratags(self.partial),
                    photometric(self._shape),
                )
            finally:
                sink.close()
        fsync_file(encoded)
        publish(encoded, self.path)
        remove(self.partial)


def _extratags(path: Path) -> list[ExtraTag]:
    """The georeferencing, metadata and nodata tags of the partial file, to write again."""
    with _open_tiff(path, "out") as tif:
        carried = read_georeference(tif.pages[0])
    return carried.extratags(carried.bands, carried.nodata)
