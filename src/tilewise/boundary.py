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

#: Reads the image window ``[rows, cols]`` (plus any trailing dimensions).
WindowReader = Callable[[slice, slice], np.ndarray]


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


def read_block(
    read: WindowReader,
    image_shape: tuple[int, int],
    tile: Tile,
    boundary: str,
    cval: float = 0.0,
) -> np.ndarray:
    """The tile plus its halo, padded per ``boundary``; read-only.

    Interior blocks are returned as a single window read (a view for in-memory
    images). The block is read-only so a function that writes into it fails
    loudly instead of corrupting its neighbours' halos.
    """
    h = tile.halo
    y0, y1 = tile.y.start - h.top, tile.y.stop + h.bottom
    x0, x1 = tile.x.start - h.left, tile.x.stop + h.right
    rows, cols = image_shape
    if y0 >= 0 and x0 >= 0 and y1 <= rows and x1 <= cols:
        block = read(slice(y0, y1), slice(x0, x1))
    else:
        block = _read_padded(read, image_shape, (y0, y1), (x0, x1), boundary, cval)
    block.flags.writeable = False
    return block


def _read_padded(
    read: WindowReader,
    image_shape: tuple[int, int],
    rows: tuple[int, int],
    cols: tuple[int, int],
    boundary: str,
    cval: float,
) -> np.ndarray:
    """Copy the part of the block inside the image in one read; gather only the margins.

    Gathering the whole block by fancy indexing made an edge tile several
    times dearer than an interior one (a row strip is an edge tile all along).
    """
    (y0, y1), (x0, x1) = rows, cols
    # Block positions [top, bottom) x [left, right) lie inside the image; never
    # empty, since the core tile does.
    top, bottom = max(0, -y0), min(y1, image_shape[0]) - y0
    left, right = max(0, -x0), min(x1, image_shape[1]) - x0
    inside = read(slice(y0 + top, y0 + bottom), slice(x0 + left, x0 + right))
    block = np.empty((y1 - y0, x1 - x0, *inside.shape[2:]), inside.dtype)
    block[top:bottom, left:right] = inside
    row_idx = source_indices(y0, y1, image_shape[0], boundary)
    col_idx = source_indices(x0, x1, image_shape[1], boundary)
    margins = [
        (slice(0, top), slice(None)),
        (slice(bottom, None), slice(None)),
        (slice(top, bottom), slice(0, left)),
        (slice(top, bottom), slice(right, None)),
    ]
    for at_rows, at_cols in margins:
        margin_rows, margin_cols = row_idx[at_rows], col_idx[at_cols]
        if margin_rows.size == 0 or margin_cols.size == 0:
            continue
        if (margin_rows < 0).all() or (margin_cols < 0).all():
            block[at_rows, at_cols] = cval
        else:
            block[at_rows, at_cols] = _gather(read, margin_rows, margin_cols, cval)
    return block


def _gather(
    read: WindowReader, row_idx: np.ndarray, col_idx: np.ndarray, cval: float
) -> np.ndarray:
    """The image at ``row_idx`` x ``col_idx`` (-1: cval), from the few windows they repeat.

    At least one row and one column index must be inside the image.
    """
    row_fill, col_fill = row_idx < 0, col_idx < 0
    unique_rows, row_pos = np.unique(
        np.where(row_fill, row_idx.max(), row_idx), return_inverse=True
    )
    unique_cols, col_pos = np.unique(
        np.where(col_fill, col_idx.max(), col_idx), return_inverse=True
    )
    windows = np.concatenate(
        [
            np.concatenate([read(slice(*r), slice(*c)) for c in _runs(unique_cols)], axis=1)
            for r in _runs(unique_rows)
        ],
        axis=0,
    )
    block = windows[np.ix_(row_pos, col_pos)]
    if row_fill.any() or col_fill.any():
        block[row_fill] = cval
        block[:, col_fill] = cval
    return block


def _runs(sorted_unique: np.ndarray) -> list[tuple[int, int]]:
    """Split sorted unique indices into contiguous (start, stop) runs."""
    breaks = np.flatnonzero(np.diff(sorted_unique) != 1) + 1
    return [(int(run[0]), int(run[-1]) + 1) for run in np.split(sorted_unique, breaks)]
