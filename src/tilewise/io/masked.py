"""numpy masked arrays: masked pixels reach ``func`` as NaN, and the result is masked again.

NaN is how the geospatial stack spells "no data" in floats (xarray-spatial,
rioxarray's ``masked=True``), and how most numpy and scipy functions carry
it: a 3x3 mean of a masked pixel's neighbourhood is NaN. So a float
masked image is read as its data with NaN in every masked pixel (filled
once, at the start), and tilewise never sees the mask again until the end:
the halo beyond the image's edge, padded from those pixels, holds the same
NaN as an image that had NaN there.

The result is masked where the image was (a pixel masked in any channel
masks every value of that pixel, unless the result has the image's shape)
and, for a float or complex result, wherever it is NaN: where ``func``
spread the NaN. Its data is ``func``'s results as they are. Outputs:

- none (a new array): a ``numpy.ma.MaskedArray``;
- ``out=`` a masked array: its data gets the results, its mask the result's;
- ``out=`` a plain numpy array: NaN where the image was masked, so it must
  be able to hold NaN (a float or complex array; others are refused);
- a zarr array or a file: the results as they are, with no mask (no format
  tilewise writes holds one): NaN where ``func`` propagated it.

An integer (or bool) masked image has no NaN to stand for its masked
pixels: it is refused before any tile runs, with the ways to pass it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tilewise.errors import ArgumentError
from tilewise.io.array import ArraySource
from tilewise.io.base import Source


def is_masked(value: Any) -> bool:
    return isinstance(value, np.ma.MaskedArray)


class MaskedSource(ArraySource):
    """A float masked array, read as its data with NaN in the masked pixels."""

    layout = "in-memory masked array, NaN where masked"

    def __init__(self, image: np.ma.MaskedArray) -> None:
        if not np.issubdtype(image.dtype, np.inexact):
            raise ArgumentError(_no_nan_message(image.dtype))
        mask = np.ma.getmask(image)
        # Filled once: the executors then place and read it as any numpy image.
        # Nothing masked: the data itself, not a copy.
        super().__init__(np.ma.filled(image, np.nan))
        #: A copy, as the filled data is: the caller's mask may change during the run.
        self.mask: np.ndarray | None = None if mask is np.ma.nomask else mask.copy()


def _no_nan_message(dtype: np.dtype) -> str:
    wide = np.result_type(dtype, np.float32).name
    return (
        f"image: a masked array of dtype {dtype}, which has no NaN for its masked pixels "
        f"to reach func as; pass image.astype({wide!r}) for a masked result (masked pixels "
        f"reach func as NaN), image.astype({wide!r}).filled(np.nan) for a plain one, or "
        "image.filled(value) with a value func knows to skip"
    )


def check_out(source: Source, out: np.ndarray) -> None:
    """Refuse a plain numpy ``out=`` that cannot hold NaN at a masked image's masked pixels."""
    if not isinstance(source, MaskedSource) or is_masked(out):
        return
    if not np.issubdtype(out.dtype, np.inexact):
        raise ArgumentError(
            f"out: a {out.dtype} array, which cannot hold NaN where the masked image is "
            "masked; pass out= a masked array to keep the mask (e.g. "
            f"np.ma.masked_all(shape, {out.dtype.name!r})), or a float array"
        )


def with_mask(source: Source, result: Any, *, made: bool, tiled: int = 2) -> Any:
    """A masked image's result with the mask (see the module docstring); others as they are.

    ``made``: ``result`` is the new array map_tiles made, not the caller's ``out=``.
    """
    if not isinstance(source, MaskedSource) or not isinstance(result, np.ndarray):
        return result  # a plain image, or a zarr array given as out=
    masked = _spread(source.mask, result.shape, tiled)
    if isinstance(result, np.ma.MaskedArray):  # out= a masked array, its data written
        result.mask = _result_mask(masked, result.data)
    elif made:
        return np.ma.MaskedArray(result, mask=_result_mask(masked, result))
    elif masked is not None:  # out= a plain array, which check_out found can hold NaN
        np.copyto(result, np.nan, where=masked)
    return result


def _result_mask(masked: np.ndarray | None, data: np.ndarray) -> np.ndarray:
    """The image's mask over the result, and wherever a float or complex result is NaN."""
    mask = np.zeros(data.shape, bool) if masked is None else masked.copy()
    if np.issubdtype(data.dtype, np.inexact):
        mask |= np.isnan(data)
    return mask


def _spread(mask: np.ndarray | None, shape: tuple[int, ...], tiled: int) -> np.ndarray | None:
    """The image's mask over a result of ``shape``: element by element when the shapes agree,
    else a pixel (of the ``tiled`` axes) masked in any channel masks every value of that
    pixel (read-only)."""
    if mask is None or mask.shape == shape:
        return mask
    pixels = mask.reshape(*mask.shape[:tiled], -1).any(axis=-1)
    return np.broadcast_to(pixels.reshape(pixels.shape + (1,) * (len(shape) - tiled)), shape)
