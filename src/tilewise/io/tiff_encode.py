"""A ``.tif`` output's last step: its tiles compressed, or laid out as a Cloud-Optimized GeoTIFF.

The workers write an uncompressed tiled TIFF (see :mod:`tilewise.io.tiff`);
once it is complete, this module encodes it into the output:

- ``compression=`` alone: tifffile encodes the tiles with imagecodecs, on a
  thread per CPU (the codecs release the GIL), and writes them in order,
  with a predictor where it helps (horizontal differencing for integers,
  floating-point for floats) and the georeferencing tags carried over.
- ``cog=True``: GDAL's COG driver (through rasterio) compresses with a thread
  per CPU and builds the overviews from the result, with the IFDs and tiles
  in the order the COG specification requires.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tilewise._cpus import available_cpus
from tilewise._optional import import_optional
from tilewise.errors import ArgumentError, ArgumentTypeError
from tilewise.io.geo import ExtraTag

#: ``compression=`` values, and each one's ``level=`` range and default (GDAL's).
LEVELS: dict[str, tuple[int, int, int | None]] = {
    "zstd": (1, 22, 9),
    "deflate": (1, 9, 6),
    "lzw": (0, 0, None),
    "jpeg": (1, 100, 75),  # the JPEG quality
}
#: How ``cog=True`` makes its overviews: GDAL's resampling methods.
OVERVIEW_RESAMPLINGS = (
    "average",
    "nearest",
    "bilinear",
    "cubic",
    "cubicspline",
    "lanczos",
    "mode",
    "rms",
)
#: Bytes of tiles tifffile holds at once while encoding: memory stays bounded.
ENCODE_BUFFER = 32 * 2**20
#: GDAL's block cache while it writes a COG, in MB (its default is 5% of RAM).
GDAL_CACHE_MB = 256
#: Tiles of a COG, GDAL's default block size.
COG_TILE = 512


@dataclass(frozen=True, slots=True)
class Encoding:
    """How a ``.tif`` output's tiles are stored: checked settings."""

    compression: str | None = None
    level: int | None = None
    cog: bool = False
    overview_resampling: str = "average"

    @property
    def encodes(self) -> bool:
        """Whether the output needs the last step (else the uncompressed tiles are the output)."""
        return self.compression is not None or self.cog

    def refuse(self, out: Any) -> None:
        """Refuse ``out``, which is not a ``.tif`` path, if this encoding asks for one."""
        if self.encodes:
            option = "cog=True" if self.cog else f"compression={self.compression!r}"
            text = repr(str(out)) if isinstance(out, (str, Path)) else type(out).__name__
            raise ArgumentError(f"{option}: only for a .tif out=, not out={text}")


#: Uncompressed tiles, as the workers write them: no last step.
AS_WRITTEN = Encoding()


def make_encoding(compression: Any, level: Any, cog: Any, overview_resampling: Any) -> Encoding:
    """Checked ``compression=``, ``level=``, ``cog=`` and ``overview_resampling=``."""
    if compression is not None and (not isinstance(compression, str) or compression == ""):
        raise ArgumentTypeError(f"compression={compression!r}: must be a codec name or None")
    codec = None if compression in (None, "none") else compression.lower()
    if codec is not None and codec not in LEVELS:
        raise ArgumentError(
            f"compression={compression!r}: must be one of {', '.join(map(repr, LEVELS))} or None"
        )
    if not isinstance(cog, (bool, np.bool_)):
        raise ArgumentTypeError(f"cog={cog!r}: must be True or False")
    if overview_resampling not in OVERVIEW_RESAMPLINGS:
        raise ArgumentError(
            f"overview_resampling={overview_resampling!r}: must be one of "
            f"{', '.join(map(repr, OVERVIEW_RESAMPLINGS))}"
        )
    if overview_resampling != "average" and not cog:
        raise ArgumentError(
            f"overview_resampling={overview_resampling!r}: only cog=True outputs have overviews"
        )
    return Encoding(codec, _level(level, codec), bool(cog), overview_resampling)


def _level(level: Any, codec: str | None) -> int | None:
    if level is None:
        return None if codec is None else LEVELS[codec][2]
    if codec is None:
        raise ArgumentError(f"level={level!r}: only with compression= a codec that has levels")
    low, high, _ = LEVELS[codec]
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, np.integer)):
        raise ArgumentTypeError(f"level={level!r}: must be an integer")
    if high == 0:
        raise ArgumentError(f"level={level!r}: compression={codec!r} has no levels")
    if not low <= level <= high:
        raise ArgumentError(f"level={level!r}: compression={codec!r} takes {low} to {high}")
    return int(level)


def check_encodable(
    encoding: Encoding, path: Path, shape: tuple[int, ...] | None, dtype: np.dtype
) -> None:
    """Refuse a result the codec cannot store (JPEG holds 8-bit gray or RGB only).

    ``shape`` None: only the dtype is known yet (``dtype=``, before any tile runs).
    """
    if encoding.compression == "jpeg":
        bands = 1 if shape is None or len(shape) == 2 else shape[2]
        if dtype != np.uint8 or bands not in (1, 3):
            raise ArgumentError(
                f"out={str(path)!r}: compression='jpeg' stores 8-bit images of 1 or 3 bands; "
                f"the result is {dtype} with {bands} band(s): pass dtype='uint8', or a "
                "lossless codec ('zstd', 'deflate', 'lzw')"
            )
    if encoding.compression is not None:
        import_optional("imagecodecs", f"compression={encoding.compression!r}")
    if encoding.cog:
        import_optional("rasterio", "cog=True")


def encode(
    tiles: np.ndarray,
    dest: Path,
    shape: tuple[int, ...],
    dtype: np.dtype,
    encoding: Encoding,
    extratags: list[ExtraTag],
    photometric: str,
) -> None:
    """Write ``tiles`` (tile row, tile col, rows, cols, samples) to ``dest``, compressed."""
    tifffile = import_optional("tifffile", "writing .tif files")
    codec = encoding.compression
    args = None if encoding.level is None else {"level": encoding.level}
    tifffile.imwrite(
        dest,
        data=_iter_tiles(tiles),
        shape=shape,
        dtype=dtype,
        tile=tiles.shape[2:4],
        compression=codec,
        compressionargs=args,
        predictor=predictor(dtype, encoding),
        photometric=photometric,
        planarconfig="contig",
        bigtiff=tiff_size_is_big(tiles.nbytes),  # compressed, it is no bigger
        extratags=extratags,
        metadata=None,
        maxworkers=available_cpus(),
        buffersize=ENCODE_BUFFER,
    )


def predictor(dtype: np.dtype, encoding: Encoding) -> int:
    """The TIFF predictor tag for ``dtype`` under ``encoding``; 0 for none.

    Floating-point prediction for floats, horizontal differencing for
    integers of up to 32 bits (as GDAL's PREDICTOR=YES); nothing for wider
    integers, complex numbers or a codec without a predictor (JPEG).
    """
    if encoding.compression not in ("zstd", "deflate", "lzw"):
        return 0
    if dtype.kind == "f":
        return 3
    if dtype.kind in "iu" and dtype.itemsize <= 4:
        return 2
    return 0


def tiff_size_is_big(data_bytes: int) -> bool:
    """Whether a TIFF of ``data_bytes`` of tiles must be a BigTIFF (a classic one ends at 4 GiB)."""
    return data_bytes >= 2**32 - 2**25


def _iter_tiles(tiles: np.ndarray) -> Iterator[np.ndarray]:
    for row in tiles:
        yield from row


def write_cog(source: Path, dest: Path, encoding: Encoding) -> None:
    """Translate the uncompressed GeoTIFF ``source`` into a Cloud-Optimized GeoTIFF."""
    rasterio = import_optional("rasterio", "cog=True")
    from rasterio.shutil import copy

    codec = (encoding.compression or "none").upper()
    options: dict[str, str] = {
        "COMPRESS": codec,
        "NUM_THREADS": str(available_cpus()),
        "BLOCKSIZE": str(COG_TILE),
        "OVERVIEW_RESAMPLING": encoding.overview_resampling.upper(),
        "BIGTIFF": "IF_SAFER",
    }
    if codec in ("ZSTD", "DEFLATE", "LZW"):
        options["PREDICTOR"] = "YES"
    if encoding.level is not None:
        options["QUALITY" if codec == "JPEG" else "LEVEL"] = str(encoding.level)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        copy(str(source), str(dest), driver="COG", **options)
