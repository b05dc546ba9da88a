"""Check that a pixelwise kernel reads no further from its pixel than its ``radius``.

A compiled loop reads its block without bounds checks, so a kernel that
reads beyond its declared radius reads the wrong pixels, or memory outside
the block. Once per kernel and image layout, before it is compiled, the
kernel is called as plain Python at one pixel of a small block that checks
every index along the tiled axes against the radius. The check comes before
numpy's wraparound of negative indices and before the block's end, so reads
at offsets computed from ``y`` and ``x`` are caught on both sides, open
slices (``z[:, x]``) included.

Not caught: indices computed from pixel values, reads through numpy
functions of the whole block (``z.sum()``), and reads inside functions numba
compiles that the kernel calls with ``z``. A kernel that fails as plain
Python on this block (one written for numba alone) is not checked.
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from tilewise.errors import ArgumentError

#: What messages call a kernel's block and indices when its signature does not say.
IMAGE_NAMES = ("z", "y", "x")
VOLUME_NAMES = ("v", "z", "y", "x")


class Reach(NamedTuple):
    """Where one axis of a watched block may be read: within ``radius`` of ``centre``."""

    axis: int
    centre: int
    radius: int

    def check(self, index: int, *, open_end: bool = False) -> None:
        if abs(index - self.centre) > self.radius:
            raise BeyondRadiusError(self.axis, index - self.centre, open_end=open_end)

    def sliced(self, start: int) -> Reach:
        return self._replace(centre=self.centre - start)


class BeyondRadiusError(Exception):
    """A read ``offset`` pixels from the probed pixel along tiled ``axis``.

    ``open_end``: by a slice left open at that end, which reads to the block's
    edge, however large the radius.
    """

    def __init__(self, axis: int, offset: int, *, open_end: bool = False) -> None:
        super().__init__(axis, offset)
        self.axis = axis
        self.offset = offset
        self.open_end = open_end


class WatchedBlock(np.ndarray):
    """An array whose indexing checks each index of its tiled axes against a :class:`Reach`.

    Views made by basic indexing stay watched, rebased to their own indices;
    anything else derived from it (arithmetic, fancy indexing) is not.
    """

    reaches: tuple[Reach | None, ...]

    def __array_finalize__(self, obj: Any) -> None:
        self.reaches = ()

    def __getitem__(self, key: Any) -> Any:
        reaches = self.reaches + (None,) * (self.ndim - len(self.reaches))
        kept, watched = _check(key if isinstance(key, tuple) else (key,), reaches, self.shape)
        result = np.ndarray.__getitem__(self.view(np.ndarray), key)
        if not watched or not isinstance(result, np.ndarray) or result.ndim != len(kept):
            return result
        view = result.view(WatchedBlock)
        view.reaches = kept
        return view


def check_reach(
    func: Callable[..., Any],
    name: str,
    radius: tuple[int, ...],
    dtype: np.dtype,
    channels: int | None,
) -> None:
    """Raise ArgumentError if ``func(z, y, x)`` reads ``z`` beyond ``radius`` of ``(y, x)``.

    ``radius`` is one per tiled axis: two for an image kernel, three for a
    volume's ``f(v, z, y, x)``. ``channels`` is the block's trailing axis
    (None for a block of the tiled axes only), passed whole. The probed pixel
    has one pixel more than the radius on each side, so that reading from the
    block's first row or column is seen too.
    """
    shape = tuple(2 * r + 3 for r in radius) + (() if channels is None else (channels,))
    centre = tuple(r + 1 for r in radius)
    block = np.ones(shape, dtype).view(WatchedBlock)
    block.reaches = tuple(Reach(axis, r + 1, r) for axis, r in enumerate(radius))
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            func(block, *centre)
    except BeyondRadiusError as beyond:
        names = _names(func, len(radius))
        raise ArgumentError(_message(name, radius, beyond, names)) from None
    except Exception:
        return


def _names(func: Callable[..., Any], tiled: int) -> tuple[str, ...]:
    """The names of the kernel's block and indices, as its signature gives them."""
    default = IMAGE_NAMES if tiled == 2 else VOLUME_NAMES
    try:
        names = tuple(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return default
    return names if len(names) == tiled + 1 else default


def _message(
    name: str, radius: tuple[int, ...], beyond: BeyondRadiusError, names: tuple[str, ...]
) -> str:
    block, indices = names[0], names[1:]
    index = indices[beyond.axis]
    shown = radius[0] if len(set(radius)) == 1 else radius
    axis = f"axis {beyond.axis} ({index})"
    if beyond.open_end:
        example = ", ".join(f"{i} - 1 : {i} + 2" if i == index else i for i in indices)
        return (
            f"pixelwise kernel {name!r} reads {block} with a slice open on {axis}, which "
            f"reaches the block's edge, beyond its radius={shown}: bound both ends by "
            f"{index} (such as {block}[{example}])"
        )
    where = f"{index}{beyond.offset:+d}"
    needed = [max(r, abs(beyond.offset)) if a == beyond.axis else r for a, r in enumerate(radius)]
    declare = abs(beyond.offset) if len(set(radius)) == 1 else tuple(needed)
    return (
        f"pixelwise kernel {name!r} reads {block} at {where} on {axis}, beyond its "
        f"radius={shown}: declare radius={declare} (or more) in "
        "@tilewise.pixelwise, or read closer"
    )


def _check(
    key: tuple[Any, ...], reaches: tuple[Reach | None, ...], shape: tuple[int, ...]
) -> tuple[tuple[Reach | None, ...], bool]:
    """Check each index of ``key``; the reaches of the view it makes, and whether it is one."""
    consumed = sum(1 for k in key if k is not None and k is not Ellipsis)
    kept: list[Reach | None] = []
    watched = True
    axis = 0
    for index in key:
        reach = reaches[axis] if axis < len(reaches) else None
        if index is None:
            kept.append(None)
        elif index is Ellipsis:
            skipped = len(shape) - consumed
            kept.extend(reaches[axis : axis + skipped])
            axis += skipped
        elif isinstance(index, numbers.Integral):
            if reach is not None:
                reach.check(int(index))
            axis += 1
        elif isinstance(index, slice):
            kept.append(_check_slice(index, reach, shape[axis]))
            axis += 1
        else:  # an index array: checked if of integers; what it makes is a copy
            values = np.asarray(index)
            if values.dtype.kind in "iu" and values.size and reach is not None:
                reach.check(int(values.min()))
                reach.check(int(values.max()))
            axis += values.ndim if values.dtype.kind == "b" else 1
            watched = False
    kept.extend(reaches[axis:])
    return tuple(kept), watched


def _check_slice(index: slice, reach: Reach | None, size: int) -> Reach | None:
    """Check the first and last index a slice reads; the reach of the axis it leaves."""
    step = 1 if index.step is None else index.step
    if reach is None or step < 0:
        return None
    start = 0 if index.start is None else index.start
    stop = size if index.stop is None else index.stop
    if start < 0 or stop < 0:  # counted from the block's end
        reach.check(min(start, stop))
    if stop > start:
        reach.check(start, open_end=index.start is None)
        reach.check(start + (stop - start - 1) // step * step, open_end=index.stop is None)
    return reach.sliced(start)
