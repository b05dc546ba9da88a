"""Halo padding at the image border, with ``scipy.ndimage``'s mode semantics.

Only the block (a tile plus its halo) is ever materialised: each position of
the padded block is mapped to the image pixel it repeats, and just those
pixels are read. Halos larger than the image repeat exactly as scipy does.

=========  ==========================  ============================
mode       scipy.ndimage               numpy.pad equivalent
=========  ==========================  ============================
reflect    ``d c b a | a b c d | d c``  ``symmetric``
mirror     ``d c b | a b c d | c b a``  ``reflect``
nearest    ``a a a | a b c d | d d d``  ``edge``
wrap       ``b c d | a b c d | a b c``  ``wrap``
constant   ``k k k | a b c d | k k k``  ``constant``
=========  ==========================  ============================

Examples
--------
>>> source_indices(-3, 7, 4, "reflect")
array([2, 1, 0, 0, 1, 2, 3, 3, 2, 1])
>>> source_indices(-3, 7, 4, "mirror")
array([3, 2, 1, 0, 1, 2, 3, 2, 1, 0])
>>> source_indices(-2, 6, 4, "constant")
array([-1, -1,  0,  1,  2,  3, -1, -1])
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tilewise.grid import Tile

BOUNDARIES: tuple[str, ...] = ("reflect", "mirror", "nearest", "wrap", "constant", "none")

#: Reads the image window of one slice per tiled axis (``[rows, cols]`` for an
#: image), with any further dimensions whole.
WindowReader = Callable[..., np.ndarray]


def source_indices(start: int, stop: int, n: int, mode: str) -> np.ndarray:
    """The image index repeated at each position ``start..stop-1`` of an axis of length ``n``.

    Positions outside ``[0, n)`` are mapped by ``mode``; with ``"constant"``
    they map to -1, meaning "fill with cval".
    """
    i = np.arange(start, stop)
    if mode == "reflect":
        i = i % (2 * n)
        return np.where(i >= n, 2 * n - 1 - i, i)
    if mode == "mirror":
        if n == 1:
            return np.zeros_like(i)
        period = 2 * n - 2
        i = i % period
        return np.where(i >= n, period - i, i)
    if mode == "nearest":
        return np.clip(i, 0, n - 1)
    if mode == "wrap":
        return i % n
    if mode == "constant":
        return np.where((i >= 0) & (i < n), i, -1)
    raise ValueError(f"no index mapping for boundary {mode!r}")


def modes(boundary: str | tuple[str, ...], ndim: int) -> tuple[str, ...]:
    """``boundary`` as one mode per tiled axis.

    >>> modes("wrap", 3)
    ('wrap', 'wrap', 'wrap')
    >>> modes(("wrap", "reflect"), 2)
    ('wrap', 'reflect')
    """
    return (boundary,) * ndim if isinstance(boundary, str) else tuple(boundary)


def read_block(
    read: WindowReader,
    image_shape: tuple[int, ...],
    tile: Tile,
    boundary: str | tuple[str, ...],
    cval: float = 0.0,
) -> np.ndarray:
    """The tile plus its halo, padded per ``boundary`` (one mode, or one per axis); read-only.

    Interior blocks are returned as a single window read (a view for in-memory
    images). The block is read-only so a function that writes into it fails
    loudly instead of corrupting its neighbours' halos.
    """
    spans = []
    inside = True
    for s, (before, after), n in zip(tile.slices, tile.margins, image_shape, strict=True):
        start, stop = s.start - before, s.stop + after
        inside = inside and start >= 0 and stop <= n
        spans.append((start, stop))
    if inside:
        block = read(*(slice(start, stop) for start, stop in spans))
    else:
        block = _read_padded(read, image_shape, spans, modes(boundary, tile.ndim), cval)
    block.flags.writeable = False
    return block


#: Which image pixels a region of the block repeats, along one axis: a run of
#: them (a window of the image), or the index of each (-1: cval).
Pick = slice | np.ndarray


def _read_padded(
    read: WindowReader,
    image_shape: tuple[int, ...],
    spans: list[tuple[int, int]],
    boundary: tuple[str, ...],
    cval: float,
) -> np.ndarray:
    """Copy the part of the block inside the image in one read; gather only the margins.

    Gathering the whole block by fancy indexing made an edge tile several
    times dearer than an interior one (a row strip is an edge tile all along).
    The margins are taken axis by axis: along the first, the slabs before and
    after the inside, whole across the other axes; along each next one, the
    slabs within the inside of the axes before it. Two axes make the four
    margins of an image: top and bottom rows whole, then left and right.
    """
    # Block positions [first, last) of each axis lie inside the image; never
    # empty, since the core tile does.
    inside = [
        (max(0, -start), min(stop, n) - start)
        for (start, stop), n in zip(spans, image_shape, strict=True)
    ]
    windows = [
        slice(start + a, start + b) for (start, _), (a, b) in zip(spans, inside, strict=True)
    ]
    core = read(*windows)
    shape = (*(stop - start for start, stop in spans), *core.shape[len(spans) :])
    block = np.empty(shape, core.dtype)
    block[tuple(slice(a, b) for a, b in inside)] = core
    # Along each axis, the image pixels its whole span repeats: the window
    # when the block is inside the image along it, else each pixel's index.
    wholes: list[Pick] = [
        window
        if (a, b) == (0, stop - start)
        # "none" clips the halo to the image: its positions are inside, mapped as themselves.
        else source_indices(start, stop, n, "nearest" if mode == "none" else mode)
        for window, (a, b), (start, stop), n, mode in zip(
            windows, inside, spans, image_shape, boundary, strict=True
        )
    ]
    for axis, (first, last) in enumerate(inside):
        whole = wholes[axis]
        if isinstance(whole, slice):
            continue  # no margin along this axis
        for side in (slice(0, first), slice(last, None)):
            margin = whole[side]
            if margin.size == 0:
                continue
            picks = [*windows[:axis], margin, *wholes[axis + 1 :]]
            region = (*(slice(a, b) for a, b in inside[:axis]), side)
            if any(isinstance(p, np.ndarray) and (p < 0).all() for p in picks):
                block[region] = cval
            else:
                block[region] = _gather(read, picks, cval)
    return block


def _gather(read: WindowReader, picks: list[Pick], cval: float) -> np.ndarray:
    """The image at the product of ``picks``, from the few windows they repeat.

    At least one index of each axis picked by index must be inside the image.
    """
    runs: list[list[tuple[int, int]]] = []
    takes: list[tuple[np.ndarray, np.ndarray] | None] = []  # per axis picked by index
    for pick in picks:
        if isinstance(pick, slice):
            runs.append([(pick.start, pick.stop)])
            takes.append(None)
        else:
            fill = pick < 0
            unique, position = np.unique(np.where(fill, pick.max(), pick), return_inverse=True)
            runs.append(_runs(unique))
            takes.append((position, fill))
    block = _read_runs(read, runs)
    for axis, take in enumerate(takes):
        if take is not None:
            position, fill = take
            block = np.take(block, position, axis=axis)  # a copy: written below, never shared
            if fill.any():
                block[(slice(None),) * axis + (fill,)] = cval
    return block


def _read_runs(
    read: WindowReader, runs: list[list[tuple[int, int]]], chosen: tuple[slice, ...] = ()
) -> np.ndarray:
    """The windows of every combination of ``runs`` (one list per axis), side by side."""
    axis = len(chosen)
    if axis == len(runs):
        return read(*chosen)
    parts = [_read_runs(read, runs, (*chosen, slice(*run))) for run in runs[axis]]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=axis)


def _runs(sorted_unique: np.ndarray) -> list[tuple[int, int]]:
    """Split sorted unique indices into contiguous (start, stop) runs."""
    breaks = np.flatnonzero(np.diff(sorted_unique) != 1) + 1
    return [(int(run[0]), int(run[-1]) + 1) for run in np.split(sorted_unique, breaks)]
