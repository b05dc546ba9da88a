"""xarray: a DataArray in gives a DataArray out, its dims, coords, attrs and name kept."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rioxarray  # noqa: F401 - the .rio accessor
import xarray as xr
from scipy import ndimage as ndi

import tilewise

ROOT = Path(__file__).resolve().parent.parent


def scene(shape: tuple[int, ...] = (3, 50, 60), dims: tuple[str, ...] = ("band", "y", "x")) -> Any:
    """A georeferenced multiband scene, as rioxarray makes it: coords, CRS, attrs."""
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    coords = {"band": np.arange(1, shape[0] + 1)} if "band" in dims else {}
    coords |= {
        "y": 4_000_000 - 30.0 * np.arange(shape[-2]),
        "x": 500_000 + 30.0 * np.arange(shape[-1]),
    }
    array = xr.DataArray(
        data, dims=dims, coords=coords, attrs={"units": "m", "long_name": "elevation"}, name="dem"
    )
    return array.rio.write_crs("EPSG:32633")


def smooth(block: np.ndarray) -> np.ndarray:
    return ndi.gaussian_filter(block, sigma=(1.0, 1.0, 0.0), truncate=2.0, mode="reflect")


def assert_same_labels(result: Any, image: Any) -> None:
    assert isinstance(result, xr.DataArray)
    assert result.dims == image.dims
    assert result.name == image.name
    assert result.attrs == image.attrs
    assert set(result.coords) == set(image.coords)
    for name, coord in image.coords.items():
        xr.testing.assert_identical(result.coords[name], coord)


def test_a_data_array_in_gives_a_data_array_out(
    backend: str, backend_options: dict[str, Any]
) -> None:
    """Tiled by dim: y and x, with the bands passed whole; back in the image's own order."""
    image = scene()
    result = tilewise.map_tiles(
        smooth, image, tile={"y": 16, "x": 24}, halo={"y": 2, "x": 2}, **backend_options
    )
    assert_same_labels(result, image)
    assert result.rio.crs == image.rio.crs  # rioxarray's spatial_ref coordinate
    whole = np.moveaxis(smooth(np.moveaxis(image.values, 0, -1)), -1, 0)
    np.testing.assert_array_equal(result.values, whole)


def test_a_volume_tiled_by_its_dims_with_a_halo_per_dim() -> None:
    image = xr.DataArray(
        np.random.default_rng(1).random((9, 20, 22)),
        dims=("z", "y", "x"),
        coords={"z": np.linspace(0, 8, 9), "y": np.arange(20), "x": np.arange(22)},
        attrs={"voxel_size_um": [2.0, 0.5, 0.5]},
    )
    func = functools.partial(ndi.median_filter, size=(3, 5, 3), mode="nearest")
    result = tilewise.map_tiles(
        func,
        image,
        tile={"z": 4, "y": 8, "x": 8},
        halo={"z": 1, "y": 2, "x": 1},
        boundary="nearest",
        backend="threads",
    )
    assert_same_labels(result, image)
    np.testing.assert_array_equal(result.values, func(image.values))


def test_dims_not_named_in_tile_reach_func_whole_and_keep_their_place() -> None:
    """(time, y, x) tiled in y and x only: each block has every time step."""
    image = scene((4, 30, 20), ("time", "y", "x"))
    steps = set()

    def mean_over_time(block: np.ndarray) -> np.ndarray:
        steps.add(block.shape[-1])
        return np.repeat(block.mean(axis=-1, keepdims=True), block.shape[-1], axis=-1)

    result = tilewise.map_tiles(mean_over_time, image, tile={"y": 8, "x": 8}, backend="serial")
    assert steps == {4}
    assert_same_labels(result, image)
    np.testing.assert_allclose(result.values, np.broadcast_to(image.values.mean(0), (4, 30, 20)))


def test_a_result_with_new_trailing_dims_keeps_the_coords_it_still_has() -> None:
    image = scene((30, 20), ("y", "x"))

    def gradient(block: np.ndarray) -> np.ndarray:
        return np.stack(np.gradient(block), axis=-1)

    result = tilewise.map_tiles(gradient, image, tile=8, halo=1, boundary="nearest")
    assert result.dims == ("y", "x", "dim_0")
    assert result.sizes["dim_0"] == 2
    xr.testing.assert_identical(result.coords["y"], image.coords["y"])
    assert result.attrs == image.attrs


def test_a_dask_backed_data_array_is_read_chunk_by_chunk_under_a_memory_budget(
    tmp_path: Path,
) -> None:
    """1 GiB of dask-backed float32 into a Zarr store: the process never pins 512 MiB."""
    script = textwrap.dedent(
        f"""
        import json, os
        import dask.array as da, numpy as np, xarray as xr
        from scipy import ndimage as ndi
        import tilewise
        from benchmarks.memory import TreeSampler

        data = da.random.default_rng(0).random((16384, 16384), chunks=2048, dtype=np.float32)
        image = xr.DataArray(data, dims=("y", "x"))
        with TreeSampler(os.getpid()) as sampler:
            sampler.open()
            tilewise.map_tiles(
                lambda b: ndi.uniform_filter(b, 3), image, tile={{"y": 2048, "x": 2048}},
                halo={{"y": 1, "x": 1}}, out={str(tmp_path / "out.zarr")!r}, backend="threads",
            )
            peak = sampler.close()
        print(json.dumps({{"pinned": peak.pinned, "bytes": data.nbytes}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["bytes"] == 2**30
    assert 0 < figures["pinned"] < 512 * 2**20, figures
    import zarr

    written = zarr.open_array(tmp_path / "out.zarr", mode="r")
    assert written.shape == (16384, 16384)
    # Across a seam of chunks, from the left edge: the 3x3 mean of the same pixels.
    import dask.array as da

    data = da.random.default_rng(0).random((16384, 16384), chunks=2048, dtype=np.float32)
    window = np.asarray(data[2039:2061, 0:101])
    expected = ndi.uniform_filter(window, 3)[1:-1, :-1]
    np.testing.assert_array_equal(written[2040:2060, 0:100], expected)


@pytest.mark.parametrize(
    ("arguments", "fragments"),
    [
        ({"tile": {"z": 8}}, ["tile={'z': 8}", "'z' is not a dim", "('band', 'y', 'x')"]),
        ({"tile": {"y": 8, "x": 8}, "halo": {"band": 1}}, ["halo={'band': 1}", "not a tiled dim"]),
        ({"tile": 8, "halo": {"y": 1}}, ["halo={'y': 1}", "tile by dim"]),
    ],
)
def test_dims_that_do_not_fit_are_refused_naming_them(
    arguments: dict[str, Any], fragments: list[str]
) -> None:
    calls = []

    def func(block: np.ndarray) -> np.ndarray:
        calls.append(1)
        return block

    with pytest.raises((tilewise.ArgumentError, tilewise.ArgumentTypeError)) as caught:
        tilewise.map_tiles(func, scene(), backend="serial", **arguments)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert calls == []


def test_out_given_is_returned_as_given() -> None:
    image = scene((30, 20), ("y", "x"))
    out = np.empty((30, 20), np.float32)
    result = tilewise.map_tiles(np.negative, image, tile=8, out=out, backend="serial")
    assert result is out
    np.testing.assert_array_equal(out, -image.values)
