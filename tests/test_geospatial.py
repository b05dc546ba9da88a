"""GeoTIFFs in, GeoTIFFs out: georeferencing carried, nodata honoured, compressed and COG outputs.

Every input is written by rasterio and every output read back by rasterio
(and validated by rio-cogeo): the oracle is the GIS stack, not tilewise's
own reader. Values are checked against the whole-image computation under
the nodata convention (nodata as NaN in, ``out_nodata`` out).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage as ndi

import tilewise

rasterio = pytest.importorskip("rasterio")
from rasterio.control import GroundControlPoint  # noqa: E402
from rasterio.transform import Affine  # noqa: E402
from rio_cogeo.cogeo import cog_validate  # noqa: E402

tifffile = pytest.importorskip("tifffile")

#: A UTM zone and 30 m pixels, as a DEM from a national survey.
UTM = "EPSG:32633"
NORTH_UP = Affine(30.0, 0.0, 500_000.0, 0.0, -30.0, 4_000_000.0)
ROTATED = Affine(30.0, 5.0, 500_000.0, 3.0, -30.0, 4_000_000.0)
NODATA = -9999.0
TILE = 64
MEAN = np.full((3, 3), 1 / 9, np.float32)


def mean3(block: np.ndarray) -> np.ndarray:
    """A 3x3 mean that spreads NaN to its neighbours only (a running sum spreads it further)."""
    if block.ndim == 3:
        return np.stack([mean3(block[..., i]) for i in range(block.shape[2])], axis=-1)
    return ndi.correlate(block, MEAN.astype(block.dtype), mode="constant")


def write_geotiff(path: Path, data: np.ndarray, **profile: Any) -> Path:
    """``data`` (H, W) or (H, W, bands) as a GeoTIFF, written by rasterio."""
    bands = data.reshape(*data.shape[:2], -1)
    settings = {"crs": UTM, "transform": NORTH_UP, **profile}
    descriptions = settings.pop("descriptions", None)
    with rasterio.open(
        path, "w", driver="GTiff", height=data.shape[0], width=data.shape[1],
        count=bands.shape[2], dtype=data.dtype, **settings,
    ) as raster:  # fmt: skip
        raster.write(np.moveaxis(bands, -1, 0))
        for band, text in enumerate(descriptions or (), start=1):
            raster.set_band_description(band, text)
            raster.update_tags(band, STATISTICS_MEAN="42")
    return path


@dataclass(frozen=True)
class Raster:
    """What rasterio reads of a raster's description, kept once the file is closed."""

    crs: Any
    transform: Affine
    nodata: float | None
    compression: Any
    block_shapes: list[tuple[int, int]]
    overviews: list[int]
    descriptions: tuple[str | None, ...]
    band_tags: dict[str, str]


def read_back(path: Path) -> tuple[np.ndarray, Raster]:
    """The pixels (H, W) or (H, W, bands) and the description of a raster, read by rasterio."""
    with rasterio.open(path) as raster:
        data = np.moveaxis(raster.read(), 0, -1)
        found = Raster(
            raster.crs, raster.transform, raster.nodata, raster.compression,
            list(raster.block_shapes[:1]), raster.overviews(1), raster.descriptions,
            raster.tags(1),
        )  # fmt: skip
        return (data[..., 0] if raster.count == 1 else data), found


def dem_with_holes(shape: tuple[int, int] = (300, 260), seed: int = 0) -> np.ndarray:
    """Terrain with nodata islands, one across a tile seam and one at the image's corner."""
    rng = np.random.default_rng(seed)
    dem = ndi.gaussian_filter(rng.random(shape, dtype=np.float32) * 900, 3)
    dem[TILE - 3 : TILE + 4, TILE - 5 : TILE + 2] = NODATA  # on a seam, both sides of it
    dem[:5, -4:] = NODATA  # touching the edge: no halo may be padded from it as data
    dem[150:170, 20:30] = NODATA
    return dem


def expected(image: np.ndarray, nodata: float | None, out_nodata: float) -> np.ndarray:
    """The whole-image mean under the convention: nodata in as NaN, nodata out where any was."""
    floats = image.astype(np.result_type(image.dtype, np.float32))
    missing = np.zeros(image.shape, bool) if nodata is None else image == nodata
    floats[missing] = np.nan
    padded = np.pad(floats, [(1, 1), (1, 1)] + [(0, 0)] * (image.ndim - 2), mode="symmetric")
    result = mean3(padded)[1:-1, 1:-1]
    if image.ndim == 3:
        missing = np.broadcast_to(missing.any(axis=-1, keepdims=True), result.shape)
    result[missing | np.isnan(result)] = out_nodata
    return result


# --- georeferencing and nodata, on every backend ------------------------------------------------


@pytest.mark.parametrize(
    ("transform", "profile"),
    [
        (NORTH_UP, {"compress": "deflate"}),  # striped, compressed
        (ROTATED, {"tiled": True, "blockxsize": 64, "blockysize": 64}),
    ],
    ids=["north-up-deflate-strips", "rotated-tiled"],
)
def test_a_geotiff_output_has_the_input_crs_transform_and_nodata(
    transform: Affine, profile: dict[str, Any], backend_options: dict[str, Any], tmp_path: Path
) -> None:
    dem = dem_with_holes()
    source = write_geotiff(tmp_path / "dem.tif", dem, transform=transform, nodata=NODATA, **profile)
    out = tilewise.map_tiles(
        mean3, source, tile=TILE, halo=1, out=tmp_path / "mean.tif", **backend_options
    )
    data, raster = read_back(out)
    assert raster.crs == UTM
    assert raster.transform == transform
    assert raster.nodata == NODATA
    np.testing.assert_array_equal(data, expected(dem, NODATA, NODATA))


def test_a_multiband_integer_geotiff_reaches_func_as_floats_with_nan(
    backend_options: dict[str, Any], tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(1, 60_000, (130, 150, 3), dtype=np.uint16)
    image[60:70, 60:70, 1] = 0  # nodata in one band: the whole pixel has none
    source = write_geotiff(
        tmp_path / "rgb.tif", image, nodata=0, descriptions=["red", "green", "blue"]
    )
    out = tilewise.map_tiles(
        mean3, source, tile=TILE, halo=1, out=tmp_path / "mean.tif", **backend_options
    )
    data, raster = read_back(out)
    assert raster.nodata == 0  # the input's value, which the float32 output holds
    assert raster.descriptions == ("red", "green", "blue")
    assert raster.band_tags == {}  # the input's statistics describe its values, not these
    reference = expected(image, 0, 0)
    np.testing.assert_allclose(data, reference, rtol=1e-6)
    assert np.array_equal(data == 0, reference == 0)


def test_func_sees_an_integer_image_with_nodata_as_float32_with_nan(tmp_path: Path) -> None:
    image = np.arange(40 * 50, dtype=np.uint16).reshape(40, 50)
    source = write_geotiff(tmp_path / "in.tif", image, nodata=7)
    seen: list[tuple[np.dtype, int]] = []

    def record(block: np.ndarray) -> np.ndarray:
        seen.append((block.dtype, int(np.isnan(block).sum())))
        return block + 1

    result = tilewise.map_tiles(record, source, tile=25, halo=2, backend="serial")
    assert {dtype for dtype, _ in seen} == {np.dtype(np.float32)}
    assert sum(nans for _, nans in seen) == 2  # pixel 7 in its tile, and in its neighbour's halo
    assert result.dtype == np.float32
    wanted = (image + 1).astype(np.float32)
    wanted[0, 7] = 7  # the output's nodata: the input's, which float32 holds
    np.testing.assert_array_equal(result, wanted)


def test_band_descriptions_are_dropped_when_the_band_count_changes(tmp_path: Path) -> None:
    image = np.random.default_rng(2).random((40, 50, 3)).astype(np.float32)
    source = write_geotiff(tmp_path / "rgb.tif", image, descriptions=["r", "g", "b"])
    out = tilewise.map_tiles(
        lambda b: b.mean(axis=-1), source, tile=16, out=tmp_path / "gray.tif", backend="serial"
    )
    _, raster = read_back(out)
    assert raster.descriptions == (None,)
    assert raster.crs == UTM


def test_gcps_and_pixel_is_point_are_carried(tmp_path: Path) -> None:
    image = np.random.default_rng(3).random((60, 80)).astype(np.float32)
    gcps = [
        GroundControlPoint(row=0, col=0, x=10.0, y=50.0, z=0.0),
        GroundControlPoint(row=59, col=0, x=10.0, y=49.0, z=0.0),
        GroundControlPoint(row=0, col=79, x=11.0, y=50.2, z=0.0),
    ]
    path = tmp_path / "scene.tif"
    with rasterio.open(
        path, "w", driver="GTiff", height=60, width=80, count=1, dtype="float32",
        gcps=gcps, crs="EPSG:4326",
    ) as raster:  # fmt: skip
        raster.write(image, 1)
    point = write_geotiff(tmp_path / "point.tif", image)
    with rasterio.open(point, "r+") as raster:
        raster.update_tags(AREA_OR_POINT="Point")

    scene = tilewise.map_tiles(np.sqrt, path, tile=32, out=tmp_path / "a.tif", backend="serial")
    with rasterio.open(scene) as raster:
        found, crs = raster.gcps
        assert crs == "EPSG:4326"
        assert [(g.row, g.col, g.x, g.y) for g in found] == [(g.row, g.col, g.x, g.y) for g in gcps]
    pointed = tilewise.map_tiles(np.sqrt, point, tile=32, out=tmp_path / "b.tif", backend="serial")
    with rasterio.open(pointed) as raster:
        assert raster.tags()["AREA_OR_POINT"] == "Point"


def test_a_zarr_output_carries_the_crs_transform_and_nodata_in_the_geozarr_conventions(
    backend_options: dict[str, Any], tmp_path: Path
) -> None:
    import zarr

    dem = dem_with_holes((130, 100))
    source = write_geotiff(tmp_path / "dem.tif", dem, transform=ROTATED, nodata=NODATA)
    out = tilewise.map_tiles(
        mean3, source, tile=TILE, halo=1, out=tmp_path / "mean.zarr", **backend_options
    )
    array = zarr.open_array(out, mode="r")
    attributes = array.attrs.asdict()
    assert rasterio.crs.CRS.from_wkt(attributes["proj:wkt2"]) == rasterio.crs.CRS.from_epsg(32633)
    assert attributes["proj:code"] == UTM
    assert Affine(*attributes["spatial:transform"]) == ROTATED
    assert attributes["spatial:shape"] == [130, 100]
    assert attributes["spatial:registration"] == "pixel"
    assert [c["name"] for c in attributes["zarr_conventions"]] == ["spatial", "proj"]
    assert array.metadata.dimension_names == ("y", "x")
    assert array.fill_value == NODATA
    np.testing.assert_array_equal(array[:], expected(dem, NODATA, NODATA))


def test_a_pixel_is_point_zarr_output_is_node_registered(tmp_path: Path) -> None:
    import zarr

    point = write_geotiff(tmp_path / "point.tif", np.ones((40, 30), np.float32))
    with rasterio.open(point, "r+") as raster:
        raster.update_tags(AREA_OR_POINT="Point")
    with rasterio.open(point) as raster:
        first_centre = raster.transform @ (0.5, 0.5)  # GDAL's transform is of the corners
    out = tilewise.map_tiles(np.sqrt, point, tile=16, out=tmp_path / "p.zarr", backend="serial")
    attributes = zarr.open_array(out, mode="r").attrs.asdict()
    assert attributes["spatial:registration"] == "node"
    assert Affine(*attributes["spatial:transform"]) @ (0, 0) == pytest.approx(first_centre)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_a_zarr_output_of_no_geotiff_and_with_metadata_false_has_no_georeferencing(
    tmp_path: Path,
) -> None:
    import zarr

    source = write_geotiff(tmp_path / "dem.tif", dem_with_holes((50, 60)), nodata=NODATA)
    dropped = tilewise.map_tiles(
        mean3, source, tile=32, halo=1, out=tmp_path / "m.zarr", metadata=False, backend="serial"
    )
    plain = tilewise.map_tiles(np.sqrt, np.ones((20, 20)), out=tmp_path / "p.zarr")
    for out in (dropped, plain):
        array = zarr.open_array(out, mode="r")
        assert not any(key.startswith(("spatial:", "proj:")) for key in array.attrs)
        assert array.metadata.dimension_names is None
    assert zarr.open_array(dropped, mode="r").fill_value == NODATA  # nodata is not metadata


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_metadata_false_writes_no_georeferencing(tmp_path: Path) -> None:
    source = write_geotiff(tmp_path / "dem.tif", dem_with_holes((50, 60)), nodata=NODATA)
    out = tilewise.map_tiles(
        mean3, source, tile=32, halo=1, out=tmp_path / "m.tif", metadata=False, backend="serial"
    )
    data, raster = read_back(out)
    assert raster.crs is None
    assert raster.transform == Affine.identity()
    assert raster.nodata == NODATA  # nodata is not metadata: the pixels hold it
    np.testing.assert_array_equal(data, expected(dem_with_holes((50, 60)), NODATA, NODATA))


def test_nodata_and_out_nodata_given(tmp_path: Path) -> None:
    dem = dem_with_holes((90, 70))
    source = write_geotiff(tmp_path / "dem.tif", dem)  # no nodata declared
    plain = tilewise.map_tiles(mean3, source, tile=32, halo=1, backend="serial")
    assert np.isnan(plain).sum() == 0  # -9999 is data to it, as the file says
    given = tilewise.map_tiles(
        mean3, source, tile=32, halo=1, nodata=NODATA, out_nodata=-1,
        out=tmp_path / "m.tif", backend="serial",
    )  # fmt: skip
    data, raster = read_back(given)
    assert raster.nodata == -1
    np.testing.assert_array_equal(data, expected(dem, NODATA, -1))
    default_float = tilewise.map_tiles(
        lambda b: mean3(b).astype(np.float64), np.where(dem == NODATA, 5000, dem), tile=32,
        halo=1, nodata=5000, backend="serial",
    )  # fmt: skip
    np.testing.assert_array_equal(default_float, expected(dem, NODATA, 5000).astype(np.float64))


def test_an_integer_output_that_cannot_hold_the_nodata_needs_out_nodata(tmp_path: Path) -> None:
    source = write_geotiff(tmp_path / "dem.tif", dem_with_holes((40, 40)), nodata=NODATA)
    with pytest.raises(tilewise.ArgumentError, match=r"out_nodata.*uint8 output cannot hold"):
        tilewise.map_tiles(
            mean3, source, tile=16, halo=1, dtype="uint8", out=tmp_path / "m.tif", backend="serial"
        )
    assert list(tmp_path.iterdir()) == [source]
    out = tilewise.map_tiles(
        lambda b: np.clip(mean3(b) / 4, 0, 254), source, tile=16, halo=1, dtype="uint8",
        out_nodata=255, out=tmp_path / "m.tif", backend="serial",
    )  # fmt: skip
    data, raster = read_back(out)
    assert raster.nodata == 255
    assert data.dtype == np.uint8
    assert np.array_equal(data == 255, expected(dem_with_holes((40, 40)), NODATA, 255) == 255)


# --- compression and COG -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "level"), [("zstd", None), ("zstd", 3), ("deflate", 9), ("lzw", None)]
)
def test_every_lossless_codec_decodes_to_the_uncompressed_result(
    codec: str, level: int | None, tmp_path: Path
) -> None:
    dem = dem_with_holes()
    source = write_geotiff(tmp_path / "dem.tif", dem, nodata=NODATA)
    plain = tilewise.map_tiles(mean3, source, tile=TILE, halo=1, out=tmp_path / "plain.tif")
    packed = tilewise.map_tiles(
        mean3, source, tile=TILE, halo=1, out=tmp_path / "packed.tif",
        compression=codec, level=level,
    )  # fmt: skip
    unpacked, raster = read_back(packed)
    assert raster.compression.name == codec
    assert raster.crs == UTM
    assert raster.nodata == NODATA
    assert raster.block_shapes == [(256, 256)]
    np.testing.assert_array_equal(unpacked, read_back(plain)[0])
    assert packed.stat().st_size < plain.stat().st_size / 1.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dem.tif", "packed.tif", "plain.tif"]


@pytest.mark.parametrize(("tile", "tiff_tile"), [(512, 512), (768, 256)])
@pytest.mark.parametrize("backend", ["serial", "threads", "processes"])
def test_workers_encode_the_tiles_when_run_tiles_cover_whole_tiff_tiles(
    tile: int, tiff_tile: int, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dem = dem_with_holes((1100, 1300))
    source = write_geotiff(tmp_path / "dem.tif", dem, nodata=NODATA)
    plain = tilewise.map_tiles(mean3, source, tile=tile, halo=1, out=tmp_path / "plain.tif")

    def no_last_step(*args: object) -> None:
        raise AssertionError("the tiles were encoded after the run, not by its workers")

    monkeypatch.setattr("tilewise.io.tiff.encode", no_last_step)
    packed = tilewise.map_tiles(
        mean3, source, tile=tile, halo=1, out=tmp_path / "packed.tif", compression="zstd",
        backend=backend,
    )  # fmt: skip
    unpacked, raster = read_back(packed)
    assert raster.compression.name == "zstd"
    assert (raster.crs, raster.nodata) == (UTM, NODATA)
    assert raster.block_shapes == [(tiff_tile, tiff_tile)]
    np.testing.assert_array_equal(unpacked, read_back(plain)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dem.tif", "packed.tif", "plain.tif"]


@pytest.mark.parametrize("tile", [TILE, 256])  # encoded after the run, and by the workers
@pytest.mark.parametrize("dtype", ["int64", "complex64", "uint8"])
def test_dtypes_without_a_predictor_are_compressed_without_one(
    tile: int, dtype: str, tmp_path: Path
) -> None:
    image = np.random.default_rng(5).integers(0, 200, (300, 520)).astype(dtype)
    out = tilewise.map_tiles(
        lambda b: b, image, tile=tile, out=tmp_path / "i.tif", compression="deflate"
    )
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        predicted = page.predictor != 1
        np.testing.assert_array_equal(page.asarray(), image)
    assert predicted == (dtype == "uint8")


def test_jpeg_stores_8_bit_images_close_to_the_result(tmp_path: Path) -> None:
    image = ndi.gaussian_filter(np.random.default_rng(4).random((200, 300, 3)), (4, 4, 0)) * 255
    source = write_geotiff(tmp_path / "rgb.tif", image.astype(np.uint8))
    out = tilewise.map_tiles(
        lambda b: b, source, tile=TILE, out=tmp_path / "j.tif", compression="jpeg", level=95,
        backend="threads",
    )  # fmt: skip
    data, raster = read_back(out)
    assert raster.compression.name == "jpeg"
    assert np.abs(data.astype(int) - image.astype(np.uint8)).mean() < 2  # lossy, and close


@pytest.mark.parametrize("resampling", ["average", "nearest"])
def test_cog_true_writes_a_valid_cloud_optimized_geotiff(resampling: str, tmp_path: Path) -> None:
    dem = dem_with_holes((1300, 1100))
    source = write_geotiff(tmp_path / "dem.tif", dem, nodata=NODATA, compress="deflate")
    out = tilewise.map_tiles(
        mean3, source, tile=256, halo=1, out=tmp_path / "mean.tif", cog=True,
        compression="zstd", overview_resampling=resampling, backend="threads",
    )  # fmt: skip
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    data, raster = read_back(out)
    assert raster.crs == UTM
    assert raster.transform == NORTH_UP
    assert raster.nodata == NODATA
    assert raster.overviews == [2, 4]
    assert raster.compression.name == "zstd"
    np.testing.assert_array_equal(data, expected(dem, NODATA, NODATA))
    with rasterio.open(out, overview_level=1) as level:  # built from the result
        quarter = level.read(1)
        assert quarter.shape == (325, 275)
        if resampling == "nearest":
            assert set(np.unique(quarter)) <= set(np.unique(data))


def test_the_cli_compresses_makes_a_cog_and_info_shows_the_georeferencing(
    tmp_path: Path,
) -> None:
    dem = dem_with_holes((600, 700))
    source = write_geotiff(tmp_path / "dem.tif", dem.astype(np.float32), transform=ROTATED)
    (tmp_path / "filters.py").write_text(
        "import numpy as np\nfrom scipy import ndimage as ndi\n"
        "def mean3(block):\n"
        "    return ndi.correlate(block, np.full((3, 3), 1 / 9, block.dtype), mode='constant')\n"
    )
    command = [
        sys.executable, "-m", "tilewise", "apply", "filters.py:mean3", str(source), "slope.tif",
        "--halo", "1", "--tile", "128", "--compress", "zstd", "--cog", "--nodata", "-9999",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert cog_validate(str(tmp_path / "slope.tif"))[0]
    data, raster = read_back(tmp_path / "slope.tif")
    assert raster.nodata == NODATA
    assert raster.transform == ROTATED
    np.testing.assert_array_equal(data, expected(dem, NODATA, NODATA))

    info = subprocess.run(
        [sys.executable, "-m", "tilewise", "info", "slope.tif"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert info.returncode == 0, info.stderr
    lines = dict(line.split(None, 1) for line in info.stdout.splitlines())
    assert lines["crs"] == UTM
    assert lines["transform"] == "30, 5, 500000, 3, -30, 4000000"
    assert lines["nodata"] == "-9999"
    assert "zstd" in lines["format"]


# --- refused before any tile runs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compression": "jpeg", "dtype": "float32"}, "compression='jpeg' stores 8-bit images"),
        ({"compression": "brotli"}, "compression='brotli': must be one of"),
        ({"compression": "zstd", "level": 30}, "level=30: compression='zstd' takes 1 to 22"),
        ({"compression": "lzw", "level": 3}, "level=3: compression='lzw' has no levels"),
        ({"level": 3}, "level=3: only with compression="),
        ({"cog": "yes"}, "cog='yes': must be True or False"),
        ({"overview_resampling": "gauss", "cog": True}, "overview_resampling='gauss'"),
        ({"overview_resampling": "nearest"}, "only cog=True outputs have overviews"),
        ({"nodata": -1}, "nodata=-1: a uint8 image cannot hold it"),
        ({"nodata": 0.5}, "nodata=0.5: a uint8 image cannot hold it"),
        ({"nodata": "zero"}, "nodata='zero': must be a number"),
        ({"out_nodata": "input"}, "out_nodata='input': must be a number"),
        ({"out_nodata": 300, "dtype": "uint8"}, "out_nodata=300.0: the uint8 output cannot"),
    ],
)
def test_bad_geospatial_options_are_refused_before_any_tile_runs(
    options: dict[str, Any], message: str, tmp_path: Path
) -> None:
    source = write_geotiff(tmp_path / "in.tif", np.ones((40, 40), np.uint8))
    calls = []

    def record(block: np.ndarray) -> np.ndarray:
        calls.append(1)
        return block

    with pytest.raises((tilewise.ArgumentError, tilewise.ArgumentTypeError), match=message):
        tilewise.map_tiles(record, source, tile=16, out=tmp_path / "out.tif", backend="serial",
                           **options)  # fmt: skip
    assert calls == []
    assert list(tmp_path.iterdir()) == [source]


@pytest.mark.parametrize("out", ["out.npy", "out.zarr", None])
def test_compression_and_cog_are_only_for_tif_outputs(out: str | None, tmp_path: Path) -> None:
    for options in ({"cog": True}, {"compression": "zstd"}):
        with pytest.raises(tilewise.ArgumentError, match="only for a \\.tif out="):
            tilewise.map_tiles(
                np.sqrt, np.ones((8, 8)), tile=4, backend="serial",
                out=None if out is None else tmp_path / out, **options,
            )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


# --- kill -9, then resume, compressed -------------------------------------------------------------

TILE_FUNCTION = """
import os
import numpy as np
from scipy import ndimage as ndi

def mean3(block):
    with open(os.environ["TW_LOG"], "a") as log:
        log.write("tile\\n")
    with open(os.environ["TW_LOG"]) as log:
        computed = sum(1 for _ in log)
    if computed > int(os.environ["TW_BLOCK_AFTER"]):
        open(os.environ["TW_READY"], "w").close()  # tell the test: tiles are done, kill me
        open(os.environ["TW_NEVER"]).read()  # block: nobody ever writes this FIFO
    return ndi.correlate(block, np.full((3, 3), 1 / 9, block.dtype), mode="constant")
"""


# Commit each tile before the next is recorded, so that the kill leaves some recorded.
RUN_CLI = """
import sys
import tilewise.journal
tilewise.journal.COMMIT_INTERVAL = 0
from tilewise.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.posix
@pytest.mark.parametrize(
    ("tile", "encoded_by", "cog"),
    [
        (64, "the last step, from the uncompressed partial", False),
        (256, "the workers", False),
        (256, "the workers", True),  # and their first overview, and the file the next is made of
    ],
)
def test_a_compressed_run_killed_with_sigkill_resumes_to_the_same_pixels(
    tile: int, encoded_by: str, cog: bool, tmp_path: Path
) -> None:
    grid = 5 if cog else 4  # a COG of two overviews: one made by the workers, one at the end
    dem = dem_with_holes((tile * (grid - 1) + 8, tile * (grid - 1) + 38))
    write_geotiff(tmp_path / "dem.tif", dem, nodata=NODATA, compress="deflate")
    (tmp_path / "tiles.py").write_text(TILE_FUNCTION)
    (tmp_path / "run.py").write_text(RUN_CLI)
    os.mkfifo(tmp_path / "ready")
    os.mkfifo(tmp_path / "never")
    env = {
        **os.environ,
        "TW_LOG": str(tmp_path / "first.log"),
        "TW_READY": str(tmp_path / "ready"),
        "TW_NEVER": str(tmp_path / "never"),
        "TW_BLOCK_AFTER": "5",
    }
    command = [
        sys.executable, "run.py", "apply", "tiles.py:mean3", "dem.tif", "out.tif",
        "--tile", str(tile), "--halo", "1", "--backend", "serial", "--compress", "zstd",
        *(["--cog"] if cog else []),
    ]  # fmt: skip
    run = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True)
    try:
        with open(tmp_path / "ready") as ready:
            ready.read()
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert run.returncode == -signal.SIGKILL
    assert not (tmp_path / "out.tif").exists()
    partial = tmp_path / "out.tif.tilewise-partial"
    assert partial.is_dir() == (encoded_by == "the workers"), encoded_by

    env["TW_BLOCK_AFTER"], env["TW_LOG"] = "1000", str(tmp_path / "second.log")
    resumed = subprocess.run(
        [*command, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert len((tmp_path / "second.log").read_text().splitlines()) == grid * grid - 5
    data, raster = read_back(tmp_path / "out.tif")
    assert raster.compression.name == "zstd"
    np.testing.assert_array_equal(data, expected(dem, NODATA, NODATA))
    if cog:
        uninterrupted = tilewise.map_tiles(
            mean3, tmp_path / "dem.tif", tile=tile, halo=1, out=tmp_path / "whole.tif",
            compression="zstd", cog=True,
        )  # fmt: skip
        assert raster.overviews == [2, 4]
        for overview in (0, 1):
            with (
                rasterio.open(tmp_path / "out.tif", overview_level=overview) as resumed_level,
                rasterio.open(uninterrupted, overview_level=overview) as whole_level,
            ):
                np.testing.assert_array_equal(resumed_level.read(), whole_level.read())
        uninterrupted.unlink()
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out"))
    assert left == ["out.tif"]
    assert math.isfinite(raster.nodata)
