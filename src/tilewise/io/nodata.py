"""nodata: pixels that carry no value reach ``func`` as NaN, and leave as the output's nodata.

The convention is the geospatial stack's (xarray-spatial, rioxarray's
``masked=True``): in a block, a pixel equal to ``nodata`` is NaN. An integer
image with a nodata value is read as floats for that (``float32`` for 8- and
16-bit integers, ``float64`` for wider ones: the types that hold every value),
so ``func`` sees one convention whatever the file's dtype. NaN pixels of a
float image are nodata too. The halo beyond the image's edge is padded from
those NaN pixels, so padding never turns a nodata value into data.

In the output, a pixel is nodata where the image's was (in any band), and
wherever a float result is NaN; it holds ``out_nodata`` there, which the
file declares. By default ``out_nodata`` is the input's nodata value when
the output's dtype holds it, else NaN for a float output; an integer output
that cannot hold the input's value needs ``out_nodata=``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilewise.errors import ArgumentError, ArgumentTypeError
from tilewise.grid import Tile
from tilewise.io.array import ArraySource
from tilewise.io.base import Source

#: ``nodata=`` and ``out_nodata=``'s default: take the value from the input (or the rule above).
FROM_INPUT = "input"


def nodata_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a block of ``dtype`` is read as when it has nodata: one that holds NaN."""
    if np.issubdtype(dtype, np.inexact):
        return dtype
    return np.result_type(dtype, np.float32)


def holds(dtype: np.dtype, value: float) -> bool:
    """Whether ``value`` is a value of ``dtype`` exactly (NaN only in floats)."""
    if np.issubdtype(dtype, np.inexact):
        return math.isnan(value) or bool(np.asarray(value, dtype) == value)
    if not float(value).is_integer():
        return False
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    return info is not None and info.min <= value <= info.max


def check_nodata(name: str, value: Any, dtype: np.dtype | None = None) -> float | None:
    """``nodata=`` or ``out_nodata=`` as a float, refused if ``dtype`` cannot hold it."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ArgumentTypeError(f"{name}={value!r}: must be a number, None or {FROM_INPUT!r}")
    number = float(value)
    if dtype is not None and not holds(dtype, number):
        raise ArgumentError(
            f"{name}={value!r}: a {dtype} {'image' if name == 'nodata' else 'output'} "
            "cannot hold it; give a value of that type"
        )
    return number


def out_nodata_for(dtype: np.dtype, out_nodata: float | None, nodata: float | None) -> float | None:
    """The output's nodata value for an output of ``dtype`` (see the module docstring)."""
    if out_nodata is not None:
        if not holds(dtype, out_nodata):
            raise ArgumentError(
                f"out_nodata={out_nodata!r}: the {dtype} output cannot hold it; give a value "
                "of that type"
            )
        return out_nodata
    if nodata is not None and holds(dtype, nodata):
        return nodata
    if np.issubdtype(dtype, np.inexact):
        return math.nan
    if nodata is None:
        return None
    raise ArgumentError(
        f"out_nodata: the {dtype} output cannot hold the input's nodata value {nodata!r}, "
        "nor NaN; pass out_nodata= a value it holds, or dtype= a float type"
    )


@dataclass(frozen=True, slots=True)
class NodataRule:
    """The input's nodata value and ``out_nodata=``: what the output's nodata value is."""

    nodata: float | None  # the input's, as the run reads it
    out_nodata: float | None  # given by the user, else None

    def for_output(self, dtype: np.dtype) -> float | None:
        return out_nodata_for(dtype, self.out_nodata, self.nodata)


def nodata_rule(
    nodata: Any, out_nodata: Any, dtype: np.dtype, file_nodata: float | None
) -> NodataRule | None:
    """The checked ``nodata=`` and ``out_nodata=`` of an image of ``dtype``; None: no nodata.

    ``file_nodata`` is the image file's own value, which ``nodata="input"`` takes.
    """
    if isinstance(nodata, str) and nodata == FROM_INPUT:
        value = file_nodata if file_nodata is not None and holds(dtype, file_nodata) else None
    else:
        value = check_nodata("nodata", nodata, dtype)
    if isinstance(out_nodata, str):
        raise ArgumentTypeError(f"out_nodata={out_nodata!r}: must be a number or None")
    out_value = check_nodata("out_nodata", out_nodata)
    if value is None and out_value is None:
        return None
    return NodataRule(value, out_value)


class NodataSource:
    """A source whose nodata pixels read as NaN, in floats (see the module docstring)."""

    def __init__(self, inner: Source, nodata: float) -> None:
        self.inner = inner
        self.nodata = nodata
        self.dtype: np.dtype = nodata_dtype(inner.dtype)
        self.layout = f"{inner.layout}; nodata {nodata:g} read as NaN"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.inner.shape

    @property
    def path(self) -> Any:
        return self.inner.path

    @property
    def chunks(self) -> tuple[int, ...] | None:
        return self.inner.chunks

    @property
    def process_local(self) -> bool:
        return self.inner.process_local

    def read(self, *window: slice) -> np.ndarray:
        return as_nan(self.inner.read(*window), self.nodata)

    def close(self) -> None:
        self.inner.close()


def as_nan(window: np.ndarray, nodata: float) -> np.ndarray:
    """``window`` as floats, with NaN where it equals ``nodata``."""
    floats = window.astype(nodata_dtype(window.dtype), copy=True)
    if not math.isnan(nodata):
        floats[window == nodata] = np.nan
    return floats


def with_nodata(source: Source, nodata: float | None) -> Source:
    """``source`` read under the nodata convention; an in-memory image converted once."""
    if nodata is None or (math.isnan(nodata) and np.issubdtype(source.dtype, np.inexact)):
        return source  # NaN pixels are NaN already
    if source.process_local:  # executors place it as an array: convert it here, once
        assert isinstance(source, ArraySource)
        return ArraySource(as_nan(source.array, nodata))
    return NodataSource(source, nodata)


@dataclass(frozen=True)
class MarkNodata:
    """``func``, its result holding the output's nodata value wherever the pixel has none.

    Called as ``mark(block, tile)``; ``func`` as the user asked (``pass_tile``).
    ``out_nodata`` is resolved for the dtype the output will have: ``dtype``,
    when given, else the result's own.
    """

    func: Callable[..., Any]
    pass_tile: bool
    rule: NodataRule
    dtype: np.dtype | None

    def __call__(self, block: np.ndarray, tile: Tile) -> np.ndarray:
        result = np.asarray(self.func(block, tile) if self.pass_tile else self.func(block))
        core, image = _cores(result, block, tile)
        k = tile.ndim
        if core.shape[:k] != tile.core_shape:
            return result  # a shape the check stage refuses, naming it
        dtype = self.dtype if self.dtype is not None else core.dtype
        value = self.rule.for_output(dtype)
        if value is None:
            return core
        missing = _expand(np.isnan(image).reshape(*image.shape[:k], -1).any(axis=-1), core.ndim)
        if np.issubdtype(core.dtype, np.inexact):
            missing = missing | np.isnan(core)
        if not missing.any():
            return core
        if not holds(core.dtype, value):  # dtype= converts later: a result that holds the value
            core = core.astype(np.result_type(core.dtype, np.float64))
        elif not core.flags.writeable:
            core = core.copy()  # the block itself, or a view of it
        core[np.broadcast_to(missing, core.shape)] = value
        return core


def _cores(result: np.ndarray, block: np.ndarray, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """The core tile of ``result`` (block- or core-sized) and of the image's ``block``."""
    core = tile.core_in_block
    image = block[core]
    k = tile.ndim
    if result.ndim >= k and result.shape[:k] == tile.block_shape != tile.core_shape:
        return result[core], image
    return result, image  # core-sized, or a mismatch the check stage names


def _expand(mask: np.ndarray, ndim: int) -> np.ndarray:
    return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))
