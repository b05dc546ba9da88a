"""Volumes and stacks: tiles and halos along k axes, exact at every seam as in 2-D.

The oracles are numpy.pad for the padding, scipy.ndimage on the whole volume
for the results, and the 2-D behaviour of an int ``tile`` for what must not
change.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

import tilewise
from tilewise import Grid
from tilewise.boundary import read_block, source_indices
from tilewise.journal import JOURNAL

#: numpy.pad's names for scipy.ndimage's modes (numpy's "reflect" is scipy's "mirror").
NUMPY_PAD_MODE = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap"}
MODES = (*NUMPY_PAD_MODE, "constant")


# --- geometry ----------------------------------------------------------------------------


@st.composite
def grids(draw: st.DrawFn) -> Grid:
    k = draw(st.integers(2, 4))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=k, max_size=k)))
    tile = tuple(draw(st.lists(st.integers(1, 11), min_size=k, max_size=k)))
    halo = tuple(draw(st.lists(st.integers(0, 12), min_size=k, max_size=k)))
    clip = tuple(draw(st.lists(st.booleans(), min_size=k, max_size=k)))
    return Grid(shape=shape, tile=tile, halo=halo, clip_halo=clip)


@settings(max_examples=200)
@given(grid=grids())
def test_tiles_partition_a_volume_and_halos_stay_within_bounds(grid: Grid) -> None:
    covered = np.zeros(grid.shape, np.int32)
    tiles = list(grid)
    for t in tiles:
        covered[t.slices] += 1
        assert t.ndim == len(grid.shape)
        assert t.slices[-2:] == (t.y, t.x)
        assert t.margins[-2:] == ((t.halo.top, t.halo.bottom), (t.halo.left, t.halo.right))
        starts = [before for before, _ in t.margins]
        assert t.core_in_block == tuple(
            slice(start, start + n) for start, n in zip(starts, t.core_shape, strict=True)
        )
        for axis, (span, (before, after)) in enumerate(zip(t.slices, t.margins, strict=True)):
            n, halo = grid.shape[axis], grid.halo[axis]
            assert 0 < span.stop - span.start <= grid.tile[axis]
            if grid.clip_halo[axis]:  # type: ignore[index]
                # Clipped: the context that exists, capped by the request.
                assert (before, after) == (min(halo, span.start), min(halo, n - span.stop))
            else:
                assert (before, after) == (halo, halo)
    assert (covered == 1).all()
    assert len(tiles) == len(grid) == math.prod(grid.counts)
    assert grid.counts == tuple(-(-n // t) for n, t in zip(grid.shape, grid.tile, strict=True))
    # Row-major order of the indices, and tile_at agrees with iteration.
    assert [t.index for t in tiles] == sorted(t.index for t in tiles)
    assert all(grid.tile_at(t.index) == t for t in tiles)


def test_a_volume_tile_is_described_along_every_axis() -> None:
    t = Grid(shape=(40, 2048, 4000), tile=(16, 512, 512), halo=(1, 1, 1)).tile_at((2, 3, 7))
    assert t.describe() == "tile (2, 3, 7) axis 0 32:40, rows 1536:2048, cols 3584:4000"
    assert "leading=(slice(32, 40, None),)" in repr(t)


def test_a_grid_needs_a_tile_and_a_halo_per_axis() -> None:
    with pytest.raises(ValueError, match="tile"):
        Grid(shape=(4, 5, 6), tile=(2, 2), halo=(0, 0))
    with pytest.raises(IndexError, match="outside a 2x3x3 grid"):
        Grid(shape=(4, 5, 6), tile=(2, 2, 2), halo=(0, 0, 0)).tile_at((0, 0))


# --- padding ------------------------------------------------------------------------------


def padded_like_numpy(
    image: np.ndarray, widths: list[tuple[int, int]], modes: tuple[str, ...], cval: float
) -> np.ndarray:
    """``image`` padded axis by axis with numpy.pad, each axis in its own mode."""
    for axis, (width, mode) in enumerate(zip(widths, modes, strict=False)):  # tiled axes only
        pad = [(0, 0)] * image.ndim
        pad[axis] = width
        if mode == "constant":
            image = np.pad(image, pad, mode="constant", constant_values=cval)
        else:
            image = np.pad(image, pad, mode=NUMPY_PAD_MODE[mode])
    return image


class RecordingReader:
    """Reads windows of an array and remembers them, to see what padding touched."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.windows: list[tuple[slice, ...]] = []

    def __call__(self, *window: slice) -> np.ndarray:
        self.windows.append(window)
        return self.image[window]

    def pixels_read(self) -> int:
        return sum(math.prod(s.stop - s.start for s in window) for window in self.windows)


@settings(max_examples=150, deadline=None)
@given(
    shape=st.lists(st.integers(1, 7), min_size=3, max_size=4),
    trailing=st.sampled_from([(), (2,)]),
    data=st.data(),
    dtype=st.sampled_from(["uint8", "int32", "float32", "bool"]),
)
def test_a_volume_block_is_a_window_of_numpy_pad(
    shape: list[int], trailing: tuple[int, ...], data: st.DataObject, dtype: str
) -> None:
    k = len(shape)
    tile = tuple(data.draw(st.lists(st.integers(1, 8), min_size=k, max_size=k), label="tile"))
    halo = tuple(data.draw(st.lists(st.integers(0, 10), min_size=k, max_size=k), label="halo"))
    modes = tuple(data.draw(st.lists(st.sampled_from(MODES), min_size=k, max_size=k)))
    seed = math.prod(shape) + sum(tile)
    image = np.random.default_rng(seed).integers(0, 3, (*shape, *trailing)).astype(dtype)
    cval = 1
    widths = [(h, h) for h in halo] + [(0, 0)] * len(trailing)
    padded = padded_like_numpy(image, widths, modes, cval)
    for t in Grid(shape=tuple(shape), tile=tile, halo=halo):
        reader = RecordingReader(image)
        block = read_block(reader, tuple(shape), t, modes, cval)
        window = tuple(slice(s.start, s.stop + 2 * h) for s, h in zip(t.slices, halo, strict=True))
        assert block.dtype == image.dtype
        assert np.array_equal(block, padded[window])
        assert not block.flags.writeable
        # Padding reads only pixels the block repeats, each window inside the image,
        # and no more pixels than the block holds.
        for read in reader.windows:
            for axis, span in enumerate(read):
                s, h = t.slices[axis], halo[axis]
                mode = modes[axis]
                repeated = set(source_indices(s.start - h, s.stop + h, shape[axis], mode))
                assert set(range(span.start, span.stop)) <= repeated
        assert reader.pixels_read() <= math.prod(t.block_shape)


def test_an_interior_volume_block_is_one_view() -> None:
    image = np.arange(6 * 10 * 10.0).reshape(6, 10, 10)
    t = Grid(shape=(6, 10, 10), tile=(2, 4, 4), halo=(1, 2, 2)).tile_at((1, 1, 1))
    reader = RecordingReader(image)
    block = read_block(reader, image.shape, t, "reflect")
    assert len(reader.windows) == 1
    assert np.shares_memory(block, image)


# --- results: scipy.ndimage on the whole volume is the oracle --------------------------------


def gaussian(mode: str | tuple[str, ...], block: np.ndarray) -> np.ndarray:
    return ndi.gaussian_filter(block, 1.0, truncate=2.0, mode=mode)  # radius 2


def uniform(mode: str | tuple[str, ...], block: np.ndarray) -> np.ndarray:
    return ndi.uniform_filter(block, 3, mode=mode)  # radius 1


def median(mode: str | tuple[str, ...], block: np.ndarray) -> np.ndarray:
    return ndi.median_filter(block, size=(3, 5, 3), mode=mode)  # radius (1, 2, 1)


def sobel(mode: str | tuple[str, ...], block: np.ndarray) -> np.ndarray:
    return ndi.sobel(block, axis=0, mode=mode)  # radius 1


#: (filter, its radius per axis, whether tiles equal the whole call bit for bit)
FILTERS: dict[str, tuple[Callable[..., np.ndarray], tuple[int, int, int], bool]] = {
    "gaussian": (gaussian, (2, 2, 2), True),
    # uniform_filter keeps running sums: its rounding depends on where a line starts.
    "uniform": (uniform, (1, 1, 1), False),
    "median": (median, (1, 2, 1), True),
    "sobel": (sobel, (1, 1, 1), True),
}


def volume(shape: tuple[int, ...], dtype: str = "float64", seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).random(shape) * 200
    return values.astype(dtype)


def assert_same(tiled: np.ndarray, whole: np.ndarray, exact: bool) -> None:
    assert tiled.shape == whole.shape
    assert tiled.dtype == whole.dtype
    if exact:
        np.testing.assert_array_equal(tiled, whole)
    else:
        np.testing.assert_allclose(tiled, whole, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", FILTERS)
@pytest.mark.parametrize("mode", MODES)
def test_scipy_filters_on_a_volume_equal_the_whole_call(
    name: str, mode: str, backend: str, backend_options: dict[str, Any]
) -> None:
    filter_, radius, exact = FILTERS[name]
    image = volume((7, 11, 13))
    func = functools.partial(filter_, mode)
    tiled = tilewise.map_tiles(
        func, image, tile=(3, 4, 5), halo=radius, boundary=mode, **backend_options
    )
    assert_same(tiled, func(image), exact)


@pytest.mark.parametrize("name", ["gaussian", "uniform", "sobel"])
def test_a_mode_per_axis_equals_scipys_mode_per_axis(
    name: str, backend: str, backend_options: dict[str, Any]
) -> None:
    filter_, radius, exact = FILTERS[name]
    modes = ("wrap", "reflect", "constant")  # a periodic axis, then an image's
    func = functools.partial(filter_, modes)
    image = volume((6, 9, 10), seed=1)
    tiled = tilewise.map_tiles(
        func, image, tile=(4, 4, 3), halo=radius, boundary=modes, **backend_options
    )
    assert_same(tiled, func(image), exact)


def layouts(image: np.ndarray) -> dict[str, np.ndarray]:
    strided = np.empty((image.shape[0] * 2, *image.shape[1:]), image.dtype)[::2]
    strided[...] = image
    return {"C": image, "F": np.asfortranarray(image), "strided": strided}


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 12), st.integers(1, 12)),
    tile=st.tuples(st.integers(1, 14), st.integers(1, 14), st.integers(1, 14)),
    extra_halo=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    name=st.sampled_from(["gaussian", "median", "sobel"]),
    mode=st.sampled_from(MODES),
    dtype=st.sampled_from(["uint8", "int16", "uint16", "int32", "float32", "float64"]),
    layout=st.sampled_from(["C", "F", "strided"]),
)
def test_any_tiling_of_any_volume_is_exact(
    shape: tuple[int, int, int],
    tile: tuple[int, int, int],
    extra_halo: tuple[int, int, int],
    name: str,
    mode: str,
    dtype: str,
    layout: str,
) -> None:
    """Tiles of 1, odd sizes, larger than the volume; halos of the radius and beyond."""
    filter_, radius, _ = FILTERS[name]
    image = layouts(volume(shape, dtype, seed=sum(shape)))[layout]
    func = functools.partial(filter_, mode)
    halo = tuple(r + e for r, e in zip(radius, extra_halo, strict=True))
    tiled = tilewise.map_tiles(func, image, tile=tile, halo=halo, boundary=mode, backend="threads")
    np.testing.assert_array_equal(tiled, func(image))


def test_tiles_of_one_voxel_with_a_halo_larger_than_the_volume() -> None:
    image = volume((3, 4, 2), seed=2)
    func = functools.partial(gaussian, "wrap")
    tiled = tilewise.map_tiles(func, image, tile=1, halo=5, boundary="wrap", backend="serial")
    np.testing.assert_array_equal(tiled, func(image))
    tiled = tilewise.map_tiles(
        func, image, tile=(1, 1, 1), halo=(5, 5, 5), boundary="wrap", backend="serial"
    )
    np.testing.assert_array_equal(tiled, func(image))


def test_boundary_none_clips_the_halo_per_axis() -> None:
    """'none' along one axis: edge tiles there get only the context that exists."""
    image = volume((5, 8, 8), seed=3)
    seen: list[tuple[tuple[int, int], ...]] = []

    def record(block: np.ndarray, tile: tilewise.Tile) -> np.ndarray:
        seen.append(tile.margins)
        assert block.shape == tile.block_shape
        return block[tile.core_in_block] * 2

    result = tilewise.map_tiles(
        record,
        image,
        tile=(2, 4, 4),
        halo=(1, 2, 2),
        boundary=("none", "reflect", "reflect"),
        pass_tile=True,
        backend="serial",
    )
    np.testing.assert_array_equal(result, image * 2)
    assert {m[0] for m in seen} == {(0, 1), (1, 1), (1, 0)}  # first, middle, last planes
    assert {m[1:] for m in seen} == {((2, 2), (2, 2))}


# --- what stays 2-D, and what passes whole ------------------------------------------------


def test_an_int_tile_tiles_rows_and_columns_and_passes_the_rest_whole() -> None:
    """tile=4 on (Y, X, C, D): two tiled axes, then channels, as ever."""
    image = volume((9, 10, 3, 2), seed=4)
    shapes = set()

    def per_pixel(block: np.ndarray) -> np.ndarray:
        shapes.add(block.shape[2:])
        return block.sum(axis=-1)

    result = tilewise.map_tiles(per_pixel, image, tile=4, backend="serial")
    np.testing.assert_array_equal(result, image.sum(axis=-1))
    assert shapes == {(3, 2)}


def test_three_tiled_axes_pass_the_channels_whole() -> None:
    """(Z, Y, X, C) tiled along Z, Y and X: a per-channel 3-D filter, channels whole."""
    image = volume((5, 9, 7, 3), seed=5)
    func = functools.partial(ndi.gaussian_filter, sigma=(1, 1, 1, 0), truncate=2.0)
    tiled = tilewise.map_tiles(func, image, tile=(2, 4, 4), halo=2, backend="threads")
    np.testing.assert_array_equal(tiled, func(image))


def test_a_time_stack_frame_by_frame() -> None:
    """(T, Z, Y, X) with tiles one frame deep: a 3-D function per frame, no halo in time."""
    image = volume((4, 3, 10, 9), seed=6)
    frames: list[int] = []

    def per_frame(block: np.ndarray, tile: tilewise.Tile) -> np.ndarray:
        frames.append(tile.leading[0].start)
        assert block.shape[0] == 1
        return ndi.gaussian_filter(block[0], 1.0, truncate=2.0, mode="nearest")[None]

    tiled = tilewise.map_tiles(
        per_frame,
        image,
        tile=(1, 3, 5, 5),
        halo=(0, 2, 2, 2),
        boundary="nearest",
        pass_tile=True,
        backend="threads",
    )
    whole = np.stack([ndi.gaussian_filter(f, 1.0, truncate=2.0, mode="nearest") for f in image])
    np.testing.assert_array_equal(tiled, whole)
    assert sorted(set(frames)) == [0, 1, 2, 3]


def test_a_result_with_extra_dimensions_per_voxel() -> None:
    image = volume((4, 6, 5), seed=7)

    def gradient(block: np.ndarray) -> np.ndarray:
        return np.stack(np.gradient(block), axis=-1)

    tiled = tilewise.map_tiles(
        gradient, image, tile=(2, 3, 3), halo=1, boundary="nearest", backend="serial"
    )
    padded = np.pad(image, 1, mode="edge")
    whole = gradient(padded)[1:-1, 1:-1, 1:-1]
    np.testing.assert_array_equal(tiled, whole)
    assert tiled.shape == (4, 6, 5, 3)


# --- files and other arrays ---------------------------------------------------------------


def test_a_npy_volume_in_and_out_by_windows(
    tmp_path: Path, backend: str, backend_options: dict[str, Any]
) -> None:
    image = volume((6, 20, 18), "float32", seed=8)
    np.save(tmp_path / "in.npy", image)
    func = functools.partial(gaussian, "reflect")
    out = tilewise.map_tiles(
        func,
        tmp_path / "in.npy",
        tile=(4, 8, 8),
        halo=2,
        out=tmp_path / "out.npy",
        **backend_options,
    )
    np.testing.assert_array_equal(np.load(out), func(image))


def test_a_zarr_volume_in_and_out_by_chunks(
    tmp_path: Path, backend: str, backend_options: dict[str, Any]
) -> None:
    image = volume((9, 24, 20), "float32", seed=9)
    zarr.create_array(
        tmp_path / "in.zarr", data=image, chunks=(3, 8, 8), dimension_names=("z", "y", "x")
    )
    func = functools.partial(median, "mirror")
    out = tilewise.map_tiles(
        func,
        tmp_path / "in.zarr",
        tile=(3, 8, 8),
        halo=(1, 2, 1),
        boundary="mirror",
        out=tmp_path / "out.zarr",
        **backend_options,
    )
    written = zarr.open_array(out, mode="r")
    assert written.chunks == (3, 8, 8)
    np.testing.assert_array_equal(written[:], func(image))


def test_a_dask_volume_is_read_chunk_by_chunk() -> None:
    da = pytest.importorskip("dask.array")
    image = volume((8, 16, 12), seed=10)
    lazy = da.from_array(image, chunks=(4, 8, 6))
    func = functools.partial(gaussian, "nearest")
    tiled = tilewise.map_tiles(
        func, lazy, tile=(4, 8, 6), halo=2, boundary="nearest", backend="threads"
    )
    np.testing.assert_array_equal(tiled, func(image))


def test_an_interrupted_volume_run_resumes_with_its_tiles_journalled(tmp_path: Path) -> None:
    image = volume((6, 12, 12), "float32", seed=11)
    np.save(tmp_path / "in.npy", image)
    marker = tmp_path / "fail"
    marker.touch()
    calls: list[tuple[int, ...]] = []

    def fail_once(block: np.ndarray, tile: tilewise.Tile) -> np.ndarray:
        if tile.index == (1, 1, 0) and marker.exists():
            raise RuntimeError("stop here")
        calls.append(tile.index)
        return block * 3

    run = functools.partial(
        tilewise.map_tiles,
        fail_once,
        tmp_path / "in.npy",
        tile=(3, 6, 6),
        out=tmp_path / "out.npy",
        pass_tile=True,
        backend="serial",
    )
    with pytest.raises(tilewise.TileError, match=r"tile \(1, 1, 0\) axis 0 3:6, rows 6:12"):
        run()
    journal = (tmp_path / f"out.npy{JOURNAL}").read_text().splitlines()
    recorded = {tuple(int(i) for i in line.split()[:3]) for line in journal[1:]}
    assert recorded == set(calls)  # one index per tiled axis, then the line's checksum
    done = set(calls)
    marker.unlink()
    calls.clear()
    run(resume=True)
    every = {t.index for t in Grid((6, 12, 12), (3, 6, 6), (0, 0, 0))}
    assert set(calls) == every - done
    assert len(calls) == len(every - done)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), image * 3)


# --- refused before any work ----------------------------------------------------------------


def test_a_tif_output_of_a_volume_is_refused_before_any_tile(tmp_path: Path) -> None:
    calls: list[int] = []

    def func(block: np.ndarray) -> np.ndarray:
        calls.append(1)
        return block

    with pytest.raises(tilewise.ArgumentError, match=r"out=.*out\.tif.*tiles 3 axes.*\.zarr"):
        tilewise.map_tiles(
            func, volume((4, 8, 8)), tile=(2, 4, 4), out=tmp_path / "out.tif", backend="serial"
        )
    assert calls == []
    assert list(tmp_path.iterdir()) == []


def test_an_image_kernel_refuses_a_volume_tiling() -> None:
    @tilewise.pixelwise(radius=1, compile=False)
    def mean(z: Any, y: int, x: int) -> float:
        return z[y, x]

    with pytest.raises(tilewise.ArgumentError, match=r"tile=\(2, 4, 4\).*takes 2 indices"):
        tilewise.map_tiles(mean, volume((4, 8, 8)), tile=(2, 4, 4), backend="serial")


# --- volume kernels: pixelwise with one index per tiled axis --------------------------------


@tilewise.pixelwise(radius=1, dtype=np.float32)
def mean27(v: Any, z: int, y: int, x: int) -> float:
    """The 3x3x3 mean, summed plane by plane, row by row: the reference's order."""
    total = 0.0
    for dz in range(-1, 2):
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                total += v[z + dz, y + dy, x + dx]
    return total / 27


def mean27_reference(image: np.ndarray, mode: str) -> np.ndarray:
    """numpy on the whole volume: the 27 shifted views, added in the kernel's order."""
    padded = padded_like_numpy(image.astype(np.float64), [(1, 1)] * 3, (mode,) * 3, 0.0)
    total = np.zeros(image.shape)
    depth, rows, cols = image.shape
    for dz in range(3):
        for dy in range(3):
            for dx in range(3):
                total += padded[dz : dz + depth, dy : dy + rows, dx : dx + cols]
    return (total / 27).astype(np.float32)


def test_a_volume_kernel_equals_its_whole_volume_reference_on_every_backend(
    backend: str, backend_options: dict[str, Any]
) -> None:
    image = volume((9, 13, 11), "float32", seed=12)
    expected = mean27_reference(image, "reflect")
    np.testing.assert_array_equal(mean27(image), expected)
    tiled = tilewise.map_tiles(mean27, image, tile=(4, 5, 6), **backend_options)
    np.testing.assert_array_equal(tiled, expected)
    # An int tile is the size along each of the kernel's three axes.
    np.testing.assert_array_equal(
        tilewise.map_tiles(mean27, image, tile=4, boundary="wrap", **backend_options),
        mean27_reference(image, "wrap"),
    )


def test_a_volume_kernel_with_a_radius_per_axis_and_two_outputs() -> None:
    @tilewise.pixelwise(radius=(1, 2, 2), outputs=2, dtype=np.float64, boundary="nearest")
    def gradients(v: Any, z: int, y: int, x: int) -> tuple[float, float]:
        return (v[z + 1, y, x] - v[z - 1, y, x]) / 2, (v[z, y + 2, x] - v[z, y - 2, x]) / 4

    image = volume((6, 12, 10), seed=13)
    padded = np.pad(image, [(1, 1), (2, 2), (2, 2)], mode="edge")
    inner = padded[1:-1, 2:-2, 2:-2]
    expected = np.stack(
        [
            (padded[2:, 2:-2, 2:-2] - padded[:-2, 2:-2, 2:-2]) / 2,
            (padded[1:-1, 4:, 2:-2] - padded[1:-1, :-4, 2:-2]) / 4,
        ],
        axis=-1,
    )
    assert inner.shape == image.shape
    np.testing.assert_array_equal(gradients(image), expected)
    tiled = tilewise.map_tiles(gradients, image, tile=(2, 5, 4), boundary="nearest")
    np.testing.assert_array_equal(tiled, expected)


def test_a_volume_kernel_that_reads_beyond_its_radius_is_named_with_the_axis() -> None:
    @tilewise.pixelwise(radius=(1, 3, 3))
    def too_deep(v: Any, z: int, y: int, x: int) -> float:
        return v[z + 2, y, x]

    with pytest.raises(tilewise.ArgumentError, match=r"reads v at z\+2 on axis 0 \(z\)") as caught:
        too_deep(volume((5, 6, 7)))
    assert "beyond its radius=(1, 3, 3): declare radius=(2, 3, 3)" in str(caught.value)


def test_a_volume_kernel_as_a_python_loop_equals_the_compiled_one() -> None:
    loop = tilewise.pixelwise(radius=1, dtype=np.float32, compile=False)(mean27.func)
    # float64: Python adds float32 values in float32 (NEP 50), numba in float64.
    image = volume((4, 5, 6), "float64", seed=14)
    np.testing.assert_array_equal(loop(image), mean27(image))


def test_a_volume_kernel_refuses_an_image_tiling() -> None:
    with pytest.raises(tilewise.ArgumentError, match=r"tile=\(4, 4\).*takes 3 indices"):
        tilewise.map_tiles(mean27, volume((4, 8, 8)), tile=(4, 4), backend="serial")
