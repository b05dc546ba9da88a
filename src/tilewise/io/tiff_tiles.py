"""A compressed ``.tif`` output whose tiles are encoded by the workers that compute them.

A compressed TIFF tile's size is known only once it is encoded, so no worker
can write it in place. Each worker encodes the TIFF tiles of its result
where it computed them (in parallel, as the codecs release the GIL) and
writes each to a file of its own in the partial folder beside the output;
once every tile is there, one writer (:mod:`tilewise.io.tiff_layout`) places
the encoded bytes in order behind the georeferencing tags, without decoding
them. A resumed run finds the tiles the journal recorded in that folder:
each tile file is flushed to disk before its tile is recorded.

With ``cog=True``, each worker also makes the first overviews of its result
(:mod:`tilewise.io.overviews`) and encodes their tiles the same way; the
last of them it also writes, uncompressed, in place into one file in that
folder. Once every tile is there, the further levels are made from that
file and encoded, on a thread per CPU, and the writer lays the levels out
as a Cloud-Optimized GeoTIFF.

This needs the run's tiles to cover whole TIFF tiles, so that two workers
never share one: the TIFF tiles are 512 x 512 when ``tile=`` is a multiple
of 512 (the default is 512), else 256 x 256 when it is a multiple of 256.
Other tilings, JPEG, an uncompressed COG and the overview resamplings GDAL
alone makes go through the uncompressed partial and the last encoding step
of :mod:`tilewise.io.tiff_encode`.
"""

from __future__ import annotations

import os
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

import numpy as np

from tilewise._cpus import available_cpus
from tilewise._optional import import_optional
from tilewise.errors import ArgumentError
from tilewise.io._files import Reopening, fsync_dir, fsync_file, reserve
from tilewise.io.base import Window
from tilewise.io.geo import ExtraTag
from tilewise.io.overviews import OWN_RESAMPLINGS, Pyramid
from tilewise.io.tiff_encode import Encoding, predictor
from tilewise.io.tiff_layout import Image, Level, write_tiff

#: The codecs a worker encodes with: lossless, with one tile's bytes independent of the rest.
WORKER_CODECS = ("zstd", "deflate", "lzw")
#: tifffile's names of those codecs' TIFF compression schemes.
_SCHEMES = {"zstd": "ZSTD", "deflate": "ADOBE_DEFLATE", "lzw": "LZW"}
#: The byte order of every encoded tile and of the file that holds them.
BYTEORDER: Literal["<"] = "<"
#: TIFF tile sizes the workers encode, the largest the run's tiles allow first:
#: 512 (GDAL's COG default) compresses a little better and faster than 256.
WORKER_TIFF_TILES = (512, 256)
#: Rows of TIFF tiles each thread makes at a time when the last levels are made.
_AHEAD = 2
#: The type of the tiles' sizes at the end of a run tile's file.
_SIZE = np.dtype("<u8")

T = TypeVar("T")


def worker_tiff_tile(
    encoding: Encoding, shape: tuple[int, ...], tile: tuple[int, ...]
) -> tuple[int, int] | None:
    """The TIFF tile the workers encode, or None when they cannot.

    They can for a lossless codec when each run tile covers whole TIFF tiles
    (along an axis that one run tile spans, any size does), and for a COG
    whose overviews are made here.
    """
    if encoding.compression not in WORKER_CODECS:
        return None
    if encoding.cog and encoding.overview_resampling not in OWN_RESAMPLINGS:
        return None
    for size in WORKER_TIFF_TILES:
        if all(run % size == 0 or run >= n for run, n in zip(tile, shape[:2], strict=True)):
            return (size, size)
    return None


class EncodedTilesSink(Reopening):
    """A folder of encoded TIFF tiles: a file per run tile, with every tile it made.

    A run tile's file holds its TIFF tiles' encoded bytes, level by level and
    row by row, then their sizes (little-endian uint64). ``pyramid``: the
    COG's overviews, or None for a GeoTIFF without them.
    """

    _handles = ("_last_level",)

    def __init__(
        self,
        path: Path,
        shape: tuple[int, ...],
        dtype: np.dtype,
        encoding: Encoding,
        tiff_tile: tuple[int, int],
        run_tile: tuple[int, ...],
        pyramid: Pyramid | None = None,
    ) -> None:
        self.path = path
        self.shape = shape
        self.dtype = np.dtype(dtype).newbyteorder(BYTEORDER)
        self.encoding = encoding
        self.tiff_tile = tiff_tile
        self.run_tile = run_tile
        self.pyramid = pyramid
        self.chunks: tuple[int, ...] | None = tiff_tile
        self._last_level: np.memmap | None = None

    @classmethod
    def create(cls, path: Path, *args: Any) -> EncodedTilesSink:
        path.mkdir()
        sink = cls(path, *args)
        raw = sink._raw_level
        if raw is not None:
            with open(sink._raw_file(raw), "wb") as file:
                file.truncate(sink._raw_bytes(raw))
                reserve(file.fileno(), sink._raw_bytes(raw), path)
        fsync_dir(path)
        fsync_dir(path.parent)
        return sink

    @classmethod
    def reopen(cls, path: Path, *args: Any) -> EncodedTilesSink:
        sink = cls(path, *args)
        raw = sink._raw_level
        if not path.is_dir() or (
            raw is not None
            and (
                not sink._raw_file(raw).is_file()
                or sink._raw_file(raw).stat().st_size != sink._raw_bytes(raw)
            )
        ):
            raise ArgumentError(
                f"out: {str(path)!r} is not the folder of encoded tiles the journal recorded; "
                "it was changed since"
            )
        return sink

    def write(self, window: Window, data: np.ndarray) -> None:
        rows, cols = window
        block = data.reshape(*data.shape[:2], self._samples).astype(self.dtype, copy=False)
        encoded = self._encoded(0, block)
        if self.pyramid is not None:
            for level in range(1, self.pyramid.by_workers + 1):
                block = self.pyramid.downsampling(block)
                encoded += self._encoded(level, block)
        sizes = np.array([len(tile) for tile in encoded], _SIZE)
        with open(self._run_file(window), "wb") as file:
            file.writelines(encoded)
            file.write(sizes.tobytes())
        if self._raw_level is not None:
            y, x = rows.start >> self._raw_level, cols.start >> self._raw_level
            self._open_last_level()[y : y + block.shape[0], x : x + block.shape[1]] = block

    def sync(self, windows: Sequence[Window]) -> None:
        for window in windows:
            fsync_file(self._run_file(window))
        if self._raw_level is not None:
            fsync_file(self._raw_file(self._raw_level))
        fsync_dir(self.path)

    def assemble(
        self,
        dest: Path,
        extratags: Sequence[ExtraTag],
        overview_tags: Sequence[ExtraTag],
        photometric: str,
    ) -> None:
        """Write the GeoTIFF ``dest`` from the encoded tiles, in order, without decoding them.

        ``overview_tags``: what the overviews carry of ``extratags`` (nodata).
        """
        runs = [self._run_tiles(window) for window in self._run_windows()]
        sizes = [np.zeros(self._grid(level), np.uint64) for level in range(self._worker_levels)]
        for run in runs:
            for (level, row, col), size in zip(run.tiles, run.sizes, strict=True):
                sizes[level][row, col] = size
        levels = [
            Level(self._level_shape(level), self._level_tile(level), sizes[level].ravel())
            for level in range(self._worker_levels)
        ]
        made = self._made_levels()
        levels += [level for level, _ in made]

        def write_tiles(file: BinaryIO, offsets: Sequence[np.ndarray]) -> None:
            for run in runs:
                data = memoryview(run.file.read_bytes())
                start = 0
                for (level, row, col), size in zip(run.tiles, run.sizes, strict=True):
                    file.seek(int(offsets[level][row * sizes[level].shape[1] + col]))
                    file.write(data[start : start + size])
                    start += size
            for index, (_, tiles_file) in enumerate(made, start=self._worker_levels):
                file.seek(int(offsets[index][0]))
                with open(tiles_file, "rb") as source:
                    shutil.copyfileobj(source, file)

        image = Image(
            self.dtype,
            _scheme(self.encoding),
            predictor(self.dtype, self.encoding),
            photometric,
            extratags,
            overview_tags,
        )
        write_tiff(dest, image, levels, write_tiles)

    def __getstate__(self) -> dict[str, object]:
        state = super().__getstate__()
        state.pop("_encode", None)  # a closure over the codec: each process makes its own
        return state

    @property
    def _samples(self) -> int:
        return self.shape[2] if len(self.shape) == 3 else 1

    @property
    def _worker_levels(self) -> int:
        """The levels whose tiles the workers encode, the full resolution among them."""
        return 1 + (0 if self.pyramid is None else self.pyramid.by_workers)

    @property
    def _raw_level(self) -> int | None:
        """The level the workers also write uncompressed, for the levels made at the end."""
        pyramid = self.pyramid
        if pyramid is None or pyramid.by_workers == pyramid.levels:
            return None
        return pyramid.by_workers

    def _level_shape(self, level: int) -> tuple[int, ...]:
        if level == 0:
            return self.shape
        assert self.pyramid is not None
        return self.pyramid.shapes[level - 1]

    def _level_tile(self, level: int) -> tuple[int, int]:
        if level == 0:
            return self.tiff_tile
        assert self.pyramid is not None
        return self.pyramid.tiles[level - 1]

    def _grid(self, level: int) -> tuple[int, int]:
        """TIFF tiles down and across ``level``."""
        (rows, cols, *_), (th, tw) = self._level_shape(level), self._level_tile(level)
        return (-(-rows // th), -(-cols // tw))

    def _run_windows(self) -> Iterator[Window]:
        (rows, cols, *_), (th, tw, *_) = self.shape, self.run_tile
        for y in range(0, rows, th):
            for x in range(0, cols, tw):
                yield (slice(y, min(y + th, rows)), slice(x, min(x + tw, cols)))

    def _run_file(self, window: Window) -> Path:
        rows, cols = window
        return self.path / f"{rows.start}-{cols.start}"

    def _run_tiles(self, window: Window) -> _RunTiles:
        """What the file of the run tile ``window`` holds: which tiles, of what sizes."""
        tiles = [
            (level, row, col)
            for level in range(self._worker_levels)
            for row, col in self._tiles_of(level, window)
        ]
        file = self._run_file(window)
        with open(file, "rb") as opened:
            opened.seek(-len(tiles) * _SIZE.itemsize, os.SEEK_END)
            sizes = np.frombuffer(opened.read(), _SIZE).astype(np.int64)
        return _RunTiles(file, tiles, sizes.tolist())

    def _tiles_of(self, level: int, window: Window) -> Iterator[tuple[int, int]]:
        """The TIFF tiles of ``level`` that the run tile ``window`` makes, row by row."""
        th, tw = self._level_tile(level)
        rows, cols = (_at_level(span, level) for span in window)
        for row in range(rows.start // th, -(-rows.stop // th)):
            for col in range(cols.start // tw, -(-cols.stop // tw)):
                yield row, col

    def _encoded(self, level: int, block: np.ndarray) -> list[bytes]:
        """The encoded TIFF tiles of ``block`` of ``level``, which starts at a tile's corner."""
        return [self._encode(tile) for tile in _tiles(block, self._level_tile(level))]

    @cached_property
    def _encode(self) -> Callable[[np.ndarray], bytes]:
        """The tile encoder tifffile itself uses for this codec and predictor."""
        tiff = import_optional("tifffile", "writing compressed .tif files").TIFF
        compress = tiff.COMPRESSORS[_scheme(self.encoding)]
        level = {} if self.encoding.level is None else {"level": self.encoding.level}
        tag = predictor(self.dtype, self.encoding)
        if not tag:
            return lambda block: compress(block, **level)
        apply_predictor = tiff.PREDICTORS[tag]
        return lambda block: compress(apply_predictor(block, axis=-2), **level)

    def _raw_file(self, level: int) -> Path:
        return self.path / f"level-{level}"

    def _raw_bytes(self, level: int) -> int:
        return int(np.prod(self._raw_shape(level))) * self.dtype.itemsize

    def _raw_shape(self, level: int) -> tuple[int, int, int]:
        rows, cols, *_ = self._level_shape(level)
        return (rows, cols, self._samples)

    def _open_last_level(self) -> np.memmap:
        raw = self._last_level  # one read of the handle: another thread may close it
        if raw is None:
            assert self._raw_level is not None
            level = self._raw_level
            raw = self._last_level = np.memmap(
                self._raw_file(level), self.dtype, "r+", shape=self._raw_shape(level)
            )
        return raw

    def _made_levels(self) -> list[tuple[Level, Path]]:
        """The levels below the workers', each made from the one above, and their tiles' files."""
        raw = self._raw_level
        if raw is None:
            return []
        assert self.pyramid is not None
        made = []
        source = np.memmap(self._raw_file(raw), self.dtype, "r", shape=self._raw_shape(raw))
        for level in range(raw + 1, self.pyramid.levels + 1):
            last = level == self.pyramid.levels
            target = None if last else self._new_raw(level)
            made.append(self._make_level(level, source, target))
            if target is not None:
                source = target
        return made

    def _new_raw(self, level: int) -> np.memmap:
        return np.memmap(self._raw_file(level), self.dtype, "w+", shape=self._raw_shape(level))

    def _make_level(
        self, level: int, source: np.ndarray, target: np.ndarray | None
    ) -> tuple[Level, Path]:
        """``level`` from ``source`` (the level above), into ``target`` if a level follows."""
        assert self.pyramid is not None
        downsampling = self.pyramid.downsampling
        th, tw = self._level_tile(level)
        rows, _ = self._grid(level)

        def tile_row(row: int) -> list[bytes]:
            block = downsampling(source[2 * row * th : 2 * (row + 1) * th])
            if target is not None:
                target[row * th : row * th + block.shape[0]] = block
            return self._encoded(level, block)

        encoded = self.path / f"level-{level}.tiles"
        sizes: list[int] = []
        with open(encoded, "wb") as file, ThreadPoolExecutor(available_cpus()) as pool:
            for tiles in _in_order(pool, tile_row, range(rows), _AHEAD * available_cpus()):
                file.writelines(tiles)
                sizes += [len(tile) for tile in tiles]
        return Level(self._level_shape(level), (th, tw), np.array(sizes, np.uint64)), encoded


@dataclass(frozen=True, slots=True)
class _RunTiles:
    """The TIFF tiles a run tile's file holds, in its order: (level, row, col) and size."""

    file: Path
    tiles: list[tuple[int, int, int]]
    sizes: list[int]


def _at_level(span: slice, level: int) -> range:
    """The rows (or columns) of ``level`` made from ``span`` of the full resolution."""
    return range(span.start >> level, -(-span.stop >> level))


def _tiles(block: np.ndarray, tile: tuple[int, int]) -> Iterator[np.ndarray]:
    """The TIFF tiles of ``block`` (which starts at a tile's corner), row by row, padded."""
    th, tw = tile
    for y in range(0, block.shape[0], th):
        for x in range(0, block.shape[1], tw):
            part = block[y : y + th, x : x + tw]
            if part.shape[:2] != tile:  # an edge tile, padded with zeros as tifffile pads
                padded = np.zeros((th, tw, block.shape[2]), block.dtype)
                padded[: part.shape[0], : part.shape[1]] = part
                part = padded
            yield np.ascontiguousarray(part)


def _in_order(
    pool: ThreadPoolExecutor, func: Callable[[int], T], items: Iterable[int], ahead: int
) -> Iterator[T]:
    """``pool.map(func, items)`` with at most ``ahead`` results made and not yet taken."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(func, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _scheme(encoding: Encoding) -> int:
    tifffile = import_optional("tifffile", "writing compressed .tif files")
    assert encoding.compression is not None
    return int(tifffile.COMPRESSION[_SCHEMES[encoding.compression]])
