"""``tilewise demo``: runs end to end, writes its preview and slope, and labels its timings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rio_cogeo.cogeo import cog_validate

from tilewise import demo
from tilewise.cli import main


def slope_reference(dem: np.ndarray) -> np.ndarray:
    """Degrees, by central differences over an edge-repeating (scipy 'reflect') padding."""
    p = np.pad(dem.astype(np.float64), 1, mode="symmetric")
    east = (p[1:-1, 2:] - p[1:-1, :-2]) / (2 * demo.CELL_SIZE)
    south = (p[2:, 1:-1] - p[:-2, 1:-1]) / (2 * demo.CELL_SIZE)
    return np.degrees(np.arctan(np.hypot(east, south)))


@pytest.mark.slow
def test_demo_command_writes_preview_slope_and_table(tmp_path: Path) -> None:
    # More rows than either timing sample, so both are extrapolated.
    rows, cols = demo.PROCESSES_SAMPLE_ROWS + 50, 1100  # wide enough for an overview
    done = subprocess.run(
        [sys.executable, "-m", "tilewise", "demo", "--size", f"{rows},{cols}", "--out", tmp_path],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    table = done.stdout
    for label in ("plain Python loop, 1 core", "processes", "compiled by tilewise.pixelwise"):
        assert label in table
    assert f"extrapolated to all {rows} rows" in table

    with Image.open(tmp_path / "hillshade.png") as png:
        assert png.size == (cols, rows)
        assert png.mode == "L"
        shade = np.asarray(png)
    assert shade.std() > 10  # lit and shaded slopes, not a flat grey

    slope = np.load(tmp_path / "slope.npy")
    assert slope.dtype == np.float32
    np.testing.assert_allclose(slope, slope_reference(demo.terrain(rows, cols)), atol=1e-3)

    cog = tmp_path / "slope.tif"
    valid, errors, _ = cog_validate(cog)
    assert valid, errors
    with rasterio.open(tmp_path / "dem.tif") as dem, rasterio.open(cog) as raster:
        assert raster.crs == dem.crs == rasterio.crs.CRS.from_string(demo.CRS)
        assert raster.transform == dem.transform
        assert raster.compression.value == "ZSTD"
        np.testing.assert_array_equal(raster.read(1), slope)
    assert f"$ tilewise info {cog}" in table
    assert re.search(rf"^crs +{demo.CRS}$", table, re.MULTILINE)
    assert re.search(r"^overviews +1/2", table, re.MULTILINE)


def test_size_is_n_or_rows_cols(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sizes: list[tuple[int, int]] = []
    monkeypatch.setattr(demo, "run", lambda rows, cols, out_dir: sizes.append((rows, cols)))
    assert main(["demo", "--size", "40", "--out", str(tmp_path)]) == 0
    assert main(["demo", "--size", "40,60", "--out", str(tmp_path)]) == 0
    assert main(["demo"]) == 0
    assert sizes == [(40, 40), (40, 60), (4000, 6000)]


@pytest.mark.parametrize("size", ["2", "0,10", "ten"])
def test_bad_size_is_a_usage_error(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["demo", "--size", size])
    assert caught.value.code == 2
    assert "--size" in capsys.readouterr().err


def test_terrain_is_deterministic_and_hilly() -> None:
    dem = demo.terrain(200, 300)
    np.testing.assert_array_equal(dem, demo.terrain(200, 300))
    assert not np.array_equal(dem, demo.terrain(200, 300, seed=1))
    assert 10 < float(np.median(slope_reference(dem))) < 30  # degrees
