"""Grid and Tile: the tiles partition the image; halos are requested or clipped at its edge."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilewise import Grid, Halo, Tile

sizes = st.integers(1, 60)
shapes = st.tuples(sizes, sizes)
tile_sizes = st.tuples(st.integers(1, 70), st.integers(1, 70))
halo_sizes = st.tuples(st.integers(0, 80), st.integers(0, 80))


@settings(max_examples=200)
@given(shape=shapes, tile=tile_sizes, halo=halo_sizes, clip=st.booleans())
def test_tiles_partition_the_image(
    shape: tuple[int, int], tile: tuple[int, int], halo: tuple[int, int], clip: bool
) -> None:
    grid = Grid(shape=shape, tile=tile, halo=halo, clip_halo=clip)
    covered = np.zeros(shape, np.int32)
    for t in grid:
        covered[t.y, t.x] += 1
    assert (covered == 1).all()

    tiles = list(grid)
    assert len(tiles) == len(grid) == grid.n_rows * grid.n_cols
    assert grid.n_rows == -(-shape[0] // tile[0])  # ceil: the last row may be partial
    assert grid.n_cols == -(-shape[1] // tile[1])
    # Row-major order, and tile_at agrees with iteration.
    assert [t.index for t in tiles] == [
        (r, c) for r in range(grid.n_rows) for c in range(grid.n_cols)
    ]
    assert all(grid.tile_at(t.index) == t for t in tiles)


@settings(max_examples=200)
@given(shape=shapes, tile=tile_sizes)
def test_only_the_last_row_and_column_are_smaller(
    shape: tuple[int, int], tile: tuple[int, int]
) -> None:
    grid = Grid(shape=shape, tile=tile)
    for t in grid:
        row, col = t.index
        rows, cols = t.core_shape
        assert t.y.step is None
        assert t.x.step is None
        assert rows == (tile[0] if row < grid.n_rows - 1 else shape[0] - row * tile[0])
        assert cols == (tile[1] if col < grid.n_cols - 1 else shape[1] - col * tile[1])
        assert 0 < rows <= tile[0]
        assert 0 < cols <= tile[1]


@settings(max_examples=200)
@given(shape=shapes, tile=tile_sizes, halo=halo_sizes)
def test_halo_is_as_requested_without_clipping(
    shape: tuple[int, int], tile: tuple[int, int], halo: tuple[int, int]
) -> None:
    for t in Grid(shape=shape, tile=tile, halo=halo):
        assert t.halo == Halo(top=halo[0], bottom=halo[0], left=halo[1], right=halo[1])
        assert t.block_shape == (t.core_shape[0] + 2 * halo[0], t.core_shape[1] + 2 * halo[1])


@settings(max_examples=200)
@given(shape=shapes, tile=tile_sizes, halo=halo_sizes)
def test_clipped_halo_stops_at_the_image_edge(
    shape: tuple[int, int], tile: tuple[int, int], halo: tuple[int, int]
) -> None:
    grid = Grid(shape=shape, tile=tile, halo=halo, clip_halo=True)
    rows, cols = shape
    for t in grid:
        h = t.halo
        # The context that exists on each side, capped by the request.
        assert h.top == min(halo[0], t.y.start)
        assert h.bottom == min(halo[0], rows - t.y.stop)
        assert h.left == min(halo[1], t.x.start)
        assert h.right == min(halo[1], cols - t.x.stop)
        # So the block is a window of the image.
        assert t.y.start - h.top >= 0
        assert t.y.stop + h.bottom <= rows
        assert t.x.start - h.left >= 0
        assert t.x.stop + h.right <= cols
        assert t.block_shape == (
            t.core_shape[0] + h.top + h.bottom,
            t.core_shape[1] + h.left + h.right,
        )


def test_clipping_only_touches_edge_tiles() -> None:
    grid = Grid(shape=(30, 40), tile=(10, 10), halo=(3, 4), clip_halo=True)
    assert grid.tile_at((1, 1)).halo == Halo(3, 3, 4, 4)
    assert grid.tile_at((0, 0)).halo == Halo(0, 3, 0, 4)
    assert grid.tile_at((2, 3)).halo == Halo(3, 0, 4, 0)


def test_tile_larger_than_image_is_one_tile() -> None:
    grid = Grid(shape=(5, 7), tile=(1000, 8), halo=(2, 2))
    assert len(grid) == 1
    only = grid.tile_at((0, 0))
    assert (only.y, only.x) == (slice(0, 5), slice(0, 7))
    assert only.core_shape == (5, 7)


@pytest.mark.parametrize("index", [(-1, 0), (0, -1), (3, 0), (0, 2), (5, 5)])
def test_tile_at_outside_the_grid_raises(index: tuple[int, int]) -> None:
    grid = Grid(shape=(5, 7), tile=(2, 4))
    with pytest.raises(IndexError, match=r"outside a 3x2 grid"):
        grid.tile_at(index)


def test_describe_names_index_and_slices() -> None:
    t = Grid(shape=(2048, 4000), tile=(512, 512)).tile_at((3, 7))
    assert t.describe() == "tile (3, 7) rows 1536:2048, cols 3584:4000"


def test_values_are_frozen_and_pickle() -> None:
    grid = Grid(shape=(5, 7), tile=(2, 4), halo=(1, 3), clip_halo=True)
    t = grid.tile_at((1, 1))
    for value in (grid, t):
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.halo = (0, 0)  # type: ignore[misc]
        assert pickle.loads(pickle.dumps(value)) == value
    # Tile holds slices, hashable only from Python 3.12: not asserted for it.
    assert hash(grid) == hash(pickle.loads(pickle.dumps(grid)))
    assert t == Tile(index=(1, 1), y=slice(2, 4), x=slice(4, 7), halo=Halo(1, 1, 3, 0))
