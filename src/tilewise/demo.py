"""``tilewise demo``: a synthetic 24-megapixel terrain, shaded tile by tile on every core."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tilewise._api import map_tiles
from tilewise._optional import import_optional


def terrain(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A deterministic fractal elevation model (1/f^beta noise), in metres."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    freq = np.hypot(fy, fx)
    freq[0, 0] = 1.0
    spectrum = rng.standard_normal(freq.shape) + 1j * rng.standard_normal(freq.shape)
    spectrum /= freq**1.6
    spectrum[0, 0] = 0.0
    dem = np.fft.irfft2(spectrum, s=(rows, cols))
    dem *= 800.0 / np.ptp(dem)
    return dem.astype(np.float32)


def hillshade(block: np.ndarray, azimuth: float = 315.0, altitude: float = 45.0) -> np.ndarray:
    """Lambertian shading of a block with one pixel of halo; 0 (dark) to 1 (lit)."""
    dzdy, dzdx = np.gradient(block.astype(np.float64), 10.0)
    slope = np.arctan(np.hypot(dzdx, dzdy))
    aspect = np.arctan2(-dzdx, dzdy)
    az, alt = np.radians(azimuth), np.radians(altitude)
    shade = np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)
    return np.clip(shade, 0.0, 1.0).astype(np.float32)


def run(rows: int = 6000, cols: int = 4000, out_dir: Path = Path("out")) -> Path:
    """Shade the terrain through ``map_tiles``, compare with the whole-array call, save a PNG."""
    image_module = import_optional("PIL.Image", "writing the demo's PNG")
    dem = terrain(rows, cols)
    print(f"terrain: {rows}x{cols} ({rows * cols / 1e6:.1f} MP) float32")

    start = time.perf_counter()
    whole = hillshade(np.pad(dem, 1, mode="edge"))[1:-1, 1:-1]
    serial_s = time.perf_counter() - start

    start = time.perf_counter()
    tiled = map_tiles(
        hillshade,
        dem,
        tile=(512, cols),
        halo=1,
        boundary="nearest",
        backend="threads",
        progress=True,
    )
    tiled_s = time.perf_counter() - start
    if not np.array_equal(whole, tiled):
        raise AssertionError("the tiled result differs from the whole-array call")

    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "hillshade.png"
    image_module.fromarray((tiled * 255).astype(np.uint8)).save(png)
    print(f"whole-array call : {serial_s:6.2f} s")
    print(f"map_tiles threads: {tiled_s:6.2f} s  ({serial_s / tiled_s:.2f}x), identical result")
    print(f"wrote {png}")
    return png
