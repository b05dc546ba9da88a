"""Cloud-Optimized GeoTIFFs whose tiles and overviews the workers encode.

The oracles: GDAL's own COG driver (through rasterio) for the overviews of
even-sized levels, which must be the same bit for bit; a plain numpy
statement of the documented convention for odd-sized ones; rio-cogeo for
the layout; rasterio reading the file locally and over HTTP range requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tilewise
from tests.stores import RangeServer
from tests.test_geospatial import NODATA, dem_with_holes, mean3, read_back, write_geotiff
from tilewise.io.overviews import Downsampling, level_shapes

rasterio = pytest.importorskip("rasterio")
tifffile = pytest.importorskip("tifffile")
from rasterio.shutil import copy as gdal_copy  # noqa: E402
from rio_cogeo.cogeo import cog_validate  # noqa: E402


def levels_of(path: Path) -> list[np.ndarray]:
    """Every level of a TIFF, full resolution first, as (H, W, samples)."""
    with tifffile.TiffFile(path) as tif:
        return [level.asarray().reshape(*level.shape[:2], -1) for level in tif.series[0].levels]


def gdal_cog(source: Path, dest: Path, resampling: str) -> Path:
    """``source`` as GDAL's COG driver writes it: the reference for the overviews."""
    gdal_copy(
        str(source), str(dest), driver="COG", COMPRESS="ZSTD", PREDICTOR="YES",
        OVERVIEW_RESAMPLING=resampling.upper(),
    )  # fmt: skip
    return dest


def oracle(level: np.ndarray, method: str, nodata: float | None) -> np.ndarray:
    """The level below ``level`` under the documented convention, 2x2 block by 2x2 block."""
    rows, cols, samples = -(-level.shape[0] // 2), -(-level.shape[1] // 2), level.shape[2]
    values = np.zeros((2 * rows, 2 * cols, samples))
    values[: level.shape[0], : level.shape[1]] = level
    present = np.zeros(values.shape, bool)  # the pixels a block holds: not past the edge...
    present[: level.shape[0], : level.shape[1]] = True
    if nodata is not None:  # ...nor nodata
        present[: level.shape[0], : level.shape[1]] &= ~(
            np.isnan(level) if np.isnan(nodata) else level == nodata
        )
    if method == "nearest":
        return level[::2, ::2]
    # (block row, row in block, block column, column in block, sample), pixels in reading order
    pixels = np.where(present, values, 0).reshape(rows, 2, cols, 2, samples)
    counts = present.reshape(rows, 2, cols, 2, samples).sum(axis=(1, 3))
    sums = pixels[:, 0, :, 0] + pixels[:, 0, :, 1] + pixels[:, 1, :, 0] + pixels[:, 1, :, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    if level.dtype.kind in "iu":
        means = np.floor(means + 0.5)
    means[counts == 0] = np.nan if nodata is None else nodata
    return means.astype(level.dtype)


def terrain(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    """Smooth terrain with nodata islands on tile seams, as ``dtype``."""
    dem = dem_with_holes(shape[:2], seed)
    dem[1000:1003, 510:515] = NODATA
    dem[511:513, :] = NODATA  # a whole row of 2x2 blocks with nodata only
    if dtype == "uint16":
        dem = np.where(dem == NODATA, 65535, dem * 60).astype(np.uint16)
    return dem.astype(dtype)


@pytest.mark.parametrize("resampling", ["average", "nearest"])
@pytest.mark.parametrize(
    ("dtype", "nodata", "tile", "backend"),
    [
        ("float32", NODATA, 256, "processes"),  # one level by the workers, two made at the end
        ("float32", None, 512, "threads"),  # two by the workers, float32 sums
        ("uint16", 65535, 1024, "serial"),  # three by the workers: the whole pyramid
    ],
)
def test_overviews_of_even_sized_levels_are_gdals_bit_for_bit(
    resampling: str, dtype: str, nodata: float | None, tile: int, backend: str, tmp_path: Path
) -> None:
    dem = terrain((4096, 3072), dtype)
    source = write_geotiff(tmp_path / "dem.tif", dem, nodata=nodata, tiled=True)
    out = tilewise.map_tiles(
        lambda block: block, source, tile=tile, out=tmp_path / "cog.tif", cog=True,
        compression="zstd", overview_resampling=resampling, dtype=dtype, nodata=None,
        out_nodata=nodata, backend=backend,
    )  # fmt: skip
    valid, errors, warnings = cog_validate(str(out), quiet=True)
    assert valid, errors
    assert warnings == []
    ours, gdals = levels_of(out), levels_of(gdal_cog(source, tmp_path / "gdal.tif", resampling))
    assert [level.shape for level in ours] == [level.shape for level in gdals]
    assert len(ours) == 4
    for level, (mine, theirs) in enumerate(zip(ours, gdals, strict=True)):
        np.testing.assert_array_equal(mine, theirs, err_msg=f"level {level}")


@pytest.mark.parametrize("resampling", ["average", "nearest"])
@pytest.mark.parametrize(("dtype", "bands"), [("float32", 1), ("uint16", 3)])
def test_overviews_of_odd_sized_levels_follow_the_documented_convention(
    resampling: str, dtype: str, bands: int, tmp_path: Path
) -> None:
    dem = terrain((2599, 1301), dtype)
    image = np.stack([dem, dem[::-1], dem[:, ::-1]], axis=-1)[..., :bands]
    nodata = 65535 if dtype == "uint16" else NODATA
    source = write_geotiff(tmp_path / "dem.tif", image, nodata=nodata, compress="deflate")
    out = tilewise.map_tiles(
        lambda block: block, source, tile=512, out=tmp_path / "cog.tif", cog=True,
        compression="deflate", overview_resampling=resampling, dtype=dtype, nodata=None,
        out_nodata=nodata, backend="processes",
    )  # fmt: skip
    valid, errors, _ = cog_validate(str(out), quiet=True)
    assert valid, errors
    levels = levels_of(out)
    assert [level.shape[:2] for level in levels[1:]] == [(1300, 651), (650, 326), (325, 163)]
    with rasterio.open(gdal_cog(source, tmp_path / "gdal.tif", resampling)) as gdals:
        assert gdals.overviews(1) == read_back(out)[1].overviews  # as many levels as GDAL's
    for level in range(1, len(levels)):
        np.testing.assert_array_equal(
            levels[level], oracle(levels[level - 1], resampling, nodata), err_msg=f"level {level}"
        )


@given(
    values=hnp.arrays(
        np.int16,
        hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=7),
        elements=st.integers(0, 9),
    ),
    dtype=st.sampled_from([np.float32, np.float64, np.uint8, np.int16]),
    method=st.sampled_from(["average", "nearest"]),
    nodata=st.sampled_from([None, 0, 7]),
)
def test_downsampling_is_the_convention_on_any_block(
    values: np.ndarray, dtype: type, method: str, nodata: int | None
) -> None:
    block = values.astype(dtype)  # whole numbers: every order of summing gives the same sums
    if dtype == np.float32 and nodata is None:
        block = block.astype(np.float64)  # float32 means without nodata are taken in float32
    np.testing.assert_array_equal(
        Downsampling(method, nodata)(block), oracle(block, method, nodata)
    )


def test_nan_spreads_unless_it_is_the_nodata_value() -> None:
    block = np.array([[np.nan, 1.0], [3.0, 5.0]], np.float32)[..., None]
    assert np.isnan(Downsampling("average", None)(block)).all()
    assert Downsampling("average", float("nan"))(block)[0, 0, 0] == 3.0


@pytest.mark.parametrize(
    ("shape", "levels"),
    [((512, 512), []), ((513, 100), [(257, 50)]), ((1300, 1100), [(650, 550), (325, 275)])],
)
def test_levels_are_added_until_one_fits_in_512(
    shape: tuple[int, int], levels: list[tuple[int, int]], tmp_path: Path
) -> None:
    assert level_shapes(shape) == levels
    source = write_geotiff(tmp_path / "dem.tif", np.ones(shape, np.float32))
    gdal_cog(source, tmp_path / "gdal.tif", "average")
    with rasterio.open(tmp_path / "gdal.tif") as gdals:
        assert len(gdals.overviews(1)) == len(levels)


def test_a_cog_past_the_classic_tiff_limit_is_a_valid_bigtiff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dem = dem_with_holes((1100, 1300))
    source = write_geotiff(tmp_path / "dem.tif", dem, nodata=NODATA)
    monkeypatch.setattr("tilewise.io.tiff_layout.tiff_size_is_big", lambda size: size > 0)
    big = tilewise.map_tiles(
        mean3, source, tile=512, halo=1, out=tmp_path / "big.tif", cog=True, compression="zstd"
    )
    monkeypatch.undo()
    classic = tilewise.map_tiles(
        mean3, source, tile=512, halo=1, out=tmp_path / "classic.tif", cog=True,
        compression="zstd",
    )  # fmt: skip
    with tifffile.TiffFile(big) as tif, tifffile.TiffFile(classic) as other:
        assert (tif.is_bigtiff, other.is_bigtiff) == (True, False)
    valid, errors, _ = cog_validate(str(big), quiet=True)
    assert valid, errors
    for mine, theirs in zip(levels_of(big), levels_of(classic), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert read_back(big)[1] == read_back(classic)[1]


def test_gdal_reads_a_cog_and_its_overviews_over_http_range_requests(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    source = write_geotiff(tmp_path / "dem.tif", dem_with_holes((1300, 1100)), nodata=NODATA)
    tilewise.map_tiles(
        mean3, source, tile=512, halo=1, out=served / "mean.tif", cog=True, compression="zstd"
    )
    local = levels_of(served / "mean.tif")
    env: dict[str, Any] = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
    with RangeServer(served) as server, rasterio.Env(**env):
        url = f"/vsicurl/{server.url}/mean.tif"
        with rasterio.open(url, overview_level=1) as quarter:
            assert quarter.read(1).shape == (325, 275)
            np.testing.assert_array_equal(quarter.read(1), local[2][..., 0])
        with rasterio.open(url) as remote:
            window = rasterio.windows.Window(600, 700, 300, 200)
            part = remote.read(1, window=window)
            np.testing.assert_array_equal(part, local[0][700:900, 600:900, 0])
            assert remote.crs == "EPSG:32633"
    assert server.ranges > 0
    assert server.whole == 0
    assert server.sent < (served / "mean.tif").stat().st_size
