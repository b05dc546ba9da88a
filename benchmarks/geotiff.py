"""A DEM GeoTIFF to its slope as a Cloud-Optimized GeoTIFF: tilewise against what GIS users build.

``python -m benchmarks.geotiff`` writes an elevation model (float32, zstd,
512-pixel tiles, EPSG:32633, 10 m cells) at each size asked for, then times
four ways of computing its slope (Horn's method, in degrees: xarray-spatial's
formula) into a zstd GeoTIFF, side by side in one run:

- ``tilewise``: ``map_tiles(horn_slope, dem, out=cog, cog=True, compression="zstd")``,
  the kernel a :func:`tilewise.pixelwise` one;
- ``tilewise-tiled``: the same with ``compression="zstd"`` alone: a tiled
  GeoTIFF without overviews, what the rasterio loop writes;
- ``rasterio-loop``: the windowed loop users write (read each 512-pixel block
  with its 1-pixel halo, slope in numpy, write the block), GDAL compressing
  and decompressing on every CPU (``NUM_THREADS=ALL_CPUS``); a tiled zstd
  GeoTIFF, not a COG;
- ``npy-gdal``: the slope in numpy, strip by strip of the DEM read by
  rasterio, into a ``.npy``, then translated to a COG by GDAL's COG driver, which is what
  ``gdal_translate -of COG -co COMPRESS=ZSTD -co NUM_THREADS=ALL_CPUS`` runs
  (its ``CreateCopy``, reached through ``rasterio.shutil.copy`` over a raw
  VRT of the ``.npy``);
- ``xarray-spatial``: ``xrspatial.slope`` of a dask-backed DataArray read by
  ``rioxarray.open_rasterio(chunks=...)``, written by ``rio.to_raster(driver="COG")``
  (which computes the dask array on its threads, then hands it to GDAL whole:
  GDAL's COG driver cannot be written chunk by chunk, so rioxarray's
  ``lock=`` chunk-wise writing refuses a COG).

Every COG is zstd level 9 with the floating-point predictor and 512-pixel
blocks. Each method runs in a process of its own, which samples its whole
process tree's pinned memory (:mod:`benchmarks.memory`) over each timed run,
after a warm-up on a small DEM (numba's compile is not timed). Each result
is checked against numpy's slope on a window of the image's interior.
The report (``results.md``, ``results.json``) goes to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.child import report_to_parent, run_child
from benchmarks.machine import machine
from benchmarks.memory import TreeSampler
from benchmarks.report import write_side_by_side
from tilewise import map_tiles, pixelwise
from tilewise._cpus import available_cpus

#: Metres between pixels, and the DEM's projection and corner.
CELL = 10.0
CRS = "EPSG:32633"
WEST, NORTH = 500_000.0, 5_200_000.0
#: Blocks of the DEM, of the outputs and of xarray-spatial's dask chunks.
BLOCK = 512
DASK_CHUNK = 2048
#: The sizes a run may take, as (rows, cols).
SIZES = {"24mp": (6000, 4000), "4gib": (32768, 32768), "small": (1024, 768)}
#: The synthetic terrain repeats with this period: generated once, seamless.
PERIOD = 4096
ZSTD_LEVEL = 9
#: Each method's address space at most, in bytes: below what the machine has.
ADDRESS_SPACE = 20 * 2**30
#: Marks the child's report on its stdout.
PREFIX = "geotiff-bench: "


@pixelwise(radius=1, dtype=np.float32)
def horn_slope(z, y, x):  # numba compiles it: no annotations
    """Slope at one pixel in degrees, by Horn's method over the 3x3 neighbourhood."""
    dzdx = (
        (z[y + 1, x + 1] + 2 * z[y, x + 1] + z[y - 1, x + 1])
        - (z[y + 1, x - 1] + 2 * z[y, x - 1] + z[y - 1, x - 1])
    ) / (8 * CELL)
    dzdy = (
        (z[y - 1, x - 1] + 2 * z[y - 1, x] + z[y - 1, x + 1])
        - (z[y + 1, x - 1] + 2 * z[y + 1, x] + z[y + 1, x + 1])
    ) / (8 * CELL)
    return math.degrees(math.atan(math.sqrt(dzdx * dzdx + dzdy * dzdy)))


def numpy_slope(padded: np.ndarray) -> np.ndarray:
    """Horn's slope of the interior of ``padded`` (one pixel of context on each side), in numpy."""
    z = padded.astype(np.float32, copy=False)
    a, b, c = z[2:, :-2], z[2:, 1:-1], z[2:, 2:]
    d, f = z[1:-1, :-2], z[1:-1, 2:]
    g, h, i = z[:-2, :-2], z[:-2, 1:-1], z[:-2, 2:]
    dzdx = ((c + 2 * f + i) - (a + 2 * d + g)) / np.float32(8 * CELL)
    dzdy = ((g + 2 * h + i) - (a + 2 * b + c)) / np.float32(8 * CELL)
    return np.degrees(np.arctan(np.sqrt(dzdx * dzdx + dzdy * dzdy)))


def write_dem(path: Path, rows: int, cols: int) -> None:
    """A periodic fractal terrain as a zstd tiled GeoTIFF, written strip by strip."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from tilewise import demo

    base = demo.terrain(min(rows, PERIOD), min(cols, PERIOD))
    with rasterio.open(
        path.with_suffix(".part.tif"),
        "w",
        driver="GTiff",
        height=rows,
        width=cols,
        count=1,
        dtype="float32",
        crs=CRS,
        transform=from_origin(WEST, NORTH, CELL, CELL),
        tiled=True,
        blockxsize=BLOCK,
        blockysize=BLOCK,
        compress="zstd",
        predictor=3,
        num_threads="all_cpus",
        bigtiff="if_safer",
    ) as raster:
        for top in range(0, rows, BLOCK):
            height = min(BLOCK, rows - top)
            strip = np.take(base, np.arange(top, top + height) % base.shape[0], axis=0)
            strip = np.take(strip, np.arange(cols) % base.shape[1], axis=1)
            raster.write(strip, 1, window=Window(0, top, cols, height))
    path.with_suffix(".part.tif").replace(path)


def cog_options() -> dict[str, str]:
    """The COG driver's creation options shared by every method that writes a COG."""
    return {
        "COMPRESS": "ZSTD",
        "LEVEL": str(ZSTD_LEVEL),
        "PREDICTOR": "YES",
        "BLOCKSIZE": str(BLOCK),
        "NUM_THREADS": "ALL_CPUS",
        "BIGTIFF": "IF_SAFER",
    }


def run_tilewise(dem: Path, out: Path) -> None:
    map_tiles(horn_slope, dem, out=out, cog=True, compression="zstd", level=ZSTD_LEVEL)


def run_tilewise_tiled(dem: Path, out: Path) -> None:
    map_tiles(horn_slope, dem, out=out, compression="zstd", level=ZSTD_LEVEL)


def run_rasterio_loop(dem: Path, out: Path) -> None:
    import rasterio

    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), rasterio.open(dem) as src:
        profile = {
            **src.profile,
            "tiled": True,
            "blockxsize": BLOCK,
            "blockysize": BLOCK,
            "compress": "zstd",
            "zstd_level": ZSTD_LEVEL,
            "predictor": 3,
            "num_threads": "all_cpus",
            "bigtiff": "if_safer",
        }
        with rasterio.open(out, "w", **profile) as dst:
            for _, window in src.block_windows(1):
                dst.write(numpy_slope(_read_with_halo(src, window)), 1, window=window)


def _read_with_halo(src: Any, window: Any) -> np.ndarray:
    """The window and one pixel around it, mirrored at the image's edges as scipy's "reflect"."""
    from rasterio.windows import Window

    top, left = window.row_off, window.col_off
    bottom, right = top + window.height, left + window.width
    reach = Window.from_slices(
        (max(top - 1, 0), min(bottom + 1, src.height)),
        (max(left - 1, 0), min(right + 1, src.width)),
    )
    block = src.read(1, window=reach)
    pad = (
        (int(top == 0), int(bottom == src.height)),
        (int(left == 0), int(right == src.width)),
    )
    return np.pad(block, pad, mode="symmetric")


def run_npy_gdal(dem: Path, out: Path) -> None:
    import rasterio
    from rasterio.shutil import copy
    from rasterio.windows import Window

    npy = out.with_suffix(".npy")
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), rasterio.open(dem) as src:
        crs, transform = src.crs, src.transform
        slope = np.lib.format.open_memmap(npy, "w+", np.float32, (src.height, src.width))
        for top in range(0, src.height, BLOCK):  # by strips: numpy's temporaries stay small
            strip = Window(0, top, src.width, min(BLOCK, src.height - top))
            slope[top : top + strip.height] = numpy_slope(_read_with_halo(src, strip))
        slope.flush()
        del slope
    vrt = out.with_suffix(".vrt")
    vrt.write_text(_raw_vrt(npy, crs.to_wkt(), transform.to_gdal()), encoding="utf-8")
    copy(str(vrt), str(out), driver="COG", **cog_options())
    npy.unlink()
    vrt.unlink()


def _raw_vrt(npy: Path, wkt: str, geotransform: tuple[float, ...]) -> str:
    """A GDAL VRT reading the float32 ``.npy`` in place, so that GDAL can translate it."""
    mapped = np.load(npy, mmap_mode="r")
    (rows, cols), offset = mapped.shape, mapped.offset
    del mapped
    from xml.sax.saxutils import escape

    return (
        f'<VRTDataset rasterXSize="{cols}" rasterYSize="{rows}">\n'
        f"  <SRS>{escape(wkt)}</SRS>\n"
        f"  <GeoTransform>{', '.join(map(repr, geotransform))}</GeoTransform>\n"
        '  <VRTRasterBand dataType="Float32" band="1" subClass="VRTRawRasterBand">\n'
        f'    <SourceFilename relativeToVRT="1">{npy.name}</SourceFilename>\n'
        f"    <ImageOffset>{offset}</ImageOffset>\n"
        "    <PixelOffset>4</PixelOffset>\n"
        f"    <LineOffset>{4 * cols}</LineOffset>\n"
        "    <ByteOrder>LSB</ByteOrder>\n"
        "  </VRTRasterBand>\n"
        "</VRTDataset>\n"
    )


def run_xarray_spatial(dem: Path, out: Path) -> None:
    import dask
    import rioxarray
    import xarray
    import xrspatial

    with dask.config.set(scheduler="threads"):
        chunks = {"band": 1, "y": DASK_CHUNK, "x": DASK_CHUNK}
        opened = rioxarray.open_rasterio(dem, chunks=chunks, lock=False)
        assert isinstance(opened, xarray.DataArray), "one band, one variable"
        elevation = opened.squeeze("band")
        result = xrspatial.slope(elevation)
        result.rio.write_crs(elevation.rio.crs, inplace=True)
        options = {key.lower(): value for key, value in cog_options().items()}
        # Without lock=, rioxarray computes the dask array (on dask's threads) and
        # hands it to GDAL's COG driver whole: a COG cannot be written chunk by chunk.
        result.rio.to_raster(out, driver="COG", **options)


METHODS: dict[str, Callable[[Path, Path], None]] = {
    "tilewise": run_tilewise,
    "tilewise-tiled": run_tilewise_tiled,
    "rasterio-loop": run_rasterio_loop,
    "npy-gdal": run_npy_gdal,
    "xarray-spatial": run_xarray_spatial,
}
LABELS = {
    "tilewise": "tilewise map_tiles(pixelwise slope) -> COG",
    "tilewise-tiled": "tilewise, compression='zstd' alone -> tiled GeoTIFF",
    "rasterio-loop": "rasterio windowed loop, numpy slope -> tiled GeoTIFF",
    "npy-gdal": "numpy slope -> .npy, then GDAL's COG driver (gdal_translate -of COG)",
    "xarray-spatial": "xarray-spatial slope on rioxarray + dask -> rio.to_raster COG",
}


def measure(method: str, dem: Path, warmup: Path, out: Path, runs: int) -> dict[str, Any]:
    """In this process: a warm-up on the small DEM, then ``runs`` timed runs, each sampled."""
    run = METHODS[method]
    run(warmup, out.with_name("warmup-" + out.name))
    out.with_name("warmup-" + out.name).unlink()
    seconds, pinned, rss, elsewhere = [], [], [], []
    with TreeSampler(os.getpid()) as sampler:
        for _ in range(runs):
            out.unlink(missing_ok=True)
            os.sync()  # the last run's writes reach the disk outside this run's time
            sampler.open()
            start = time.perf_counter()
            run(dem, out)
            seconds.append(time.perf_counter() - start)
            usage = sampler.close()
            pinned.append(usage.pinned)
            rss.append(usage.rss)
            elsewhere.append(usage.elsewhere)
    return {
        "seconds": seconds,
        "pinned": pinned,
        "rss": rss,
        "elsewhere": elsewhere,
        "bytes": out.stat().st_size,
        "error": interior_error(dem, out),
    }


def interior_error(dem: Path, out: Path) -> float:
    """Largest difference, in degrees, from numpy's slope on a window inside the image."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(dem) as src, rasterio.open(out) as result:
        side = min(1024, src.height - 2, src.width - 2)
        top, left = (src.height - side) // 2, (src.width - side) // 2
        padded = src.read(1, window=Window(left - 1, top - 1, side + 2, side + 2))
        got = result.read(1, window=Window(left, top, side, side))
    return float(np.max(np.abs(got.astype(np.float64) - numpy_slope(padded))))


def child(argv: list[str]) -> int:
    method, dem, warmup, out, runs = argv
    # A method that would hold more than the machine has fails with MemoryError instead.
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    report_to_parent(PREFIX, measure(method, Path(dem), Path(warmup), Path(out), int(runs)))
    return 0


def run_method(method: str, dem: Path, warmup: Path, folder: Path, runs: int) -> dict[str, Any]:
    """One method in a process of its own, from the repository's root."""
    out = folder / f"{method}.tif"
    args = [str(dem), str(warmup), str(out), str(runs)]
    report = run_child("benchmarks.geotiff", PREFIX, method, args)
    out.unlink(missing_ok=True)
    return report


def table(size: str, rows: int, cols: int, results: dict[str, dict[str, Any]]) -> list[str]:
    """One size's Markdown table, and its targets."""
    mp = rows * cols / 1e6
    gib = rows * cols * 4 / 2**30
    ours = statistics.median(results["tilewise"]["seconds"])
    lines = [
        f"### {size}: {rows} x {cols} float32 ({mp:.0f} MP, {gib:.2f} GiB)",
        "",
        "| method | median s | MP/s | tilewise's speed over it | pinned MiB | RSS MiB "
        "| output MiB | max error (deg) | CPU elsewhere | runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, result in results.items():
        if "failed" in result:
            lines.append(f"| {LABELS[method]} | did not finish: {result['failed']} |")
            continue
        median = statistics.median(result["seconds"])
        elsewhere = [share for share in result["elsewhere"] if share is not None]
        lines.append(
            f"| {LABELS[method]} | {median:.2f} | {mp / median:.1f} | {median / ours:.2f}x "
            f"| {max(result['pinned']) / 2**20:.0f} | {max(result['rss']) / 2**20:.0f} "
            f"| {result['bytes'] / 2**20:.1f} | {result['error']:.1e} "
            f"| {max(elsewhere, default=0):.0%} | {len(result['seconds'])} |"
        )
    lines += ["", *targets(results), ""]
    return lines


def targets(results: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's targets, each with its ratio and whether it is met."""
    ours = statistics.median(results["tilewise"]["seconds"])
    lines = []
    for method, least in (("rasterio-loop", 2.0), ("npy-gdal", 1.2), ("xarray-spatial", 1.5)):
        if "failed" in results.get(method, {}):
            lines.append(f"- at least {least}x {method}'s speed: {method} did not finish")
        elif method in results:
            ratio = statistics.median(results[method]["seconds"]) / ours
            met = "yes" if ratio >= least else "**no**"
            lines.append(f"- at least {least}x {method}'s speed: {ratio:.2f}x, met: {met}")
    if "npy-gdal" in results and "failed" not in results["npy-gdal"]:
        size = results["tilewise"]["bytes"] / results["npy-gdal"]["bytes"]
        met = "yes" if abs(size - 1) <= 0.05 else "**no**"
        lines.append(f"- output within 5% of GDAL's size: {size:.4f} of it, met: {met}")
    pinned = max(results["tilewise"]["pinned"]) / 2**20
    met = "yes" if pinned <= 400 else "**no**"
    lines.append(f"- tilewise pins at most 400 MiB: {pinned:.0f} MiB, met: {met}")
    return lines


def codec_rate(dem: Path, threads: int) -> float:
    """Megapixels per second zstd at ZSTD_LEVEL encodes a slope on ``threads`` threads.

    The codec alone, with the floating-point predictor, on 512-pixel tiles of
    the slope of a window of ``dem``: no method can write its output faster.
    """
    from concurrent.futures import ThreadPoolExecutor

    import imagecodecs
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(dem) as src:
        side = min(2048, src.height, src.width) // BLOCK * BLOCK
        slope = numpy_slope(src.read(1, window=Window(0, 0, side + 2, side + 2)))[:side, :side]
    tiles = [
        np.ascontiguousarray(slope[y : y + BLOCK, x : x + BLOCK, np.newaxis])
        for y in range(0, side, BLOCK)
        for x in range(0, side, BLOCK)
    ]

    def encode(tile: np.ndarray) -> bytes:
        predicted = imagecodecs.floatpred_encode(tile, axis=-2)
        return bytes(imagecodecs.zstd_encode(predicted.tobytes(), level=ZSTD_LEVEL))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(encode, tiles))  # warm-up
        started = time.perf_counter()
        list(pool.map(encode, tiles * 4))
        seconds = time.perf_counter() - started
    return 4 * side * side / 1e6 / seconds


def codec_line(results: dict[str, dict[str, Any]], rate: float, mp: float) -> str:
    """Whether 2x the rasterio loop is within what the codec allows on this machine."""
    loop = results.get("rasterio-loop", {})
    if "seconds" not in loop:
        return f"- the codec alone encodes {rate:.1f} MP/s on every CPU"
    needed = 2 * mp / statistics.median(loop["seconds"])
    return (
        f"- the codec alone (zstd level {ZSTD_LEVEL}, floating-point predictor, "
        f"{BLOCK}-pixel tiles) encodes {rate:.1f} MP/s on every CPU; 2x the rasterio loop "
        f"needs {needed:.1f} MP/s written, and a COG encodes 4/3 of its pixels (overviews)"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.geotiff", description=__doc__)
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=["24mp", "4gib"])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each method")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/tilewise-geotiff-bench"))
    parser.add_argument("--out", type=Path, default=Path("out/bench-geotiff"))
    args = parser.parse_args(argv)
    if args.methods[0] != "tilewise":
        args.methods = ["tilewise", *(m for m in args.methods if m != "tilewise")]
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    warmup = args.work / "dem-small.tif"
    if not warmup.exists():
        write_dem(warmup, *SIZES["small"])
    started = time.perf_counter()
    report: dict[str, Any] = {}
    rate: float | None = None
    lines = ["## DEM GeoTIFF -> slope COG", ""]
    for size in args.sizes:
        rows, cols = SIZES[size]
        dem = args.work / f"dem-{size}.tif"
        if not dem.exists():
            write_dem(dem, rows, cols)
        results = {}
        for method in args.methods:
            results[method] = run_method(method, dem, warmup, args.work, args.runs)
            outcome = results[method].get("seconds", results[method].get("failed"))
            print(f"{size} {method}: {outcome}", file=sys.stderr, flush=True)
        report[size] = results
        lines += table(size, rows, cols, results)
        if rate is None:
            rate = codec_rate(dem, available_cpus())
        lines[-1:-1] = [codec_line(results, rate, rows * cols / 1e6)]
    packages = ("numpy", "numba", "rasterio", "rioxarray", "xarray-spatial", "dask", "tifffile")
    report["codec_megapixels_per_second"] = rate
    machine_line = f"{machine(packages)}; GDAL {_gdal_version()}"
    write_side_by_side(args.out, lines, report, machine_line, args.runs, started)
    return 0


def _gdal_version() -> str:
    import rasterio

    return str(rasterio.__gdal_version__)


if __name__ == "__main__":
    sys.exit(main())
