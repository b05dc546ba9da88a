"""``tilewise demo``: slope, aspect and hillshade of a synthetic terrain, pixel by pixel.

The three are plain Python functions of one pixel, as a scientist writes them
before reaching for vectorised numpy, made into compiled kernels by
:func:`tilewise.pixelwise`. The demo runs them on a deterministic fractal
terrain (24 megapixels by default), writes a hillshade preview and the slope,
the terrain as a GeoTIFF and its slope as a Cloud-Optimized GeoTIFF from it,
and times the job three ways: the plain Python loop, the same Python
functions on every core through the ``processes`` backend, and compiled.
The two Python ways would take minutes on the whole image, so they are
timed on a strip of it and extrapolated, and labelled so.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tilewise import map_tiles, pixelwise

#: Metres between pixel centres.
CELL_SIZE = 10.0
#: The sun: from the north-west (315 degrees clockwise from north), 45 degrees
#: above the horizon, as a unit vector (east, north, up).
SUN_AZIMUTH, SUN_ALTITUDE = 315.0, 45.0
SUN_EAST = math.cos(math.radians(SUN_ALTITUDE)) * math.sin(math.radians(SUN_AZIMUTH))
SUN_NORTH = math.cos(math.radians(SUN_ALTITUDE)) * math.cos(math.radians(SUN_AZIMUTH))
SUN_UP = math.sin(math.radians(SUN_ALTITUDE))

#: Rows of the image the Python loop and the processes run are timed on.
PYTHON_SAMPLE_ROWS = 100
PROCESSES_SAMPLE_ROWS = 400
#: The preview's longest side, in pixels.
PREVIEW_SIZE = 2000
#: Where the GeoTIFF part places the terrain: UTM zone 33N, north up, its
#: north-west corner at these easting and northing, in metres.
CRS = "EPSG:32633"
WEST, NORTH = 500_000.0, 5_200_000.0


# Rows run north to south and columns west to east; gradients are central
# differences over two cells, in metres per metre.


@pixelwise(radius=1, dtype=np.float32)
def slope(z, y, x):
    """Steepest slope at the pixel, in degrees."""
    dzdx = (z[y, x + 1] - z[y, x - 1]) / (2 * CELL_SIZE)
    dzdy = (z[y + 1, x] - z[y - 1, x]) / (2 * CELL_SIZE)
    return math.degrees(math.atan(math.sqrt(dzdx * dzdx + dzdy * dzdy)))


@pixelwise(radius=1, dtype=np.float32)
def aspect(z, y, x):
    """Direction the slope faces (downhill), in degrees clockwise from north; 0 where flat."""
    dzdx = (z[y, x + 1] - z[y, x - 1]) / (2 * CELL_SIZE)
    dzdy = (z[y + 1, x] - z[y - 1, x]) / (2 * CELL_SIZE)
    return math.degrees(math.atan2(-dzdx, dzdy)) % 360.0


@pixelwise(radius=1, dtype=np.float32)
def hillshade(z, y, x):
    """Sunlight on the pixel's surface (Lambert's cosine), from 0 (in shadow) to 1."""
    dzdx = (z[y, x + 1] - z[y, x - 1]) / (2 * CELL_SIZE)
    dzdy = (z[y + 1, x] - z[y - 1, x]) / (2 * CELL_SIZE)
    # The surface normal (east, north, up) is (-dzdx, dzdy, 1): rows run south.
    light = (SUN_UP - dzdx * SUN_EAST + dzdy * SUN_NORTH) / math.sqrt(1 + dzdx * dzdx + dzdy * dzdy)
    return max(light, 0.0)


KERNELS: tuple[Any, ...] = (slope, aspect, hillshade)  # pixelwise kernels


def terrain(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A deterministic fractal elevation model in metres, float32, of hills about 20 degrees steep.

    Gaussian noise shaped to a 1/f^2 spectrum, with wavelengths below ~100
    pixels damped so that hills, not pixel noise, catch the light.

    >>> dem = terrain(64, 48)
    >>> dem.shape, dem.dtype, bool(np.array_equal(dem, terrain(64, 48)))
    ((64, 48), dtype('float32'), True)
    """
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    freq = np.hypot(fy, fx)
    freq[0, 0] = 1.0
    spectrum = rng.standard_normal(freq.shape) + 1j * rng.standard_normal(freq.shape)
    spectrum *= freq**-2.0 * np.exp(-((freq / 0.01) ** 2))
    spectrum[0, 0] = 0.0
    dem = np.fft.irfft2(spectrum, s=(rows, cols))
    rms_gradient = math.sqrt(
        float(np.mean(np.diff(dem, axis=0) ** 2) + np.mean(np.diff(dem, axis=1) ** 2))
    )
    dem *= math.tan(math.radians(20.0)) * CELL_SIZE / max(rms_gradient, 1e-300)
    return dem.astype(np.float32)


@dataclass(frozen=True)
class Timing:
    """Seconds for the whole image; measured on ``sample_rows`` rows when given."""

    method: str
    seconds: float
    sample_rows: int | None = None


def run(rows: int = 4000, cols: int = 6000, out_dir: Path = Path("out")) -> list[Timing]:
    """Compute slope, aspect and hillshade of the terrain, write them, print the timings."""
    try:
        from PIL import Image
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            'Pillow is needed for the demo\'s PNG preview: pip install "tilewise[io]"'
        ) from exc
    show_progress = sys.stderr.isatty()
    # The CPUs this process may use, as map_tiles counts them.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    start = time.perf_counter()
    dem = terrain(rows, cols)
    print(
        f"terrain: {rows} x {cols} = {rows * cols / 1e6:.1f} megapixels, float32 "
        f"({time.perf_counter() - start:.1f} s to make)",
        flush=True,
    )

    compile_s = _seconds(lambda: [kernel.loop_for(dem.dtype, dem.shape) for kernel in KERNELS])
    if _loaded_from_disk(dem):
        print(f"loading the three compiled kernels from numba's disk cache: {compile_s:.1f} s")
    else:
        print(f"compiling the three kernels: {compile_s:.1f} s (once: numba caches them on disk)")

    results: dict[str, np.ndarray] = {}

    def compiled() -> None:
        for kernel in KERNELS:
            results[kernel.__name__] = kernel(dem, progress=show_progress)

    timings = [
        _python_loop(dem, PYTHON_SAMPLE_ROWS),
        _processes(dem, PROCESSES_SAMPLE_ROWS, cpus, show_progress),
        Timing(f"compiled by tilewise.pixelwise, {cpus} threads", _seconds(compiled)),
    ]

    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "slope.npy", results["slope"])
    png = out_dir / "hillshade.png"
    preview = Image.fromarray(np.round(results["hillshade"] * 255).astype(np.uint8))
    preview.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    preview.save(png)
    print(_table(timings, rows, cols))
    print(
        f"wrote {png} ({preview.width} x {preview.height} preview) and "
        f"{out_dir / 'slope.npy'} (degrees, float32)"
    )
    _slope_cog(dem, out_dir, show_progress)
    return timings


def _slope_cog(dem: np.ndarray, out_dir: Path, show_progress: bool) -> None:
    """The terrain as a GeoTIFF, and its slope from it as a Cloud-Optimized GeoTIFF."""
    try:
        import rasterio
        from rasterio.transform import from_origin
    except ModuleNotFoundError:
        print('the GeoTIFF part needs rasterio: pip install "tilewise[geo]"')
        return
    dem_path, cog = out_dir / "dem.tif", out_dir / "slope.tif"
    with rasterio.open(
        dem_path,
        "w",
        driver="GTiff",
        height=dem.shape[0],
        width=dem.shape[1],
        count=1,
        dtype=dem.dtype,
        crs=CRS,
        transform=from_origin(WEST, NORTH, CELL_SIZE, CELL_SIZE),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="zstd",
        num_threads="all_cpus",
    ) as raster:
        raster.write(dem, 1)
    seconds = _seconds(
        lambda: map_tiles(
            slope, dem_path, out=cog, cog=True, compression="zstd", progress=show_progress
        )
    )
    print(
        f"\nwrote {dem_path} (the terrain in {CRS}) and, from it, {cog}: the slope as a "
        f"Cloud-Optimized GeoTIFF, zstd, with the terrain's CRS and transform ({seconds:.1f} s)"
    )
    from tilewise.cli import main

    print(f"$ tilewise info {cog}", flush=True)
    main(["info", str(cog)])


def _loaded_from_disk(dem: np.ndarray) -> bool:
    stats = [getattr(kernel.loop_for(dem.dtype, dem.shape), "stats", None) for kernel in KERNELS]
    return all(stat is not None and sum(stat.cache_hits.values()) > 0 for stat in stats)


def _python_loop(dem: np.ndarray, sample_rows: int) -> Timing:
    """The three functions as plain Python loops, on a strip of the image."""
    strip = _strip(dem, sample_rows)
    kernels = [_as_python(kernel) for kernel in KERNELS]
    seconds = _seconds(lambda: [kernel(strip) for kernel in kernels])
    return _extrapolated("plain Python loop, 1 core", seconds, strip, dem)


def _processes(dem: np.ndarray, sample_rows: int, cpus: int, show_progress: bool) -> Timing:
    """The same Python functions on every core, through the processes backend."""
    method = f"same Python functions, {cpus} processes"
    strip = _strip(dem, sample_rows)
    kernels = [_as_python(kernel) for kernel in KERNELS]
    for kernel in kernels:  # start the worker processes, which later calls reuse
        map_tiles(kernel, strip[:2], backend="processes")
    seconds = _seconds(
        lambda: [
            map_tiles(kernel, strip, tile=128, backend="processes", progress=show_progress)
            for kernel in kernels
        ]
    )
    return _extrapolated(method, seconds, strip, dem)


def _as_python(kernel: Any) -> Any:
    """The same function and settings as ``kernel``, run as a plain Python loop."""
    return pixelwise(
        radius=kernel.radius, dtype=kernel.dtype, boundary=kernel.boundary, compile=False
    )(kernel.func)


def _extrapolated(method: str, seconds: float, strip: np.ndarray, dem: np.ndarray) -> Timing:
    if len(strip) == len(dem):
        return Timing(method, seconds)
    return Timing(method, seconds * len(dem) / len(strip), len(strip))


def _strip(dem: np.ndarray, rows: int) -> np.ndarray:
    middle = dem.shape[0] // 2
    return dem[max(0, middle - rows // 2) : middle + rows - rows // 2]


def _seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _table(timings: list[Timing], rows: int, cols: int) -> str:
    reference = timings[0].seconds
    lines = [
        "",
        f"slope, aspect and hillshade of {rows} x {cols} pixels:",
        f"  {'method':<46} {'seconds':>10} {'speed-up':>9}",
    ]
    for timing in timings:
        mark = "*" if timing.sample_rows else " "
        ratio = reference / timing.seconds if reference else None
        speedup = "-" if ratio is None else f"{ratio:.1f}x" if ratio < 10 else f"{ratio:,.0f}x"
        lines.append(f"  {timing.method:<46} {timing.seconds:>9.2f}{mark} {speedup:>9}")
    samples = sorted({t.sample_rows for t in timings if t.sample_rows})
    if samples:
        lines.append(
            f"  * timed on a strip of {' and '.join(map(str, samples))} rows, "
            f"extrapolated to all {rows} rows"
        )
    return "\n".join(lines) + "\n"
