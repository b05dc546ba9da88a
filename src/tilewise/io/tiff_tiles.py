"""A compressed ``.tif`` output whose tiles are encoded by the workers that compute them.

A compressed TIFF tile's size is known only once it is encoded, so no worker
can write it in place. Each worker encodes the TIFF tiles of its result
where it computed them (in parallel, as the codecs release the GIL) and
writes each to a file of its own in the partial folder beside the output;
once every tile is there, one writer, tifffile's, places the encoded bytes in
order behind the georeferencing tags, without decoding them. A resumed run
finds the tiles the journal recorded in that folder: each tile file is
flushed to disk before its tile is recorded.

This needs the run's tiles to cover whole TIFF tiles, so that two workers
never share one: the TIFF tiles are 512 x 512 when ``tile=`` is a multiple
of 512 (the default is 512), else 256 x 256 when it is a multiple of 256.
Other tilings, JPEG and ``cog=True`` go through the uncompressed partial
and the last encoding step of :mod:`tilewise.io.tiff_encode`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tilewise._optional import import_optional
from tilewise.errors import ArgumentError
from tilewise.io._files import Reopening, fsync_dir, fsync_file
from tilewise.io.base import Window
from tilewise.io.geo import ExtraTag
from tilewise.io.tiff_encode import Encoding, predictor, tiff_size_is_big

#: The codecs a worker encodes with: lossless, with one tile's bytes independent of the rest.
WORKER_CODECS = ("zstd", "deflate", "lzw")
#: tifffile's names of those codecs' TIFF compression schemes.
_SCHEMES = {"zstd": "ZSTD", "deflate": "ADOBE_DEFLATE", "lzw": "LZW"}
#: The byte order of every encoded tile and of the file that holds them.
BYTEORDER: Literal["<"] = "<"


#: TIFF tile sizes the workers encode, the largest the run's tiles allow first:
#: 512 (GDAL's COG default) compresses a little better and faster than 256.
WORKER_TIFF_TILES = (512, 256)


def worker_tiff_tile(
    encoding: Encoding, shape: tuple[int, ...], tile: tuple[int, ...]
) -> tuple[int, int] | None:
    """The TIFF tile the workers encode, or None when they cannot.

    They can for a lossless codec when each run tile covers whole TIFF tiles
    (along an axis that one run tile spans, any size does).
    """
    if encoding.cog or encoding.compression not in WORKER_CODECS:
        return None
    for size in WORKER_TIFF_TILES:
        if all(run % size == 0 or run >= n for run, n in zip(tile, shape[:2], strict=True)):
            return (size, size)
    return None


class EncodedTilesSink(Reopening):
    """A folder of encoded TIFF tiles, one file per tile, named by its row and column."""

    def __init__(
        self,
        path: Path,
        shape: tuple[int, ...],
        dtype: np.dtype,
        encoding: Encoding,
        tiff_tile: tuple[int, int],
    ) -> None:
        self.path = path
        self.shape = shape
        self.dtype = dtype
        self.encoding = encoding
        self.tiff_tile = tiff_tile
        self.chunks: tuple[int, ...] | None = tiff_tile

    @classmethod
    def create(cls, path: Path, *args: Any) -> EncodedTilesSink:
        path.mkdir()
        fsync_dir(path.parent)
        return cls(path, *args)

    @classmethod
    def reopen(cls, path: Path, *args: Any) -> EncodedTilesSink:
        if not path.is_dir():
            raise ArgumentError(
                f"out: {str(path)!r} is not the folder of encoded tiles the journal recorded; "
                "it was changed since"
            )
        return cls(path, *args)

    @property
    def grid(self) -> tuple[int, int]:
        """TIFF tiles down and across."""
        th, tw = self.tiff_tile
        return (-(-self.shape[0] // th), -(-self.shape[1] // tw))

    def tile_file(self, row: int, col: int) -> Path:
        return self.path / f"{row}-{col}"

    def write(self, window: Window, data: np.ndarray) -> None:
        rows, cols = window
        th, tw = self.tiff_tile
        samples = self.shape[2] if len(self.shape) == 3 else 1
        data = data.reshape(*data.shape[:2], samples)
        for row, col in self._tiles(window):
            y, x = row * th - rows.start, col * tw - cols.start
            part = data[y : y + th, x : x + tw]
            block = np.zeros((th, tw, samples), self.dtype.newbyteorder(BYTEORDER))
            block[: part.shape[0], : part.shape[1]] = part  # an edge tile, padded as tifffile does
            self.tile_file(row, col).write_bytes(self._encode(block))

    @cached_property
    def _encode(self) -> Any:
        """The tile encoder tifffile itself uses for this codec and predictor."""
        tiff = import_optional("tifffile", "writing compressed .tif files").TIFF
        compress = tiff.COMPRESSORS[_scheme(self.encoding)]
        level = {} if self.encoding.level is None else {"level": self.encoding.level}
        tag = predictor(self.dtype, self.encoding)
        if not tag:
            return lambda block: compress(block, **level)
        apply_predictor = tiff.PREDICTORS[tag]
        return lambda block: compress(apply_predictor(block, axis=-2), **level)

    def _tiles(self, window: Window) -> Iterator[tuple[int, int]]:
        th, tw = self.tiff_tile
        rows, cols = window
        for row in range(rows.start // th, -(-rows.stop // th)):
            for col in range(cols.start // tw, -(-cols.stop // tw)):
                yield row, col

    def sync(self, windows: Sequence[Window]) -> None:
        for window in windows:
            for row, col in self._tiles(window):
                fsync_file(self.tile_file(row, col))
        fsync_dir(self.path)

    def __getstate__(self) -> dict[str, object]:
        state = super().__getstate__()
        state.pop("_encode", None)  # a closure over the codec: each process makes its own
        return state

    def assemble(
        self, dest: Path, extratags: list[ExtraTag], photometric: str, written: int
    ) -> None:
        """Write the GeoTIFF ``dest`` from the encoded tiles, in order, without decoding them.

        ``written``: the bytes of the tiles, which decide whether it must be a BigTIFF.
        """
        tifffile = import_optional("tifffile", "writing compressed .tif files")
        rows, cols = self.grid
        tiles = (self.tile_file(r, c).read_bytes() for r in range(rows) for c in range(cols))
        args = None if self.encoding.level is None else {"level": self.encoding.level}
        tifffile.imwrite(
            dest,
            data=tiles,
            shape=self.shape,
            dtype=self.dtype,
            byteorder=BYTEORDER,
            tile=self.tiff_tile,
            compression=_scheme(self.encoding),
            compressionargs=args,
            predictor=predictor(self.dtype, self.encoding),
            photometric=photometric,
            planarconfig="contig",
            bigtiff=tiff_size_is_big(written),
            extratags=extratags,
            metadata=None,
        )

    def encoded_bytes(self) -> int:
        return sum(file.stat().st_size for file in self.path.iterdir())


def _scheme(encoding: Encoding) -> int:
    tifffile = import_optional("tifffile", "writing compressed .tif files")
    assert encoding.compression is not None
    return int(tifffile.COMPRESSION[_SCHEMES[encoding.compression]])
