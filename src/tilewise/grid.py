"""Tiling geometry: which core tiles cover an image, and how much halo each has.

Pure values and functions: no I/O, no padding, no execution.

A grid tiles the first k axes of an array (k >= 2); further axes reach
``func`` whole. The last two tiled axes are the rows and columns, ``y``
and ``x`` of a :class:`Tile`; a volume's or a stack's tiled axes before
them (z, or t and z) are its ``leading`` axes.

Examples
--------
>>> grid = Grid(shape=(5, 7), tile=(2, 4), halo=(1, 1))
>>> grid.n_rows, grid.n_cols, len(grid)
(3, 2, 6)
>>> t = grid.tile_at((2, 1))
>>> t.y, t.x
(slice(4, 5, None), slice(4, 7, None))
>>> t.halo
Halo(top=1, bottom=1, left=1, right=1)
>>> Grid(shape=(5, 7), tile=(2, 4), halo=(1, 1), clip_halo=True).tile_at((2, 1)).halo
Halo(top=1, bottom=0, left=1, right=0)

A volume tiled along all three axes:

>>> volume = Grid(shape=(10, 5, 7), tile=(4, 2, 4), halo=(2, 1, 1), clip_halo=True)
>>> volume.counts, len(volume)
((3, 3, 2), 18)
>>> t = volume.tile_at((0, 2, 1))
>>> t.slices
(slice(0, 4, None), slice(4, 5, None), slice(4, 7, None))
>>> t.margins
((0, 2), (1, 0), (1, 0))
>>> t.describe()
'tile (0, 2, 1) axis 0 0:4, rows 4:5, cols 4:7'
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Halo(NamedTuple):
    """Context pixels on each side of a core tile, in its rows and columns."""

    top: int
    bottom: int
    left: int
    right: int


@dataclass(frozen=True, slots=True, repr=False)
class Tile:
    """One core tile of the grid, in image coordinates.

    ``index`` is the tile's position in the grid, (row, col) for an image;
    ``y`` and ``x`` are the slices of the core region's rows and columns;
    ``halo`` is the context actually present around them in the block
    ``func`` receives (smaller than requested only with ``boundary="none"``).
    A volume's tiled axes before the rows have their slices in ``leading``
    and their (before, after) context in ``leading_halo``.
    """

    index: tuple[int, ...]
    y: slice
    x: slice
    halo: Halo
    leading: tuple[slice, ...] = ()
    leading_halo: tuple[tuple[int, int], ...] = ()
    # Derived once, when made: every stage of every tile reads them.
    #: The core region, one slice per tiled axis.
    slices: tuple[slice, ...] = field(init=False, compare=False)
    #: The halo per tiled axis as (before, after): ``numpy.pad``'s ``pad_width``.
    margins: tuple[tuple[int, int], ...] = field(init=False, compare=False)
    core_shape: tuple[int, ...] = field(init=False, compare=False)
    block_shape: tuple[int, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        y, x, h = self.y, self.x, self.halo
        rows, cols = y.stop - y.start, x.stop - x.start
        block = (rows + h.top + h.bottom, cols + h.left + h.right)
        if self.leading:
            leading = tuple(s.stop - s.start for s in self.leading)
            core = (*leading, rows, cols)
            block = (
                *(n + a + b for n, (a, b) in zip(leading, self.leading_halo, strict=False)),
                *block,
            )
        else:
            core = (rows, cols)
        setattr_ = object.__setattr__  # frozen: set once, here
        setattr_(self, "slices", (*self.leading, y, x))
        setattr_(self, "margins", (*self.leading_halo, (h.top, h.bottom), (h.left, h.right)))
        setattr_(self, "core_shape", core)
        setattr_(self, "block_shape", block)

    def __reduce__(self) -> tuple[type[Tile], tuple[Any, ...]]:
        """Pickled as what it is made of; what derives from it is derived again."""
        return (Tile, (self.index, self.y, self.x, self.halo, self.leading, self.leading_halo))

    @property
    def ndim(self) -> int:
        """The number of tiled axes."""
        return len(self.slices)

    @property
    def core_in_block(self) -> tuple[slice, ...]:
        """Where the core tile lies in its block: what trims the halo off."""
        return tuple(
            slice(before, before + n)
            for n, (before, _) in zip(self.core_shape, self.margins, strict=True)
        )

    def describe(self) -> str:
        """``tile (3, 7) rows 1536:2048, cols 3584:4000``: how errors name a tile."""
        spans = [f"axis {axis} {s.start}:{s.stop}" for axis, s in enumerate(self.leading)]
        spans += [f"rows {self.y.start}:{self.y.stop}", f"cols {self.x.start}:{self.x.stop}"]
        return f"tile {self.index} {', '.join(spans)}"

    def __repr__(self) -> str:
        fields = f"index={self.index}, y={self.y!r}, x={self.x!r}, halo={self.halo!r}"
        if self.leading:
            fields += f", leading={self.leading!r}, leading_halo={self.leading_halo!r}"
        return f"Tile({fields})"


@dataclass(frozen=True, slots=True)
class Grid:
    """The core tiles covering the first ``len(tile)`` axes of an array of ``shape``.

    Tiles are ``tile`` in size; those at the far end of each axis are
    smaller when the size does not divide the array. ``halo`` is the context
    requested on each side, per tiled axis; with ``clip_halo`` (one flag, or
    one per tiled axis) the halo of edge tiles stops at the array's border
    instead of being padded.
    """

    shape: tuple[int, ...]
    tile: tuple[int, ...]
    halo: tuple[int, ...] = (0, 0)
    clip_halo: bool | tuple[bool, ...] = False

    #: Tiles along each tiled axis.
    counts: tuple[int, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        k = len(self.tile)
        if k < 2 or len(self.halo) != k or len(self.shape) != k:
            raise ValueError(
                f"a grid needs 2 or more tiled axes, each with a size, a tile and a halo: "
                f"shape {self.shape}, tile {self.tile}, halo {self.halo}"
            )
        counts = tuple(-(-n // t) for n, t in zip(self.shape, self.tile, strict=True))
        object.__setattr__(self, "counts", counts)

    def __reduce__(self) -> tuple[type[Grid], tuple[Any, ...]]:
        return (Grid, (self.shape, self.tile, self.halo, self.clip_halo))

    @property
    def n_rows(self) -> int:
        return self.counts[-2]

    @property
    def n_cols(self) -> int:
        return self.counts[-1]

    def __len__(self) -> int:
        return math.prod(self.counts)

    def __iter__(self) -> Iterator[Tile]:
        """Tiles in row-major (C) order of their indices."""
        spans = [self._spans(axis) for axis in range(len(self.counts))]
        for index in itertools.product(*map(range, self.counts)):
            yield self._tile(index, spans)

    def tile_at(self, index: tuple[int, ...]) -> Tile:
        counts = self.counts
        if len(index) != len(counts) or any(
            not 0 <= i < n for i, n in zip(index, counts, strict=False)
        ):
            raise IndexError(f"tile index {index} outside a {'x'.join(map(str, counts))} grid")
        return self._tile(tuple(index), [self._spans(axis) for axis in range(len(counts))])

    def _spans(self, axis: int) -> list[tuple[slice, tuple[int, int]]]:
        """Along ``axis``, each tile's core slice and its (before, after) halo."""
        n, size, halo = self.shape[axis], self.tile[axis], self.halo[axis]
        clip = self.clip_halo
        clipped = clip[axis] if isinstance(clip, tuple) else clip
        spans = []
        for start in range(0, n, size):
            stop = min(start + size, n)
            margins = (min(halo, start), min(halo, n - stop)) if clipped else (halo, halo)
            spans.append((slice(start, stop), margins))
        return spans

    @staticmethod
    def _tile(index: tuple[int, ...], spans: list[list[tuple[slice, tuple[int, int]]]]) -> Tile:
        *leading, (y, (top, bottom)), (x, (left, right)) = (
            axis[i] for axis, i in zip(spans, index, strict=True)
        )
        return Tile(
            index=index,
            y=y,
            x=x,
            halo=Halo(top, bottom, left, right),
            leading=tuple(span for span, _ in leading),
            leading_halo=tuple(margins for _, margins in leading),
        )
