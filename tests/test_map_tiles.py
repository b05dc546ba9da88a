"""map_tiles against whole-image oracles: the central promise, boundary="none", outputs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

import tilewise
from tilewise import Grid, Halo, Tile, TileError

MODES = ("reflect", "mirror", "nearest", "wrap", "constant")
FILTERS = ("gaussian", "uniform", "median", "sobel")
DTYPES = ("uint8", "uint16", "int32", "float32", "float64", "bool")
TILES: tuple[int | str, ...] = (1, 7, 64, 1000, "larger")
HALOS = range(21)
LAYOUTS = ("C", "F", "strided")
CHANNELS = (None, 3)

#: Image (rows, cols) per tile size: small, and (except for one-tile cases)
#: not a multiple of the tile, so the bottom and right tiles are partial.
#: The 5x8 image for tile 1 keeps the tile count low, and halos up to 20
#: exceed it, so padding must repeat the image as scipy does.
SHAPE_FOR_TILE: dict[int | str, tuple[int, int]] = {
    1: (5, 8),
    7: (23, 37),
    64: (67, 23),
    1000: (23, 37),
    "larger": (23, 37),
}


def cval_for(dtype: np.dtype) -> int:
    """A non-zero fill that every dtype stores exactly (a bool image keeps 1 as True)."""
    return 1 if dtype.kind == "b" else 3


# --- the filters, each with a reach of exactly `radius` pixels ------------------------


def spread(image: np.ndarray, per_axis: tuple[Any, Any], none: Any) -> tuple[Any, ...]:
    """Per-axis filter parameters, with `none` (no filtering) along a channel axis."""
    return per_axis if image.ndim == 2 else (*per_axis, none)


def gaussian(image: np.ndarray, radius: int, mode: str, cval: float) -> np.ndarray:
    sigma = 0.5 + radius / 4
    truncate = radius / sigma
    assert int(truncate * sigma + 0.5) == radius  # scipy's kernel radius
    return ndi.gaussian_filter(
        image, spread(image, (sigma, sigma), 0), mode=mode, cval=cval, truncate=truncate
    )


def uniform(image: np.ndarray, radius: int, mode: str, cval: float) -> np.ndarray:
    size = 2 * radius + 1
    return ndi.uniform_filter(image, spread(image, (size, size), 1), mode=mode, cval=cval)


def reach_footprint(rows: int, cols: int) -> np.ndarray:
    """The centre, its 4 neighbours and the 4 pixels exactly (rows, cols) away.

    It reaches as far as a full (2r+1)-square footprint but holds at most 9
    pixels, which keeps the median cheap at radius 20.
    """
    footprint = np.zeros((2 * rows + 1, 2 * cols + 1), bool)
    steps = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
    for dy, dx in [*steps, (-rows, 0), (rows, 0), (0, -cols), (0, cols)]:
        if abs(dy) <= rows and abs(dx) <= cols:
            footprint[rows + dy, cols + dx] = True
    return footprint


def median(image: np.ndarray, radius: int, mode: str, cval: float) -> np.ndarray:
    footprint = reach_footprint(radius, radius)
    if image.ndim == 3:
        footprint = footprint[..., None]
    return ndi.median_filter(image, footprint=footprint, mode=mode, cval=cval)


def sobel(image: np.ndarray, radius: int, mode: str, cval: float) -> np.ndarray:
    """Derivative across columns, smoothing down rows; each channel on its own."""
    assert radius == 1
    if image.ndim == 2:
        return ndi.sobel(image, axis=1, mode=mode, cval=cval)
    channels = [ndi.sobel(image[..., c], axis=1, mode=mode, cval=cval) for c in range(3)]
    return np.stack(channels, axis=-1)


FilterFunc = Callable[[np.ndarray, int, str, float], np.ndarray]
FILTER_FUNCS: dict[str, FilterFunc] = {
    "gaussian": gaussian,
    "uniform": uniform,
    "median": median,
    "sobel": sobel,
}


def filter_radius(name: str, halo: int) -> int:
    """The reach of the filter run with `halo`: sobel always reaches 1 (more halo is fine)."""
    return 1 if name == "sobel" else halo


def tolerance(name: str, dtype: np.dtype, image: np.ndarray) -> float:
    """The largest difference allowed between a tiled and a whole-image result.

    0 (array_equal) wherever each output pixel is computed by the same
    arithmetic on the same values: gaussian and sobel (one 1-D correlation per
    axis, each pixel's sum taken in the same order), median (selection, no
    arithmetic), and uniform on integers and bools (their running sums are
    exact in doubles). uniform_filter on floats keeps a running sum along each
    line, started where the line starts, so a block's sums round differently
    from the whole image's: for float64 that is a few ulps per step along a
    line of at most ~100 pixels; for float32 the sums are kept in doubles and
    then rounded once to float32, which can land one float32 ulp apart.
    """
    if name != "uniform" or dtype.kind != "f":
        return 0.0
    scale = max(1.0, float(np.abs(image).max()))
    return (1e-12 if dtype == np.float64 else 2 * float(np.finfo(np.float32).eps)) * scale


def assert_close(got: np.ndarray, expected: np.ndarray, atol: float, context: str) -> None:
    assert got.shape == expected.shape, context
    assert got.dtype == expected.dtype, context
    if atol == 0:
        assert np.array_equal(got, expected), f"{context}: differs at {mismatches(got, expected)}"
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol, err_msg=context)


def mismatches(got: np.ndarray, expected: np.ndarray) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in idx) for idx in np.argwhere(got != expected)[:5]]


# --- the matrix -----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    tile: int | str
    halo: int
    channels: int | None
    layout: str


CASES_PER_ITEM = 4


def cases(item: int) -> Iterator[Case]:
    """Cases k = 4*item ... 4*item+3 of one cycle through every combination.

    Case k takes halo k % 21, tile TILES[k % 5], channels CHANNELS[k % 2] and
    layout LAYOUTS[k % 3]. The 24 consecutive cases of one (filter, mode) hold
    every halo 0..20, every tile and every (channels, layout) pair; and since
    any 105 consecutive k hold every (tile, halo) pair (21 and 5 are coprime),
    so do the 480 cases each backend runs, several times over.
    """
    for k in range(CASES_PER_ITEM * item, CASES_PER_ITEM * (item + 1)):
        yield Case(
            tile=TILES[k % len(TILES)],
            halo=HALOS[k % len(HALOS)],
            channels=CHANNELS[k % 2],
            layout=LAYOUTS[k % 3],
        )


def laid_out(image: np.ndarray, layout: str) -> np.ndarray:
    """The same values in C order, Fortran order, or as a non-contiguous view."""
    if layout == "C":
        return np.ascontiguousarray(image)
    if layout == "F":
        return np.asfortranarray(image)
    rows, cols = image.shape[:2]
    # Every other row, every third column backwards (and every other channel).
    base = np.zeros((2 * rows, 3 * cols, *(2 * c for c in image.shape[2:])), image.dtype)
    view = base[::2, ::-3, ::2] if image.ndim == 3 else base[::2, ::-3]
    view[...] = image
    assert not view.flags.c_contiguous
    assert not view.flags.f_contiguous
    return view


#: numpy.pad's names for scipy.ndimage's modes.
NUMPY_PAD_MODE = {
    "reflect": "symmetric",
    "mirror": "reflect",
    "nearest": "edge",
    "wrap": "wrap",
    "constant": "constant",
}


def padded_oracle(
    func: FilterFunc, image: np.ndarray, radius: int, pad: int, mode: str, cval: float
) -> np.ndarray:
    """``func`` on the whole image padded once by numpy.pad, then trimmed: the README's promise.

    With pad >= radius the padding ``func`` adds itself is trimmed off, so
    this is the promise in its own words, with numpy's independent padding.
    """
    widths = [(pad, pad), (pad, pad)] + [(0, 0)] * (image.ndim - 2)
    extra = {"constant_values": cval} if mode == "constant" else {}
    whole = np.pad(image, widths, mode=NUMPY_PAD_MODE[mode], **extra)
    rows, cols = image.shape[:2]
    return func(whole, radius, mode, cval)[pad : pad + rows, pad : pad + cols]


def scipy_is_the_oracle(name: str, mode: str, radius: int, shape: tuple[int, ...]) -> bool:
    """Whether scipy's whole-image call is ``func`` on the image padded once.

    Two cases where it is not, and ``padded_oracle`` stands in:

    - constant mode with the separable filters (gaussian, uniform, sobel):
      scipy pads the input of *each* 1-D pass with cval, so its second pass
      sees cval where an image padded once holds the first pass's result over
      the padding. The two agree only away from the border. median is not
      separable: it pads once.
    - median (any footprint filter) in reflect mode reaching 4n or more
      pixels past an axis of length n: scipy 1.17 maps such offsets outside
      the array and reads whatever memory is there, e.g.
      ``generic_filter([10., 20, 30], lambda v: v[0], footprint=[1] + [0] * 24,
      mode="reflect")[0]`` is not 10.
    """
    if mode == "constant":
        return name == "median"
    return not (name == "median" and mode == "reflect" and radius >= 4 * min(shape[:2]))


def matrix_params() -> Iterator[Any]:
    for f, name in enumerate(FILTERS):
        for m, mode in enumerate(MODES):
            for d, dtype in enumerate(DTYPES):
                item = (f * len(MODES) + m) * len(DTYPES) + d
                yield pytest.param(name, mode, dtype, item, id=f"{name}-{mode}-{dtype}")


@pytest.mark.parametrize(("name", "mode", "dtype", "item"), list(matrix_params()))
def test_tiled_filter_equals_whole_image_filter(
    backend_options: dict[str, Any], make_image: Any, name: str, mode: str, dtype: str, item: int
) -> None:
    func = FILTER_FUNCS[name]
    np_dtype = np.dtype(dtype)
    cval = cval_for(np_dtype) if mode == "constant" else 0
    for case in cases(item):
        rows, cols = SHAPE_FOR_TILE[case.tile]
        shape = (rows, cols) if case.channels is None else (rows, cols, case.channels)
        image = laid_out(make_image(shape, np_dtype, seed=item), case.layout)
        tile = (rows + 1, cols + 3) if case.tile == "larger" else case.tile
        halo = max(case.halo, filter_radius(name, case.halo))
        radius = filter_radius(name, case.halo)
        context = f"{case} tile={tile} halo={halo} shape={shape}"

        got = tilewise.map_tiles(
            lambda block, r=radius: func(block, r, mode, cval),
            image,
            tile=tile,
            halo=halo,
            boundary=mode,
            cval=cval,
            **backend_options,
        )

        atol = tolerance(name, np_dtype, image)
        whole = func(image, radius, mode, cval)
        if scipy_is_the_oracle(name, mode, radius, shape):
            assert_close(got, whole, atol, context)
        else:
            oracle = padded_oracle(func, image, radius, halo, mode, cval)
            assert_close(got, oracle, atol, context)
            inner = (slice(radius, rows - radius), slice(radius, cols - radius))
            assert_close(got[inner], whole[inner], atol, f"interior of {context}")


@pytest.mark.parametrize("mode", MODES)
def test_halo_larger_than_image_repeats_as_scipy(
    backend_options: dict[str, Any], make_image: Any, mode: str
) -> None:
    image = make_image((3, 4), np.float64)
    for name, radius in [("gaussian", 11), ("uniform", 9), ("median", 13)]:
        func = FILTER_FUNCS[name]
        got = tilewise.map_tiles(
            lambda b, f=func, r=radius: f(b, r, mode, 2.5),
            image,
            tile=2,
            halo=radius,
            boundary=mode,
            cval=2.5,
            **backend_options,
        )
        if scipy_is_the_oracle(name, mode, radius, image.shape):
            expected = func(image, radius, mode, 2.5)
        else:
            expected = padded_oracle(func, image, radius, radius, mode, 2.5)
        assert_close(got, expected, tolerance(name, image.dtype, image), f"{name} r={radius}")


# --- property: any geometry ------------------------------------------------------------

sizes = st.integers(1, 30)
tiles = st.one_of(st.integers(1, 35), st.tuples(st.integers(1, 35), st.integers(1, 35)))
halos = st.one_of(st.integers(0, 12), st.tuples(st.integers(0, 12), st.integers(0, 12)))


def as_pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


@settings(max_examples=40)
@given(
    shape=st.tuples(sizes, sizes, st.sampled_from([(), (2,)])),
    tile=tiles,
    halo=halos,
    mode=st.sampled_from(MODES),
    name=st.sampled_from(["uniform", "median"]),
    seed=st.integers(0, 2**16),
)
def test_any_geometry_matches_scipy(
    backend_options: dict[str, Any],
    make_image: Any,
    shape: tuple[int, int, tuple[int, ...]],
    tile: int | tuple[int, int],
    halo: int | tuple[int, int],
    mode: str,
    name: str,
    seed: int,
) -> None:
    # Integer uniform and median filters are exact in every mode, constant
    # included: a running sum of integers is exact, and a constant line's
    # mean is exactly cval, which is what scipy's next pass pads with.
    image = make_image((shape[0], shape[1], *shape[2]), np.int32, seed=seed)
    hy, hx = as_pair(halo)
    extra = (1,) * (image.ndim - 2)
    if name == "uniform":

        def func(a: np.ndarray) -> np.ndarray:
            return ndi.uniform_filter(a, (2 * hy + 1, 2 * hx + 1, *extra), mode=mode, cval=7)
    else:
        footprint = reach_footprint(hy, hx).reshape((2 * hy + 1, 2 * hx + 1, *extra))

        def func(a: np.ndarray) -> np.ndarray:
            return ndi.median_filter(a, footprint=footprint, mode=mode, cval=7)

    got = tilewise.map_tiles(
        func, image, tile=tile, halo=halo, boundary=mode, cval=7, **backend_options
    )
    if name == "median" and not scipy_is_the_oracle(name, mode, max(hy, hx), image.shape):
        widths = [(hy, hy), (hx, hx)] + [(0, 0)] * (image.ndim - 2)
        padded = np.pad(image, widths, mode=NUMPY_PAD_MODE[mode])
        expected = func(padded)[hy : hy + shape[0], hx : hx + shape[1]]
    else:
        expected = func(image)
    assert np.array_equal(got, expected)


# --- boundary="none" -------------------------------------------------------------------


def report_tiles(
    expected_block: Callable[[Tile], np.ndarray],
) -> Callable[[np.ndarray, Tile], np.ndarray]:
    """A func that reports in each core pixel what it was given, through the result.

    Reporting through the result, not by side effects, holds on any backend.
    Channels: the tile's index (2), its y and x slices (4), its halo (4), and
    1 if the block is ``expected_block(tile)``.
    """

    def func(block: np.ndarray, tile: Tile) -> np.ndarray:
        right_block = block.shape[:2] == tile.block_shape and np.array_equal(
            block, expected_block(tile)
        )
        facts = [*tile.index, tile.y.start, tile.y.stop, tile.x.start, tile.x.stop, *tile.halo]
        return np.broadcast_to(np.array([*facts, right_block]), (*tile.core_shape, 11))

    return func


def expected_report(grid: Grid, halo_of: Callable[[Tile], Halo]) -> np.ndarray:
    report = np.zeros((*grid.shape, 11), int)
    for t in grid:
        facts = [*t.index, t.y.start, t.y.stop, t.x.start, t.x.stop, *halo_of(t), 1]
        report[t.y, t.x] = facts
    return report


def clipped_halo(grid: Grid, tile: Tile) -> Halo:
    """The context that exists around a core tile, computed from the image edges."""
    (rows, cols), (hy, hx) = grid.shape, grid.halo
    return Halo(
        top=tile.y.start - max(0, tile.y.start - hy),
        bottom=min(rows, tile.y.stop + hy) - tile.y.stop,
        left=tile.x.start - max(0, tile.x.start - hx),
        right=min(cols, tile.x.stop + hx) - tile.x.stop,
    )


def test_none_gives_edge_tiles_only_existing_context(
    backend_options: dict[str, Any], make_image: Any
) -> None:
    image = make_image((23, 37), np.float32)
    grid = Grid(shape=(23, 37), tile=(7, 10), halo=(3, 12))

    def existing_context(t: Tile) -> np.ndarray:
        h = clipped_halo(grid, t)
        rows = slice(t.y.start - h.top, t.y.stop + h.bottom)
        return image[rows, t.x.start - h.left : t.x.stop + h.right]

    report = tilewise.map_tiles(
        report_tiles(existing_context), image, tile=(7, 10), halo=(3, 12), boundary="none",
        pass_tile=True, **backend_options,
    )  # fmt: skip
    expected = expected_report(grid, lambda t: clipped_halo(grid, t))
    assert np.array_equal(report, expected)
    assert (expected[..., 6:10] != [3, 3, 12, 12]).any()  # some halos were clipped

    # A block-sized result is trimmed by the halo the tile had, not the one requested.
    same = tilewise.map_tiles(
        lambda b, t: b, image, tile=(7, 10), halo=(3, 12), boundary="none", pass_tile=True,
        **backend_options,
    )  # fmt: skip
    assert np.array_equal(same, image)


@pytest.mark.parametrize("mode", MODES)
def test_none_equals_whole_image_filter(
    backend_options: dict[str, Any], make_image: Any, mode: str
) -> None:
    image = make_image((23, 37), np.int32)
    r = 4

    def smooth(a: np.ndarray) -> np.ndarray:
        return ndi.uniform_filter(a, 2 * r + 1, mode=mode, cval=5)

    got = tilewise.map_tiles(smooth, image, tile=6, halo=r, boundary="none", **backend_options)
    whole = smooth(image)
    # Inside, every block holds the full reach of the filter.
    assert np.array_equal(got[r:-r, r:-r], whole[r:-r, r:-r])
    if mode != "wrap":
        # A block's edge at the image edge is padded by the filter itself, as scipy
        # pads the whole image; only wrap needs pixels from the far side.
        assert np.array_equal(got, whole)
    else:
        assert not np.array_equal(got, whole)


# --- outputs ---------------------------------------------------------------------------


def test_dtype_casts_every_tile(backend_options: dict[str, Any], make_image: Any) -> None:
    image = make_image((23, 37), np.float64)
    got = tilewise.map_tiles(lambda b: b * 1.5, image, tile=5, dtype=np.int16, **backend_options)
    assert got.dtype == np.int16
    assert np.array_equal(got, (image * 1.5).astype(np.int16))
    got32 = tilewise.map_tiles(
        lambda b: b / 3, image, tile=(4, 9), dtype="float32", **backend_options
    )
    assert got32.dtype == np.float32
    assert np.array_equal(got32, (image / 3).astype(np.float32))


def test_dtype_defaults_to_the_first_result(
    backend_options: dict[str, Any], make_image: Any
) -> None:
    image = make_image((23, 37), np.uint8)
    got = tilewise.map_tiles(lambda b: b.astype(np.float32) / 2, image, tile=8, **backend_options)
    assert got.dtype == np.float32
    assert np.array_equal(got, image.astype(np.float32) / 2)


def test_extra_dimensions_come_from_the_first_tile(
    backend_options: dict[str, Any], make_image: Any
) -> None:
    image = make_image((23, 37), np.float64)
    three = tilewise.map_tiles(
        lambda b: np.stack([b, 2 * b, -b], axis=-1), image, tile=6, halo=2, **backend_options
    )
    assert three.shape == (23, 37, 3)
    assert np.array_equal(three, np.stack([image, 2 * image, -image], axis=-1))
    rgb = make_image((23, 37, 3), np.int32)
    summed = tilewise.map_tiles(lambda b: b.sum(axis=-1), rgb, tile=5, halo=1, **backend_options)
    assert np.array_equal(summed, rgb.sum(axis=-1))
    outer = tilewise.map_tiles(
        lambda b: b[..., None, None] * np.ones((2, 4)), image, tile=9, **backend_options
    )
    assert outer.shape == (23, 37, 2, 4)
    assert np.array_equal(outer[..., 1, 3], image)


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_out_is_written_and_returned(
    backend_options: dict[str, Any], make_image: Any, layout: str
) -> None:
    image = make_image((23, 37), np.float32)
    out = laid_out(np.full((23, 37), -1.0), layout)
    got = tilewise.map_tiles(
        lambda b: ndi.uniform_filter(b, 3), image, tile=7, halo=1, out=out, **backend_options
    )
    assert got is out
    assert np.array_equal(out, ndi.uniform_filter(image, 3).astype(np.float64))


def test_out_with_extra_dimensions(backend_options: dict[str, Any], make_image: Any) -> None:
    image = make_image((11, 13), np.uint16)
    out = np.zeros((11, 13, 2), np.int64)
    tilewise.map_tiles(lambda b: np.stack([b, b], -1), image, tile=4, out=out, **backend_options)
    assert np.array_equal(out, np.stack([image, image], -1))


def test_core_sized_result_is_taken_as_is(backend_options: dict[str, Any]) -> None:
    image = np.zeros((23, 37), np.uint8)

    def tile_number(block: np.ndarray, tile: Tile) -> np.ndarray:
        return np.full(tile.core_shape, 10 * tile.index[0] + tile.index[1], np.int32)

    got = tilewise.map_tiles(
        tile_number, image, tile=(7, 10), halo=(2, 3), pass_tile=True, **backend_options
    )
    rows, cols = np.indices(image.shape)
    assert np.array_equal(got, 10 * (rows // 7) + cols // 10)


def test_pass_tile_gives_each_tile_its_block(
    backend_options: dict[str, Any], make_image: Any
) -> None:
    image = make_image((23, 37), np.int32)
    padded = np.pad(image, ((2, 2), (14, 14)), mode="wrap")

    def padded_window(t: Tile) -> np.ndarray:
        return padded[t.y.start : t.y.stop + 4, t.x.start : t.x.stop + 28]

    report = tilewise.map_tiles(
        report_tiles(padded_window), image, tile=(7, 10), halo=(2, 14), boundary="wrap",
        pass_tile=True, **backend_options,
    )  # fmt: skip
    grid = Grid(shape=(23, 37), tile=(7, 10), halo=(2, 14))
    assert np.array_equal(report, expected_report(grid, lambda t: Halo(2, 2, 14, 14)))


@pytest.mark.parametrize("boundary", ["reflect", "constant", "none"])
def test_block_is_read_only(
    backend_options: dict[str, Any], make_image: Any, boundary: str
) -> None:
    image = make_image((23, 37), np.float64)
    before = image.copy()
    writeable = tilewise.map_tiles(
        lambda b: np.full(b.shape[:2], b.flags.writeable), image, tile=7, halo=2,
        boundary=boundary, **backend_options,
    )  # fmt: skip
    assert not writeable.any()

    def scribble(block: np.ndarray) -> np.ndarray:
        block[...] = 0
        return block

    with pytest.raises(TileError) as caught:
        tilewise.map_tiles(scribble, image, tile=7, halo=2, boundary=boundary, **backend_options)
    assert "read-only" in str(caught.value)
    assert np.array_equal(image, before)


def test_result_does_not_depend_on_tile_or_backend(make_image: Any) -> None:
    image = make_image((31, 29, 2), np.float32)

    def func(b: np.ndarray) -> np.ndarray:
        return np.sqrt(np.abs(b)) + ndi.maximum_filter(b, (5, 3, 1), mode="nearest")

    results = [
        tilewise.map_tiles(
            func, image, tile=t, halo=(2, 1), boundary="nearest", backend=b, workers=w
        )
        for t in (1, (3, 8), 16, 100)
        for b, w in (("serial", None), ("threads", 1), ("threads", 3))
    ]
    assert all(np.array_equal(r, func(image)) for r in results)


# --- progress --------------------------------------------------------------------------


def test_progress_bar_reaches_the_total(
    backend_options: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    tilewise.map_tiles(np.negative, np.ones((9, 8)), tile=(3, 2), progress=True, **backend_options)
    err = capsys.readouterr().err
    assert "12/12" in err
    assert "tile" in err


def test_no_progress_bar_by_default(
    backend_options: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    tilewise.map_tiles(np.negative, np.ones((9, 8)), tile=(3, 2), **backend_options)
    assert capsys.readouterr().err == ""
