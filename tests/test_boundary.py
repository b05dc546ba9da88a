"""Halo padding: scipy.ndimage's modes, checked against numpy.pad, reading only the block."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilewise import Grid
from tilewise.boundary import read_block, source_indices

#: numpy.pad's names for scipy.ndimage's modes (numpy's "reflect" is scipy's "mirror").
NUMPY_PAD_MODE = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap"}
MODES = (*NUMPY_PAD_MODE, "constant")


def pad_indices(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """numpy.pad's view of the same question: which index does each padded position repeat."""
    if mode == "constant":
        return np.pad(np.arange(n), (before, after), mode="constant", constant_values=-1)
    # numpy.pad repeats the pattern itself when a pad is longer than the axis.
    return np.pad(np.arange(n), (before, after), mode=NUMPY_PAD_MODE[mode])


@settings(max_examples=300)
@given(
    n=st.integers(1, 12),
    before=st.integers(0, 60),
    after=st.integers(0, 60),
    mode=st.sampled_from(MODES),
    data=st.data(),
)
def test_source_indices_match_numpy_pad(
    n: int, before: int, after: int, mode: str, data: st.DataObject
) -> None:
    padded = pad_indices(n, before, after, mode)
    # Any window of the padded axis, including ones wholly inside the padding.
    start = data.draw(st.integers(-before, n + after), label="start")
    stop = data.draw(st.integers(start, n + after), label="stop")
    got = source_indices(start, stop, n, mode)
    assert got.dtype.kind == "i"
    assert np.array_equal(got, padded[start + before : stop + before])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # Positions -7..7 of an axis of 3 pixels: past one repeat on both sides.
        ("reflect", [0, 0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1]),
        ("mirror", [1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1]),
        ("nearest", [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 2]),
        ("wrap", [2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1]),
        ("constant", [-1] * 7 + [0, 1, 2] + [-1] * 5),
    ],
)
def test_source_indices_repeat_past_the_axis(mode: str, expected: list[int]) -> None:
    assert source_indices(-7, 8, 3, mode).tolist() == expected


def test_mirror_of_a_single_pixel_repeats_it() -> None:
    assert source_indices(-4, 5, 1, "mirror").tolist() == [0] * 9


@pytest.mark.parametrize("mode", ["none", "grid-wrap", "symmetric"])
def test_unknown_mode_raises(mode: str) -> None:
    with pytest.raises(ValueError, match=repr(mode)):
        source_indices(-1, 3, 2, mode)


class RecordingReader:
    """Reads windows of an array and remembers them, to see what padding touched."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.windows: list[tuple[slice, slice]] = []

    def __call__(self, rows: slice, cols: slice) -> np.ndarray:
        self.windows.append((rows, cols))
        return self.image[rows, cols]

    def pixels_read(self) -> int:
        return sum(
            len(range(*r.indices(10**9))) * len(range(*c.indices(10**9))) for r, c in self.windows
        )


@settings(max_examples=150)
@given(
    shape=st.tuples(st.integers(1, 15), st.integers(1, 15), st.sampled_from([(), (3,)])),
    tile=st.tuples(st.integers(1, 17), st.integers(1, 17)),
    halo=st.tuples(st.integers(0, 40), st.integers(0, 40)),
    mode=st.sampled_from(MODES),
    dtype=st.sampled_from(["uint8", "int32", "float32", "bool"]),
)
def test_read_block_is_a_window_of_numpy_pad(
    shape: tuple[int, int, tuple[int, ...]],
    tile: tuple[int, int],
    halo: tuple[int, int],
    mode: str,
    dtype: str,
) -> None:
    rows, cols = shape[:2]
    image = (
        np.random.default_rng(rows * 100 + cols)
        .integers(0, 2, (rows, cols, *shape[2]))
        .astype(dtype)
    )
    cval = 1
    widths = [(halo[0], halo[0]), (halo[1], halo[1])] + [(0, 0)] * len(shape[2])
    if mode == "constant":
        padded = np.pad(image, widths, mode="constant", constant_values=cval)
    else:
        padded = np.pad(image, widths, mode=NUMPY_PAD_MODE[mode])
    for t in Grid(shape=(rows, cols), tile=tile, halo=halo):
        reader = RecordingReader(image)
        block = read_block(reader, (rows, cols), t, mode, cval)
        window = padded[t.y.start : t.y.stop + 2 * halo[0], t.x.start : t.x.stop + 2 * halo[1]]
        assert block.dtype == image.dtype
        assert np.array_equal(block, window)
        assert not block.flags.writeable
        # Padding reads only pixels the block repeats, each window inside the image,
        # and no more pixels than the block holds: never the whole image.
        repeated_rows = set(source_indices(t.y.start - halo[0], t.y.stop + halo[0], rows, mode))
        repeated_cols = set(source_indices(t.x.start - halo[1], t.x.stop + halo[1], cols, mode))
        for r, c in reader.windows:
            assert set(range(r.start, r.stop)) <= repeated_rows
            assert set(range(c.start, c.stop)) <= repeated_cols
        assert reader.pixels_read() <= t.block_shape[0] * t.block_shape[1]


def test_interior_block_is_a_view_of_the_image() -> None:
    image = np.arange(100.0).reshape(10, 10)
    t = Grid(shape=(10, 10), tile=(4, 4), halo=(2, 2)).tile_at((1, 1))
    reader = RecordingReader(image)
    block = read_block(reader, (10, 10), t, "reflect")
    assert reader.windows == [(slice(2, 10), slice(2, 10))]
    assert np.shares_memory(block, image)
    assert not block.flags.writeable
    assert image.flags.writeable  # the image itself stays as it was


def test_edge_block_reads_only_the_pixels_it_repeats() -> None:
    # A 1000-column image: the corner block of a 2x2 tile with 3 pixels of halo
    # repeats columns 0..4 only, and must not touch the other 995.
    image = np.arange(4000.0).reshape(4, 1000)
    t = Grid(shape=(4, 1000), tile=(2, 2), halo=(3, 3)).tile_at((0, 0))
    reader = RecordingReader(image)
    block = read_block(reader, (4, 1000), t, "wrap")
    assert block.shape == (8, 8)
    assert reader.pixels_read() <= block.size
    for _, c in reader.windows:
        assert c.stop <= 5 or c.start >= 997
    assert np.array_equal(block, np.pad(image, 3, mode="wrap")[:8, :8])


@pytest.mark.parametrize("halo", [(3, 12), (0, 0), (40, 40)])
def test_clipped_blocks_are_image_windows(halo: tuple[int, int]) -> None:
    image = np.arange(23 * 37).reshape(23, 37)
    for t in Grid(shape=(23, 37), tile=(7, 10), halo=halo, clip_halo=True):
        block = read_block(RecordingReader(image), (23, 37), t, "none")
        h = t.halo
        expected = image[
            t.y.start - h.top : t.y.stop + h.bottom, t.x.start - h.left : t.x.stop + h.right
        ]
        assert np.array_equal(block, expected)
