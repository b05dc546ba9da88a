"""A tiled TIFF written from tiles already encoded, laid out as a Cloud-Optimized GeoTIFF.

The COG layout (GDAL's COG driver's, checked by ``rio cogeo validate``)
puts the IFDs of every level right after the header, the full resolution's
first, then their tag values (the tile offsets and byte counts among them),
then the tiles of the smallest overview, level by level up to the full
resolution's last. A reader over HTTP finds every level's tile index in its
first request, and reads a small overview without skipping through the
large ones. A file without overviews is the same layout with one level:
a plain tiled GeoTIFF.

Neither library at hand writes it from encoded tiles: tifffile puts each
level's IFD beside its own tiles, and GDAL's COG driver encodes every tile
again. The IFDs are simple enough to write here: the same baseline and
GeoTIFF tags tifffile and GDAL write, in little-endian classic TIFF, or
BigTIFF when the tiles reach 4 GiB.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tilewise.io.geo import ASCII, ExtraTag
from tilewise.io.tiff_encode import tiff_size_is_big

#: TIFF data types of the tags written here, and their numpy types (little-endian).
SHORT, LONG, LONG8 = 3, 4, 16
_NUMPY_TYPES = {
    1: "u1",  # BYTE
    3: "<u2",
    4: "<u4",
    5: "<u4",  # RATIONAL: numerator and denominator
    6: "i1",
    7: "u1",  # UNDEFINED
    8: "<i2",
    9: "<i4",
    10: "<i4",  # SRATIONAL
    11: "<f4",
    12: "<f8",
    16: "<u8",
    17: "<i8",
}
#: Baseline tags, by code.
NEW_SUBFILE_TYPE, IMAGE_WIDTH, IMAGE_LENGTH, BITS_PER_SAMPLE, COMPRESSION = 254, 256, 257, 258, 259
PHOTOMETRIC, SAMPLES_PER_PIXEL, PLANAR_CONFIG, PREDICTOR = 262, 277, 284, 317
TILE_WIDTH, TILE_LENGTH, TILE_OFFSETS, TILE_BYTE_COUNTS = 322, 323, 324, 325
EXTRA_SAMPLES, SAMPLE_FORMAT = 338, 339
#: NewSubfileType of an overview: a reduced-resolution version of the image.
REDUCED_IMAGE = 1
_PHOTOMETRIC = {"minisblack": 1, "rgb": 2}
_SAMPLE_FORMAT = {"u": 1, "i": 2, "f": 3, "c": 6}


@dataclass(frozen=True, slots=True)
class Level:
    """One resolution of the image: its shape, its TIFF tile, its tiles' encoded sizes.

    ``sizes`` holds one size per tile, row by row of tiles.
    """

    shape: tuple[int, ...]
    tile: tuple[int, int]
    sizes: np.ndarray


#: Writes every level's tiles to the open file, each at its offset (one array per level).
WriteTiles = Callable[[BinaryIO, Sequence[np.ndarray]], None]


@dataclass(frozen=True, slots=True)
class Image:
    """What every level shares: pixel type, codec, and the tags the full resolution carries."""

    dtype: np.dtype
    compression: int  # the TIFF compression scheme
    predictor: int  # 0: none
    photometric: str
    extratags: Sequence[ExtraTag]  # the full resolution's georeferencing, nodata, metadata
    overview_tags: Sequence[ExtraTag]  # what the overviews carry of those (nodata)


def write_tiff(dest: Path, image: Image, levels: Sequence[Level], write_tiles: WriteTiles) -> None:
    """Write ``levels`` (full resolution first, then each overview) to ``dest`` in COG order.

    The header, IFDs and tag values are written here; the tiles by
    ``write_tiles``, at the offsets given to it.
    """
    big = tiff_size_is_big(sum(int(level.sizes.sum()) for level in levels))
    tags = [_tags(image, level, index > 0, big) for index, level in enumerate(levels)]
    layout = _Layout(big)
    ifd_starts = [layout.place_ifd(len(level_tags)) for level_tags in tags]
    for level_tags in tags:
        for tag in level_tags:
            layout.place_value(tag)
    offsets: list[np.ndarray] = [np.empty(0, np.uint64)] * len(levels)
    data_start = layout.end
    for index in reversed(range(len(levels))):  # the smallest overview's tiles first
        sizes = levels[index].sizes.astype(np.uint64)
        offsets[index] = data_start + np.concatenate([[0], np.cumsum(sizes[:-1])]).astype(np.uint64)
        data_start += int(sizes.sum())
        _tag(tags[index], TILE_OFFSETS).data = _pack(LONG8 if big else LONG, offsets[index])
    with open(dest, "wb") as file:
        file.write(layout.header(ifd_starts[0]))
        for index, level_tags in enumerate(tags):
            following = ifd_starts[index + 1] if index + 1 < len(tags) else 0
            file.write(layout.ifd(level_tags, following))
        for level_tags in tags:
            for tag in level_tags:
                if tag.offset is not None:
                    file.write(tag.data.ljust(_even(len(tag.data)), b"\0"))
        assert file.tell() == layout.end
        write_tiles(file, offsets)
        assert file.seek(0, os.SEEK_END) == data_start, "every tile written, and nothing else"


@dataclass(slots=True)
class _Tag:
    code: int
    type: int
    count: int
    data: bytes
    offset: int | None = None  # where the value is, when it does not fit in the entry


def _tags(image: Image, level: Level, overview: bool, big: bool) -> list[_Tag]:
    samples = level.shape[2] if len(level.shape) == 3 else 1
    base_samples = 3 if image.photometric == "rgb" else 1
    tiles = int(level.sizes.size)
    offsets_type = LONG8 if big else LONG
    tags = [
        _numbers(IMAGE_WIDTH, LONG, [level.shape[1]]),
        _numbers(IMAGE_LENGTH, LONG, [level.shape[0]]),
        _numbers(BITS_PER_SAMPLE, SHORT, [image.dtype.itemsize * 8] * samples),
        _numbers(COMPRESSION, SHORT, [image.compression]),
        _numbers(PHOTOMETRIC, SHORT, [_PHOTOMETRIC[image.photometric]]),
        _numbers(SAMPLES_PER_PIXEL, SHORT, [samples]),
        _numbers(PLANAR_CONFIG, SHORT, [1]),
        _numbers(TILE_WIDTH, LONG, [level.tile[1]]),
        _numbers(TILE_LENGTH, LONG, [level.tile[0]]),
        _numbers(TILE_OFFSETS, offsets_type, np.zeros(tiles, np.uint64)),  # placed later
        _numbers(TILE_BYTE_COUNTS, offsets_type, level.sizes),
        _numbers(SAMPLE_FORMAT, SHORT, [_SAMPLE_FORMAT[image.dtype.kind]] * samples),
    ]
    if overview:
        tags.append(_numbers(NEW_SUBFILE_TYPE, LONG, [REDUCED_IMAGE]))
    if image.predictor:
        tags.append(_numbers(PREDICTOR, SHORT, [image.predictor]))
    if samples > base_samples:  # alpha after RGB, as tifffile marks it; else unspecified
        alpha = 2 if image.photometric == "rgb" else 0
        tags.append(_numbers(EXTRA_SAMPLES, SHORT, [alpha] * (samples - base_samples)))
    carried = image.overview_tags if overview else image.extratags
    tags.extend(_extratag(tag) for tag in carried)
    return sorted(tags, key=lambda tag: tag.code)


def _numbers(code: int, type: int, values: object) -> _Tag:
    data = _pack(type, values)
    return _Tag(code, type, len(data) // np.dtype(_NUMPY_TYPES[type]).itemsize, data)


def _pack(type: int, values: object) -> bytes:
    return np.asarray(values).astype(_NUMPY_TYPES[type]).tobytes()


def _extratag(tag: ExtraTag) -> _Tag:
    """A tag as tifffile reads it and takes it to write (code, type, count, value, once)."""
    code, type, _, value, _ = tag
    if type == ASCII:
        text = value if isinstance(value, bytes) else str(value).encode("ascii", "replace")
        data = text.rstrip(b"\0") + b"\0"
        return _Tag(code, ASCII, len(data), data)
    if isinstance(value, bytes):
        return _Tag(code, type, len(value), value)
    tag_ = _numbers(code, type, value)
    if type in (5, 10):  # a rational is two numbers
        tag_.count //= 2
    return tag_


def _tag(tags: list[_Tag], code: int) -> _Tag:
    return next(tag for tag in tags if tag.code == code)


def _even(size: int) -> int:
    return size + size % 2


class _Layout:
    """Where each IFD and each tag value that does not fit in its entry goes, in order."""

    def __init__(self, big: bool) -> None:
        self.big = big
        self.inline = 8 if big else 4  # bytes of a value held in its entry
        self.end = 16 if big else 8  # after the header

    def place_ifd(self, entries: int) -> int:
        start = self.end
        count, entry, following = (8, 20, 8) if self.big else (2, 12, 4)
        self.end += count + entries * entry + following
        return start

    def place_value(self, tag: _Tag) -> None:
        if len(tag.data) > self.inline:
            tag.offset = self.end
            self.end += _even(len(tag.data))

    def header(self, first_ifd: int) -> bytes:
        if self.big:
            return b"II" + struct.pack("<HHHQ", 43, 8, 0, first_ifd)
        return b"II" + struct.pack("<HI", 42, first_ifd)

    def ifd(self, tags: list[_Tag], following: int) -> bytes:
        big = self.big
        parts = [struct.pack("<Q" if big else "<H", len(tags))]
        for tag in tags:
            if tag.offset is None:
                value = tag.data.ljust(self.inline, b"\0")
            else:
                value = struct.pack("<Q" if big else "<I", tag.offset)
            parts.append(struct.pack("<HHQ" if big else "<HHI", tag.code, tag.type, tag.count))
            parts.append(value)
        parts.append(struct.pack("<Q" if big else "<I", following))
        return b"".join(parts)
