"""Tiling geometry: which core tiles cover an image, and how much halo each has.

Pure values and functions: no I/O, no padding, no execution.

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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple


class Halo(NamedTuple):
    """Context pixels on each side of a core tile."""

    top: int
    bottom: int
    left: int
    right: int


@dataclass(frozen=True, slots=True)
class Tile:
    """One core tile of the grid, in image coordinates.

    ``index`` is (row, col) in the tile grid; ``y`` and ``x`` are the slices of
    the core region; ``halo`` is the context actually present in the block
    ``func`` receives (smaller than requested only with ``boundary="none"``).
    """

    index: tuple[int, int]
    y: slice
    x: slice
    halo: Halo

    @property
    def core_shape(self) -> tuple[int, int]:
        return (self.y.stop - self.y.start, self.x.stop - self.x.start)

    @property
    def block_shape(self) -> tuple[int, int]:
        rows, cols = self.core_shape
        h = self.halo
        return (rows + h.top + h.bottom, cols + h.left + h.right)

    def describe(self) -> str:
        """``tile (3, 7) rows 1536:2048, cols 3584:4000``: how errors name a tile."""
        return (
            f"tile {self.index} rows {self.y.start}:{self.y.stop}, "
            f"cols {self.x.start}:{self.x.stop}"
        )


@dataclass(frozen=True, slots=True)
class Grid:
    """The core tiles covering an image of ``shape`` (rows, cols).

    Tiles are ``tile`` (rows, cols) in size; those on the bottom and right edges
    are smaller when the size does not divide the image. ``halo`` (rows, cols)
    is the context requested on each side; with ``clip_halo`` the halo of edge
    tiles stops at the image border instead of being padded.
    """

    shape: tuple[int, int]
    tile: tuple[int, int]
    halo: tuple[int, int] = (0, 0)
    clip_halo: bool = False

    @property
    def n_rows(self) -> int:
        return -(-self.shape[0] // self.tile[0])

    @property
    def n_cols(self) -> int:
        return -(-self.shape[1] // self.tile[1])

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def __iter__(self) -> Iterator[Tile]:
        """Tiles in row-major order."""
        for row in range(self.n_rows):
            for col in range(self.n_cols):
                yield self.tile_at((row, col))

    def tile_at(self, index: tuple[int, int]) -> Tile:
        row, col = index
        if not (0 <= row < self.n_rows and 0 <= col < self.n_cols):
            raise IndexError(f"tile index {index} outside a {self.n_rows}x{self.n_cols} grid")
        y0, x0 = row * self.tile[0], col * self.tile[1]
        y1, x1 = min(y0 + self.tile[0], self.shape[0]), min(x0 + self.tile[1], self.shape[1])
        hy, hx = self.halo
        if self.clip_halo:
            halo = Halo(
                min(hy, y0), min(hy, self.shape[0] - y1), min(hx, x0), min(hx, self.shape[1] - x1)
            )
        else:
            halo = Halo(hy, hy, hx, hx)
        return Tile(index=(row, col), y=slice(y0, y1), x=slice(x0, x1), halo=halo)
