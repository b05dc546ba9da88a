"""The overviews of a Cloud-Optimized GeoTIFF: each level half the size of the one above.

The first levels are made by the workers, each from the result it holds: a
run tile that covers whole TIFF tiles of a level covers the 2x2 blocks they
are made of. The further levels, whose TIFF tiles would span several run
tiles, are made from the last of those when the output is published
(:class:`Pyramid`). Two resamplings are made here, as GDAL makes them at a
ratio of 2:

- ``average``: the mean of the pixels of a 2x2 block that are not nodata,
  rounded half up for integers; nodata where all of them are. NaN is a
  value like any other unless it is the nodata value, so it spreads, as in
  GDAL.
- ``nearest``: the block's upper-left pixel, GDAL's pick at a ratio of 2.

Levels of even size are GDAL's bit for bit: the sums are taken in GDAL's
order and precision. At the last row or column of a level of odd size the block holds the one or
two pixels left there. GDAL instead weighs fractional source pixels across a
whole level of odd size, so its overviews of odd-sized levels differ from
these by a little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: The ``overview_resampling=`` methods made here (the others are GDAL's COG driver's).
OWN_RESAMPLINGS = ("average", "nearest")
#: Overviews are added until a level fits in a block of this size, as GDAL's COG driver counts.
FITS_IN = 512
#: TIFF tile sizes of the levels the workers make, the largest their run tiles allow
#: first; below 128 a tile's header and codec overhead start to tell.
WORKER_LEVEL_TILES = (512, 256, 128)


def level_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The overviews' shapes: halving rows and columns (rounding up) until a level fits."""
    levels: list[tuple[int, ...]] = []
    rows, cols = shape[:2]
    while rows > FITS_IN or cols > FITS_IN:
        rows, cols = -(-rows // 2), -(-cols // 2)
        levels.append((rows, cols, *shape[2:]))
    return levels


@dataclass(frozen=True, slots=True)
class Pyramid:
    """The overviews of a COG: each level's shape and TIFF tile, and who makes it.

    Levels 1 to ``by_workers`` are made and encoded by the workers; the rest
    from level ``by_workers`` when the output is published.
    """

    shapes: tuple[tuple[int, ...], ...]
    tiles: tuple[tuple[int, int], ...]
    by_workers: int
    downsampling: Downsampling

    @classmethod
    def plan(
        cls, shape: tuple[int, ...], run_tile: tuple[int, ...], downsampling: Downsampling
    ) -> Pyramid:
        """The pyramid of an image of ``shape`` computed in tiles of ``run_tile``."""
        shapes = level_shapes(shape)
        tiles: list[tuple[int, int]] = []
        for level in range(1, len(shapes) + 1):
            size = next(
                (
                    size
                    for size in WORKER_LEVEL_TILES
                    if all(
                        run % (size << level) == 0 or run >= n
                        for run, n in zip(run_tile, shape[:2], strict=True)
                    )
                ),
                None,
            )
            if size is None:
                break
            tiles.append((size, size))
        by_workers = len(tiles)
        tiles += [(FITS_IN, FITS_IN)] * (len(shapes) - by_workers)
        return cls(tuple(shapes), tuple(tiles), by_workers, downsampling)

    @property
    def levels(self) -> int:
        return len(self.shapes)


@dataclass(frozen=True, slots=True)
class Downsampling:
    """How a level is made from the one above: ``method`` over 2x2 blocks, skipping ``nodata``."""

    method: str
    nodata: float | None

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """The level below ``block`` (rows, cols, samples), of half its rows and columns."""
        if self.method == "nearest":
            return block[0::2, 0::2]
        return self._average(block)

    def _average(self, block: np.ndarray) -> np.ndarray:
        # GDAL's sums: float32 ones for a float32 level without nodata, else float64 ones.
        total = np.float32 if block.dtype == np.float32 and self.nodata is None else np.float64
        values = _padded_to_even(block.astype(total))
        valid = self._valid(block)
        if valid is not None:
            values[~valid] = 0
        # Each column's pair first, then the two: GDAL's order, so float32 sums agree to the bit.
        sums = (values[0::2, 0::2] + values[1::2, 0::2]) + (values[0::2, 1::2] + values[1::2, 1::2])
        if valid is None and block.shape[0] % 2 == 0 and block.shape[1] % 2 == 0:
            mean = sums * total(0.25)
        else:
            counts = valid if valid is not None else _padded_to_even(np.ones(block.shape, bool))
            n = counts[0::2, 0::2].astype(total)
            n += counts[1::2, 0::2]
            n += counts[0::2, 1::2]
            n += counts[1::2, 1::2]
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = sums / n
            if self.nodata is not None:
                mean[n == 0] = self.nodata
        if block.dtype.kind in "iu":
            mean = np.floor(mean + 0.5)
        return mean.astype(block.dtype)

    def _valid(self, block: np.ndarray) -> np.ndarray | None:
        """Where ``block`` holds a value, padded to even like the values; None: everywhere."""
        if self.nodata is None:
            return None
        nodata = np.isnan(block) if math.isnan(self.nodata) else block == self.nodata
        return _padded_to_even(~nodata)


def _padded_to_even(block: np.ndarray) -> np.ndarray:
    """``block`` with a row and a column of zeros (False) added where its count is odd."""
    rows, cols = block.shape[0] % 2, block.shape[1] % 2
    if not rows and not cols:
        return block
    return np.pad(block, ((0, rows), (0, cols), *[(0, 0)] * (block.ndim - 2)))
