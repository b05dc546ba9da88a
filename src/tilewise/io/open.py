"""Turn what the user passed as ``image`` and ``out`` into a Source, a Sink or a FileOutput.

The format of a file comes from its suffix (a folder is a Zarr store).
Files are only inspected here (shape, dtype, layout); whichever process
reads or writes a window opens its own handle.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from tilewise._optional import import_optional
from tilewise.errors import ArgumentError, ArgumentTypeError
from tilewise.io._files import OutputFile, check_exists, check_writable_parent
from tilewise.io.array import ArraySink, ArraySource
from tilewise.io.axes import NO_AXES, Axes
from tilewise.io.base import FileOutput, Sink, Source
from tilewise.io.dask_array import DaskArraySource, is_dask_array
from tilewise.io.geo import NO_GEOREFERENCE, Georeference
from tilewise.io.image import ImageOutput, ImageSource
from tilewise.io.masked import MaskedSource, check_out, is_masked
from tilewise.io.nodata import NodataRule, NodataSource
from tilewise.io.npy import NpyOutput, NpySource
from tilewise.io.ome_zarr_output import OmeZarrOutput
from tilewise.io.reordered import inverse
from tilewise.io.tiff import TiffOutput, TiffSource
from tilewise.io.tiff_encode import AS_WRITTEN, Encoding
from tilewise.io.tiff_stack import OmeTiffOutput, TiffStackSource, is_stack
from tilewise.io.urls import FILE_SUFFIXES, StoreUrl, is_url, redact, store_url
from tilewise.io.zarr import (
    ZarrOutput,
    ZarrSink,
    ZarrSource,
    ZarrUrlOutput,
    check_tile_aligned,
    is_zarr_array,
)


def tiff_source(path: Path) -> Source:
    """A TIFF's first series: one image (rows, columns, samples), or a stack of planes."""
    tifffile = import_optional("tifffile", "reading .tif files")
    try:
        with tifffile.TiffFile(path) as tif:
            axes = tif.series[0].axes
    except (tifffile.TiffFileError, ValueError, IndexError) as exc:
        raise ArgumentError(f"image={str(path)!r}: not a readable TIFF ({exc})") from exc
    return TiffStackSource(path) if is_stack(axes) else TiffSource(path)


#: Outputs written as OME-TIFF or OME-Zarr, whatever their number of axes.
OME_TIFF_SUFFIXES = (".ome.tif", ".ome.tiff")
OME_ZARR_SUFFIX = ".ome.zarr"
#: Readable suffixes and what opens each.
SOURCES: dict[str, Callable[[Path], Source]] = {
    ".npy": NpySource,
    ".tif": tiff_source,
    ".tiff": tiff_source,
    ".png": ImageSource,
    ".jpg": ImageSource,
    ".jpeg": ImageSource,
}
#: Writable suffixes and the output class of each.
OUTPUTS: dict[str, type[OutputFile]] = {
    ".npy": NpyOutput,
    ".tif": TiffOutput,
    ".tiff": TiffOutput,
    ".zarr": ZarrOutput,
    ".png": ImageOutput,
    ".jpg": ImageOutput,
    ".jpeg": ImageOutput,
}


def is_path(value: Any) -> TypeGuard[str | os.PathLike[str]]:
    return isinstance(value, (str, os.PathLike))


def open_source(image: Any, storage_options: Mapping[str, Any] | None = None) -> Source:
    """A checked source for a numpy (or masked) array, a zarr or dask array, an image's path or URL.

    A URL (``s3://``, ``https://``...) is opened with ``storage_options``:
    a ``.tif`` by range requests, anything else as a Zarr store.

    Examples
    --------
    >>> import numpy as np
    >>> open_source(np.zeros((4, 5, 3), np.uint8)).shape
    (4, 5, 3)
    >>> open_source("scan.bmp")
    Traceback (most recent call last):
    ...
    tilewise.errors.MissingInputError: image='scan.bmp': no such file or folder
    """
    if is_url(image):
        source = _source_from_url(store_url(image, storage_options, "image"))
        what = f"image={redact(image)!r}"
    elif is_path(image):
        source = _source_from_path(Path(image))
        what = f"image={str(image)!r}"
    elif is_zarr_array(image):
        source, what = ZarrSource(image), "image"
    elif is_dask_array(image):
        source, what = DaskArraySource(image), "image"
    elif is_masked(image):  # before ndarray, which it is: its mask must not be dropped
        source, what = MaskedSource(image), "image"
    elif isinstance(image, np.ndarray):
        source, what = ArraySource(image), "image"
    else:
        raise ArgumentTypeError(
            f"image={short_repr(image)}: must be a numpy array of shape (H, W) or (H, W, C), "
            "a zarr or dask array, or the path of a .npy, .tif, .zarr, .png or .jpg file"
        )
    if len(source.shape) < 2 or 0 in source.shape:
        raise ArgumentError(
            f"{what} with shape {source.shape}: must be a non-empty array of 2 or more "
            "dimensions: (H, W), (H, W, C), or a volume such as (Z, Y, X)"
        )
    if source.dtype.hasobject:
        raise ArgumentError(f"{what} with dtype {source.dtype}: object arrays are not supported")
    return source


def _source_from_path(path: Path) -> Source:
    check_exists(path, "image")
    if path.is_dir():
        if not any((path / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup")):
            raise ArgumentError(f"image={str(path)!r}: a folder, but not a Zarr array store")
        return ZarrSource(path=path)
    source_type = SOURCES.get(path.suffix.lower())
    if source_type is None:
        raise ArgumentError(
            f"image={str(path)!r}: unknown image format {path.suffix!r}; tilewise reads "
            f"{', '.join(SOURCES)} files and .zarr stores"
        )
    return source_type(path)


def _source_from_url(url: StoreUrl) -> Source:
    if url.suffix in FILE_SUFFIXES:
        return TiffSource(url)
    if url.suffix in SOURCES:
        raise ArgumentError(
            f"image={str(url)!r}: tilewise reads URLs of .tif files and Zarr stores, not "
            f"{url.suffix} files; copy it to a local file first"
        )
    return ZarrSource(path=url)


def open_output(
    out: str | os.PathLike[str],
    encoding: Encoding = AS_WRITTEN,
    georeference: Georeference = NO_GEOREFERENCE,
    nodata: NodataRule | None = None,
    dtype: np.dtype | None = None,
    storage_options: Mapping[str, Any] | None = None,
    axes: Axes = NO_AXES,
    order: tuple[int, ...] | None = None,
) -> FileOutput:
    """The output file ``out`` names, its format from the suffix; nothing is written yet.

    A URL is written as a Zarr store, in place (see :class:`ZarrUrlOutput`).
    A ``.tif`` output is stored per ``encoding``, carries ``georeference``
    and declares the nodata value ``nodata`` gives for its dtype (checked
    now if ``dtype`` is known); a ``.zarr`` output carries both as
    attributes and fill value, and names its dimensions after ``axes`` (the
    image's axes as the run takes them) when the result has them all; an
    ``.ome.tif`` output holds its planes in the image's own order of axes
    (the run took them in ``order``), with their names and physical sizes;
    other formats refuse an encoding.

    Examples
    --------
    >>> open_output("result.h5")
    Traceback (most recent call last):
    ...
    tilewise.errors.ArgumentError: out='result.h5': unknown output format '.h5'; tilewise writes .npy, .tif, .tiff, .zarr, .png, .jpg, .jpeg
    """  # noqa: E501
    if is_url(out):
        url = store_url(out, storage_options, "out")
        if url.suffix != ".zarr":
            raise ArgumentError(
                f"out={str(url)!r}: tilewise writes Zarr stores (.zarr) to URLs; write other "
                "formats to a local path"
            )
        encoding.refuse(out)
        return ZarrUrlOutput(url, georeference, nodata, dtype, axes)
    path = Path(out)
    output_type = OUTPUTS.get(path.suffix.lower())
    if output_type is None:
        raise ArgumentError(
            f"out={str(out)!r}: unknown output format {path.suffix!r}; "
            f"tilewise writes {', '.join(OUTPUTS)}"
        )
    check_writable_parent(path, "out")
    if path.name.lower().endswith((*OME_TIFF_SUFFIXES, OME_ZARR_SUFFIX)):
        encoding.refuse(out)
        image_axes = axes if order is None else axes.reordered(inverse(order))
        if path.name.lower().endswith(OME_ZARR_SUFFIX):
            return OmeZarrOutput(path, image_axes, order)
        return OmeTiffOutput(path, image_axes, order)
    if output_type is TiffOutput:
        return TiffOutput(path, encoding, georeference, nodata, dtype)
    encoding.refuse(out)
    if output_type is ZarrOutput:
        return ZarrOutput(path, georeference, nodata, dtype, axes)
    return output_type(path)


def check_output_axes(output: FileOutput | None, tile: tuple[int, ...]) -> None:
    """Refuse a volume's tiles for a file format that holds one 2-D image: before any work."""
    if len(tile) > 2 and isinstance(output, (TiffOutput, ImageOutput)):
        raise ArgumentError(
            f"out={str(output.path)!r}: a {output.path.suffix} file holds one image of rows "
            f"and columns, but tile={tile} tiles {len(tile)} axes; write the result to an "
            ".ome.tif, .npy or .zarr output"
        )


def axes_of(source: Source) -> Axes:
    """The names of a source's axes and its physical pixel sizes, when its file says them."""
    if isinstance(source, NodataSource):
        return axes_of(source.inner)
    if isinstance(source, (TiffStackSource, ZarrSource)):
        return source.axes
    return NO_AXES


def georeference_of(source: Source) -> Georeference:
    """Where a GeoTIFF input's pixels are, and its nodata value; nothing for other inputs."""
    return source.georeference if isinstance(source, TiffSource) else NO_GEOREFERENCE


def open_sink(out: Any, source: Source, tile: tuple[int, ...]) -> Sink:
    """A checked sink for an in-memory ``out``: a numpy array, or a zarr array."""
    if is_zarr_array(out):
        sink: Sink = ZarrSink(out)
        if out.read_only:
            raise ArgumentError("out: the zarr array is opened read-only")
        check_tile_aligned(out, tile)
    elif isinstance(out, np.ndarray):
        if not out.flags.writeable:
            raise ArgumentError("out: the array is read-only")
        if isinstance(source, ArraySource) and np.shares_memory(out, source.array):
            raise ArgumentError(
                "out: shares memory with image; writing a tile would change its neighbours' halos"
            )
        check_out(source, out)
        # A masked image's out= masked array gets the data here, its mask once the run is done.
        sink = ArraySink(np.ma.getdata(out) if isinstance(source, MaskedSource) else out)
    else:
        raise ArgumentTypeError(
            f"out={short_repr(out)}: must be None, a numpy or zarr array, or a file path"
        )
    k = len(tile)
    if len(sink.shape) < k or sink.shape[:k] != source.shape[:k]:
        axes = "first two dimensions" if k == 2 else f"first {k} dimensions (the tiled axes)"
        raise ArgumentError(
            f"out with shape {sink.shape}: its {axes} must be the image's {source.shape[:k]}"
        )
    return sink


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
