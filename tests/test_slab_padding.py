"""A volume's slabs gathered with their padding by numba: equal to read_block's, slab after slab."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tilewise import Grid
from tilewise._slab_padding import SlabPadder
from tilewise.boundary import read_block

MODES = ("reflect", "mirror", "nearest", "wrap", "constant")
LAYOUTS = ("C", "F", "strided")


def volume_of(shape: tuple[int, ...], dtype: str, layout: str) -> np.ndarray:
    values = np.random.default_rng(sum(shape)).integers(0, 200, shape).astype(dtype)
    if layout == "F":
        return np.asfortranarray(values)
    if layout == "strided":  # every other plane, row and column of a larger volume
        larger = np.zeros(tuple(2 * n for n in shape), dtype)
        larger[tuple(slice(None, None, 2) for _ in shape)] = values
        return larger[tuple(slice(None, None, 2) for _ in shape)]
    return values


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 7), st.integers(1, 7)),
    channels=st.sampled_from([(), (2,)]),
    planes=st.integers(1, 10),
    reach=st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 9)),
    boundary=st.tuples(*(st.sampled_from(MODES),) * 3),
    dtype=st.sampled_from(["uint8", "float32", "bool"]),
    layout=st.sampled_from(LAYOUTS),
)
def test_each_slab_equals_read_block(
    shape: tuple[int, int, int],
    channels: tuple[int, ...],
    planes: int,
    reach: tuple[int, int, int],
    boundary: tuple[str, str, str],
    dtype: str,
    layout: str,
) -> None:
    volume = volume_of((*shape, *channels), dtype, layout)
    cval = 3.7
    padder = SlabPadder(volume, reach, boundary, cval)
    grid = Grid(shape=shape, tile=(planes, *shape[1:]), halo=reach)
    # In order, so that the buffer of each slab is the last one's, the last slab the smallest.
    for tile in grid:
        block = padder.pad(tile.slices[0])
        expected = read_block(lambda *w: volume[w], shape, tile, boundary, cval)
        assert block.flags.c_contiguous
        assert block.dtype == volume.dtype
        assert block.shape == expected.shape
        assert np.array_equal(block, expected)
