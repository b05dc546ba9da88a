"""TIFF stacks: multi-page TIFFs, ImageJ hyperstacks and OME-TIFF, read plane-window by window.

A stack is a series of planes (pages) with axes beyond rows, columns and
samples: ``QYX`` for pages one after another, ``ZYX`` or ``TZCYX`` as its
ImageJ or OME metadata says. tifffile presents the series as a Zarr array
whose chunks are the pages' strips or tiles; a window decodes only the
pages, and the strips or tiles of each, it overlaps. The axes and physical
pixel sizes go with the source (:mod:`tilewise.io.axes`) to the output.

An OME-TIFF output (``.ome.tif``) is written from a ``.npy`` partial once
every tile is done, plane by plane in the input's order of axes, with
tifffile's OME-XML: its axes and physical sizes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tilewise._optional import import_optional
from tilewise.errors import ArgumentError
from tilewise.io._chunks import ChunkCache
from tilewise.io._files import OutputFile, Reopening, fsync_dir, fsync_file, temporary_path
from tilewise.io.axes import NO_AXES, Axes, ome_metadata, tiff_axes
from tilewise.io.npy import NpySink
from tilewise.io.reordered import inverse

#: Image axes a plain TIFF holds: rows and columns, with samples after or before.
IMAGE_AXES = ("YX", "YXS", "SYX")
#: Above this, an OME-TIFF output is a BigTIFF (classic TIFF offsets stop at 4 GiB).
BIGTIFF_BYTES = 2**32 - 2**25


def is_stack(axes: str) -> bool:
    """Whether tifffile's ``axes`` of a series are more than one image (a plane of samples)."""
    return axes not in IMAGE_AXES


def _tifffile(needed_for: str) -> Any:
    return import_optional("tifffile", needed_for)


class TiffStackSource(Reopening):
    """The first series of a TIFF stack, read window by window through tifffile's Zarr store."""

    _handles = ("_tif", "_cache")

    def __init__(self, path: Path) -> None:
        self.path = path
        with _tifffile("reading .tif files").TiffFile(path) as tif:
            series = tif.series[0]
            self.shape: tuple[int, ...] = tuple(series.shape)
            self.dtype: np.dtype = np.dtype(series.dtype).newbyteorder("=")
            #: The axes, as the file names them, and the physical size of a pixel.
            self.axes: Axes = tiff_axes(tif, series)
            page = series.keyframe
            kind = "OME-TIFF" if tif.is_ome else "ImageJ hyperstack" if tif.is_imagej else "TIFF"
            self.chunks: tuple[int, ...] = (
                *(1 for _ in self.shape[: -len(page.shape)]),
                *page.chunks,
            )
            self.layout = (
                f"{kind} stack, axes {series.axes}, {len(tif.pages)} pages, "
                f"{page.compression.name.lower()}, decoded per window"
            )
        self._tif: Any = None
        self._cache: ChunkCache | None = None

    def read(self, *window: slice) -> np.ndarray:
        cache = self._cache  # one read of the handle: another thread may close it
        if cache is None or len(cache.chunks) != len(window):
            tif = self._tif = self._tif or self._open()
            array = import_optional("zarr", "reading TIFF stacks").open_array(
                tif.series[0].aszarr(), mode="r"
            )
            cache = self._cache = ChunkCache(array, self.chunks[: len(window)])
        return cache.read(*window).astype(self.dtype, copy=False)

    def _open(self) -> Any:
        tif = _tifffile("reading .tif files").TiffFile(self.path)
        tif.filehandle.set_lock(True)  # threads decode its pages through one file handle
        return tif


class OmeTiffOutput(OutputFile):
    """An output ``.ome.tif``: tiles go to a ``.npy``, written as OME-TIFF planes at the end."""

    def __init__(self, path: Path, axes: Axes = NO_AXES, order: tuple[int, ...] | None = None):
        _tifffile("writing .ome.tif files")
        super().__init__(path)
        self.axes = axes  # of the image, in its own order
        self.order = order  # how the run took the image's dimensions, when it reordered them

    def create(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> NpySink:
        self._names(len(shape))  # refused now, not once every tile is done
        return NpySink.create(self.partial, shape, dtype)

    def reopen(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> NpySink:
        return NpySink.reopen(self.partial, shape, dtype)

    def publish(self) -> None:
        """Write the planes in the image's order of axes to a temporary file, then rename it."""
        result = np.load(self.partial, mmap_mode="r")
        axes = self._names(result.ndim)
        planes = result if self.order is None else np.transpose(result, inverse(self.order))
        temporary = temporary_path(self.path)
        _tifffile("writing .ome.tif files").imwrite(
            temporary,
            (np.ascontiguousarray(planes[index]) for index in np.ndindex(planes.shape[:-2])),
            shape=planes.shape,
            dtype=planes.dtype,
            ome=True,
            photometric="minisblack",
            metadata=ome_metadata(axes),
            bigtiff=planes.nbytes >= BIGTIFF_BYTES,
        )
        del result, planes  # Windows cannot remove a file this process maps
        fsync_file(temporary)
        os.replace(temporary, self.path)
        fsync_dir(self.path.parent)
        self.partial.unlink()

    def _names(self, ndim: int) -> Axes:
        """The result's axes, in the image's order: the image's own, or rows and columns."""
        kept = self.axes.of_result(ndim)
        if kept.names is not None:
            return kept
        if ndim == 2:
            return Axes(("y", "x"))
        raise ArgumentError(
            f"out={str(self.path)!r}: an OME-TIFF names every axis, but the result has "
            f"{ndim} dimensions and the image's axes ({self._shown()}) do not match them; "
            "write it to .npy or .zarr"
        )

    def _shown(self) -> str:
        return "unnamed" if self.axes.names is None else "".join(self.axes.names)
