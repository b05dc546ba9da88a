"""The ``tilewise`` command line, a thin front end over the public API.

User errors (a missing file, an unknown format, a function that cannot be
found, a refused resume, an OUTPUT that exists) print one line on stderr and
exit with 1; a malformed command line exits with 2 (argparse's convention);
Ctrl-C exits with 130. ``--debug`` shows the traceback instead.

``tilewise apply`` never replaces an existing OUTPUT unless ``--overwrite``
says so, as ``rio`` does: a run that took hours is not lost to a recalled
shell line. The Python API replaces, as ``numpy.save`` does.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import inspect
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np

from tilewise._cpus import available_cpus
from tilewise._plan import BACKENDS, scheduler_address
from tilewise.boundary import BOUNDARIES
from tilewise.errors import TileError, TilewiseError
from tilewise.io.tiff_encode import LEVELS, OVERVIEW_RESAMPLINGS
from tilewise.io.urls import StoreUrl, is_url, redact, state_file, store_url
from tilewise.journal import JOURNAL

APPLY_EXAMPLES = """\
examples:
  tilewise apply scipy.ndimage:median_filter scan.tif smooth.tif --halo 2 -k size=5
  tilewise apply filters.py:slope dem.npy slope.zarr --tile 1024 --halo 1 --boundary nearest
  tilewise apply my_lab.steps:denoise big.zarr clean.npy --workers 8 --resume
  tilewise apply filters.py:slope dem.npy slope.zarr --halo 1 --overwrite
  tilewise apply filters.py:slope /data/dem.zarr /data/slope.zarr --halo 1 --scheduler tcp://sched:8786
  tilewise apply filters.py:slope s3://scenes/dem.zarr s3://scenes/slope.zarr --halo 1 \
      --storage-option endpoint_url=http://localhost:9000

MODULE is an importable module (dotted name) or the path of a .py file; FUNC
is called as FUNC(block) on each tile plus HALO pixels of context, and must
return the block's or the core tile's shape. Formats come from the suffixes:
.npy .tif .tiff .zarr .png .jpg. An existing OUTPUT is refused before any
tile runs; --overwrite replaces it, once the new one is complete. The output
appears only once complete; an interrupted run leaves OUTPUT.tilewise-partial
and OUTPUT.tilewise-journal, and the same command with --resume computes
only the tiles still missing.
With --scheduler, the tiles run on that Dask cluster: its workers read INPUT
and write OUTPUT themselves, so both must be on storage every worker sees at
the same path, or URLs of object storage. A URL OUTPUT (a .zarr store) is
written in place; its journal is a local file (see docs/cluster.md).
"""

INFO_EXAMPLES = """\
examples:
  tilewise info scan.tif
  tilewise info big.zarr --tile 1024 --halo 8 --workers 16
  tilewise info https://example.org/scene-cog.tif
"""


class CommandError(Exception):
    """A user error found by the command line itself: one line, exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not the usage block: the usage is one ``--help`` away."""
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _sizes(text: str) -> int | tuple[int, ...]:
    """``512`` (one for every tiled axis), ``512,256`` (rows, cols) or ``32,256,256``."""
    try:
        parts = [int(part) for part in text.replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if not parts or min(parts) < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected N, ROWS,COLS, or one size per tiled axis, e.g. 512, 512,256 "
            "or 32,256,256"
        )
    return parts[0] if len(parts) == 1 else tuple(parts)


def _positive_sizes(text: str) -> int | tuple[int, ...]:
    size = _sizes(text)
    if min(size if isinstance(size, tuple) else (size,)) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a tile needs at least 1 pixel along each axis")
    return size


def _boundary(text: str) -> str | tuple[str, ...]:
    """One mode, or one per tiled axis: ``wrap,reflect,reflect``."""
    modes = tuple(text.split(","))
    for mode in modes:
        if mode not in BOUNDARIES:
            raise argparse.ArgumentTypeError(
                f"{text!r}: {mode!r} is not one of {', '.join(BOUNDARIES)}"
            )
    return modes[0] if len(modes) == 1 else modes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value


def _scheduler(text: str) -> str:
    try:
        return scheduler_address(text)
    except TilewiseError as exc:
        raise argparse.ArgumentTypeError(str(exc).partition(": ")[2]) from None


def _dtype(text: str) -> np.dtype:
    try:
        return np.dtype(text)
    except TypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: not a numpy dtype (e.g. uint8, float32)"
        ) from None


def _keyword(text: str) -> tuple[str, Any]:
    """``NAME=VALUE``, the value a Python literal when it parses as one, else a string."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE, e.g. size=5")
    return name, _literal(value)


def _literal(value: str) -> Any:
    """``value`` as the Python literal it spells (``True``, ``5``, ``'x'``), else as it is."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _storage_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of fsspec's storage options; ``a.b=V`` sets ``{"a": {"b": V}}``."""
    key, sep, value = text.partition("=")
    if not sep or not all(part.isidentifier() for part in key.split(".")):
        raise argparse.ArgumentTypeError(
            f"{key!r}: expected KEY=VALUE, e.g. anon=True or client_kwargs.region_name=eu-west-1"
        )
    return key, _literal(value)


def _storage_options(pairs: list[tuple[str, Any]]) -> dict[str, Any] | None:
    """The ``storage_options=`` dict of ``--storage-option`` pairs; None without any."""
    if not pairs:
        return None
    options: dict[str, Any] = {}
    for key, value in pairs:
        *parents, last = key.split(".")
        level = options
        for parent in parents:
            level = level.setdefault(parent, {})
            if not isinstance(level, dict):
                raise CommandError(f"--storage-option {key}=...: {parent} is set to a value")
        level[last] = value
    return options


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser = _Parser(
        prog="tilewise",
        description="Run a function over the tiles, or every pixel, of a large image.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_apply(commands, common)
    _add_info(commands, common)
    _add_demo(commands)
    return parser


def _add_apply(commands: Any, common: argparse.ArgumentParser) -> None:
    apply = commands.add_parser(
        "apply",
        parents=[common],
        help="apply FUNC to every tile of INPUT, writing OUTPUT",
        description="Apply a function to every tile of an image file, writing another file, "
        "tile by tile, on every core, with bounded memory.",
        epilog=APPLY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    apply.add_argument("func", metavar="MODULE:FUNC", help="the function, e.g. filters.py:smooth")
    apply.add_argument("input", metavar="INPUT", help="image file or .zarr store, or a URL")
    apply.add_argument(
        "output", metavar="OUTPUT", help="file or .zarr store to write, or a URL of a .zarr store"
    )
    _add_tiling(apply)
    _add_storage(apply)
    apply.add_argument(
        "--boundary",
        type=_boundary,
        default="reflect",
        metavar="MODE",
        help=f"how context beyond the image edge is filled, as scipy.ndimage: "
        f"{', '.join(BOUNDARIES)}, or one per tiled axis, e.g. wrap,reflect,reflect "
        "(default: reflect)",
    )
    apply.add_argument("--cval", type=float, default=0.0, help="fill value for --boundary constant")
    apply.add_argument("--dtype", type=_dtype, help="output dtype (default: FUNC's result's)")
    apply.add_argument(
        "--backend",
        choices=BACKENDS,
        help="where tiles run (default: processes; threads for functions releasing the GIL; "
        "dask with --scheduler)",
    )
    apply.add_argument(
        "--scheduler",
        type=_scheduler,
        metavar="ADDRESS",
        help="run the tiles on the Dask cluster whose scheduler is at ADDRESS, "
        "tcp://HOST:PORT or tls://HOST:PORT (implies --backend dask)",
    )
    apply.add_argument(
        "--resume", action="store_true", help="finish an interrupted run of the same command"
    )
    apply.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT if it exists, once the new one is complete (default: refuse it)",
    )
    _add_geospatial(apply)
    apply.add_argument(
        "-k",
        "--kwarg",
        type=_keyword,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="keyword argument for FUNC (repeatable); VALUE is a Python literal or a string",
    )


def _add_geospatial(apply: argparse.ArgumentParser) -> None:
    geo = apply.add_argument_group("rasters (GeoTIFF outputs)")
    geo.add_argument(
        "--nodata",
        type=_nodata,
        default="input",
        metavar="VALUE",
        help="the value of pixels that carry none, reaching FUNC as NaN (default: the "
        "input GeoTIFF's own; 'none' for none)",
    )
    geo.add_argument(
        "--out-nodata",
        type=float,
        metavar="VALUE",
        help="the output's nodata value (default: the input's if the output holds it, else NaN)",
    )
    geo.add_argument(
        "--compress",
        choices=LEVELS,
        help="compress a .tif OUTPUT's tiles with this codec (jpeg: 8-bit images only)",
    )
    geo.add_argument("--level", type=int, help="the codec's level, or JPEG's quality")
    geo.add_argument(
        "--cog", action="store_true", help="write a .tif OUTPUT as a Cloud-Optimized GeoTIFF"
    )
    geo.add_argument(
        "--overview-resampling",
        choices=OVERVIEW_RESAMPLINGS,
        default="average",
        help="how --cog makes its overviews (default: average)",
    )
    geo.add_argument(
        "--no-metadata",
        action="store_true",
        help="do not carry the input's CRS, transform and band descriptions to OUTPUT",
    )


def _nodata(text: str) -> float | str | None:
    words: dict[str, str | None] = {"none": None, "input": "input"}
    if text.lower() in words:
        return words[text.lower()]
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number or 'none'") from None


def _add_info(commands: Any, common: argparse.ArgumentParser) -> None:
    info = commands.add_parser(
        "info",
        parents=[common],
        help="describe INPUT: shape, dtype, size, tiling plan, memory estimate",
        description="Describe an image file and how tilewise would tile it.",
        epilog=INFO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("input", metavar="INPUT", help="image file or .zarr store, or a URL")
    _add_tiling(info)
    _add_storage(info)


def _add_storage(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--storage-option",
        type=_storage_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an fsspec option for URLs (s3://, gs://, https://...), repeatable, e.g. anon=True, "
        "endpoint_url=http://localhost:9000; VALUE is a Python literal or a string",
    )


def _add_tiling(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--axes",
        default=None,
        metavar="NAMES",
        help="the axes to tile, by name, in order, of a file that names them (a TIFF stack, "
        "OME-TIFF, Zarr with dimension names), e.g. zyx; the others reach FUNC whole",
    )
    command.add_argument(
        "--tile",
        type=_positive_sizes,
        default=512,
        metavar="N",
        help="tile size: N or ROWS,COLS, tiling rows and columns, or one size per axis to "
        "tile, e.g. 32,256,256 for a volume (default: 512)",
    )
    command.add_argument(
        "--halo",
        type=_sizes,
        default=None,
        metavar="N",
        help="context pixels on each side of a tile: N, or one per tiled axis (default: 0)",
    )
    command.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="tiles computed at once (default: the CPUs available)",
    )


# --- tilewise demo -----------------------------------------------------------------------


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="slope, aspect and hillshade of a synthetic terrain, timed three ways",
        description="Compute per-pixel slope, aspect and hillshade of a deterministic fractal "
        "terrain with tilewise.pixelwise kernels, write a hillshade PNG preview and the slope "
        "(.npy) to --out, and compare the time with the plain Python loop and with the same "
        "Python functions on every core.",
    )
    demo.add_argument(
        "--size",
        type=_terrain_size,
        default=(4000, 6000),
        metavar="N",
        help="terrain size: N or ROWS,COLS (default: 4000,6000, 24 megapixels)",
    )
    demo.add_argument(
        "--out", type=Path, default=Path("out"), metavar="DIR", help="output folder (default: out)"
    )


def _terrain_size(text: str) -> tuple[int, int]:
    size = _sizes(text)
    rows, cols = (size, size) if isinstance(size, int) else (size[0], size[-1])
    if isinstance(size, tuple) and len(size) != 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N or ROWS,COLS, e.g. 4000,6000")
    if min(rows, cols) < 3:
        raise argparse.ArgumentTypeError(f"{text!r}: the terrain needs at least 3 rows and columns")
    return (rows, cols)


def _demo(args: argparse.Namespace) -> int:
    from tilewise.demo import run

    rows, cols = args.size
    run(rows, cols, out_dir=args.out)
    return 0


# --- tilewise apply ----------------------------------------------------------------------


def load_function(spec: str) -> Callable[..., Any]:
    """The callable named by ``MODULE:FUNC``; MODULE is a dotted name or a ``.py`` path."""
    module_name, sep, name = spec.rpartition(":")
    if not sep or not module_name or not name:
        raise CommandError(
            f"MODULE:FUNC {spec!r}: expected MODULE:FUNC, e.g. scipy.ndimage:median_filter "
            "or filters.py:smooth"
        )
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        module = _import_file(Path(module_name), spec)
    else:
        module = _import(module_name, spec)
    found: Any = module
    for part in name.split("."):
        if not hasattr(found, part):
            raise CommandError(f"MODULE:FUNC {spec!r}: {module_name!r} has no {name!r}")
        found = getattr(found, part)
    if not callable(found):
        raise CommandError(
            f"MODULE:FUNC {spec!r}: {name!r} is a {type(found).__name__}, not a function"
        )
    return found


def _import(module_name: str, spec: str) -> ModuleType:
    # As `python -m` does, modules in the current folder can be named.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise CommandError(f"MODULE:FUNC {spec!r}: no module named {exc.name!r}") from exc
        raise CommandError(
            f"MODULE:FUNC {spec!r}: importing {module_name!r} failed: {exc}"
        ) from exc
    except Exception as exc:
        raise CommandError(
            f"MODULE:FUNC {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _import_file(path: Path, spec: str) -> ModuleType:
    """Import a ``.py`` file by its name, with its folder on ``sys.path``.

    The module is also registered to travel to worker processes by value, as
    they may not have its folder on their path.
    """
    if not path.is_file():
        raise CommandError(f"MODULE:FUNC {spec!r}: no such file {str(path)!r}")
    if not path.stem.isidentifier():
        raise CommandError(
            f"MODULE:FUNC {spec!r}: {path.name!r} cannot be imported; "
            "rename it to a valid Python name (letters, digits, underscores)"
        )
    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = _import(path.stem, spec)
    if Path(getattr(module, "__file__", "") or "").resolve() != path.resolve():
        raise CommandError(
            f"MODULE:FUNC {spec!r}: a module named {path.stem!r} is already imported from "
            f"{getattr(module, '__file__', None)!r}; rename {path.name!r}"
        )
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    return module


def _with_keywords(func: Callable[..., Any], spec: str, keywords: dict[str, Any]) -> Any:
    """``func`` with the -k keywords bound, refused now if it cannot take them with a block."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # a builtin: its own call says
        signature = None
    if signature is not None:
        try:
            signature.bind(None, **keywords)
        except TypeError as exc:
            shown = " ".join(f"-k {name}={value!r}" for name, value in keywords.items())
            raise CommandError(f"{shown}: {spec} cannot take them: {exc}") from None
    return functools.partial(func, **keywords)


def _apply(args: argparse.Namespace) -> int:
    # Before anything else: importing FUNC may take long, and the answer is known now.
    storage_options = _storage_options(args.storage_option)
    if not args.overwrite and _exists(args.output, storage_options, args.resume):
        shown = redact(args.output)
        raise CommandError(f"OUTPUT={shown!r}: exists; pass --overwrite to replace it")
    from tilewise._api import map_tiles

    func = load_function(args.func)
    if args.kwarg:
        func = _with_keywords(func, args.func, dict(args.kwarg))
    start = time.perf_counter()
    on_terminal = sys.stderr.isatty()
    written = map_tiles(
        func,
        args.input,
        out=args.output,
        storage_options=storage_options,
        tile=args.tile,
        halo=args.halo,
        axes=args.axes,
        boundary=args.boundary,
        cval=args.cval,
        dtype=args.dtype,
        workers=args.workers,
        backend=args.backend,
        scheduler=args.scheduler,
        resume=args.resume,
        nodata=args.nodata,
        out_nodata=args.out_nodata,
        metadata=not args.no_metadata,
        compression=args.compress,
        level=args.level,
        cog=args.cog,
        overview_resampling=args.overview_resampling,
        progress=on_terminal,
    )
    if on_terminal:
        print(f"tilewise: wrote {written} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def _exists(output: str, storage_options: dict[str, Any] | None, resume: bool) -> bool:
    """Whether OUTPUT is there, and not as the partial output of a run ``--resume`` finishes.

    A store behind a URL is written in place: while its journal is there, it is a partial one.
    """
    if not is_url(output):
        return os.path.lexists(output)
    url = store_url(output, storage_options, "OUTPUT")
    if resume and state_file(url, JOURNAL).exists():
        return False
    fs, root = url.filesystem()
    return bool(fs.exists(root))


# --- tilewise info -----------------------------------------------------------------------


def _info(args: argparse.Namespace) -> int:
    from tilewise.grid import Grid
    from tilewise.io import open_source
    from tilewise.io.axes import order as axes_order
    from tilewise.io.image import ImageSource
    from tilewise.io.open import axes_of
    from tilewise.io.reordered import reordered

    source = open_source(args.input, _storage_options(args.storage_option))
    names, tile = axes_of(source).names, args.tile
    if args.axes is not None:
        order = axes_order(args.axes, names, tuple(source.shape))
        source = reordered(source, order)
        names = None if names is None else tuple(names[i] for i in order)
        if isinstance(tile, int):  # the size along each axis named
            tile = (tile,) * len(args.axes)
    tile, halo = _tiling(tile, args.halo, source.shape)
    tiled = source.shape[: len(tile)]
    pixel_bytes = math.prod(source.shape[len(tile) :]) * source.dtype.itemsize
    grid = Grid(shape=tiled, tile=tile, halo=halo)
    workers = min(args.workers or available_cpus(), len(grid))
    core = [min(size, n) for size, n in zip(tile, tiled, strict=True)]
    block = [size + 2 * h for size, h in zip(core, halo, strict=True)]
    # Per running tile: the block read, its padded copy at the edges, the result.
    per_tile = 3 * math.prod(block) * pixel_bytes + _decoded_bytes(source, block, pixel_bytes)
    pixels = math.prod(tiled)
    whole = pixels * pixel_bytes if isinstance(source, ImageSource) else 0
    estimate = workers * (per_tile + whole)
    unit = "megapixels" if len(tile) == 2 else "megavoxels"
    lines = [
        ("file", str(args.input)),
        ("format", _layout(source)),
        ("shape", " x ".join(map(str, source.shape))),
        ("axes", _axes(source.shape, len(tile), names)),
        ("dtype", str(source.dtype)),
        ("size", f"{_bytes(pixels * pixel_bytes)} ({pixels / 1e6:.1f} {unit})"),
        (
            "tiles",
            f"{' x '.join(map(str, grid.counts))} = {_count(len(grid), 'tile')}"
            f" of {' x '.join(map(str, core))}"
            f", blocks with halo {' x '.join(map(str, block))}",
        ),
        (
            "memory",
            f"about {_bytes(estimate)} at peak with {_count(workers, 'worker')} "
            "(one tile at a time each), assuming the result has the "
            "input's dtype and FUNC needs no more than its result; plus ~50 MiB per worker "
            "process for Python itself",
        ),
        *_georeferencing(source),
    ]
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"{name:<{width}}  {value}")
    return 0


def _tiling(
    tile: int | tuple[int, ...], halo: int | tuple[int, ...] | None, shape: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``--tile`` and ``--halo`` as one size per tiled axis, checked against INPUT's shape."""
    tiles = (tile, tile) if isinstance(tile, int) else tile
    if len(tiles) > len(shape):
        raise CommandError(
            f"--tile {','.join(map(str, tiles))}: tiles {len(tiles)} axes, but INPUT has shape "
            f"{shape}"
        )
    halos = (halo or 0,) * len(tiles) if not isinstance(halo, tuple) else halo
    if len(halos) != len(tiles):
        raise CommandError(
            f"--halo {','.join(map(str, halos))}: {len(halos)} values, but --tile tiles "
            f"{len(tiles)} axes; give one halo, or one per tiled axis"
        )
    return tiles, halos


def _axes(shape: tuple[int, ...], tiled: int, named: tuple[str, ...] | None = None) -> str:
    """Which axes are tiled and which reach FUNC whole: ``rows 300, cols 400 tiled; ...``.

    Axes the file names are shown by their names: ``z 40, y 512, x 512 tiled; t 3, c 2 whole``.
    """
    if named is not None:
        names = list(named)
    else:
        names = [f"axis {axis}" for axis in range(tiled - 2)] + ["rows", "cols"]
        if len(shape) == tiled + 1:
            names.append("channels")
        names += [f"axis {axis}" for axis in range(len(names), len(shape))]
    described = [f"{name} {n}" for name, n in zip(names, shape, strict=True)]
    text = f"{', '.join(described[:tiled])} tiled"
    if len(shape) > tiled:
        text += f"; {', '.join(described[tiled:])} whole"
    return text


def _georeferencing(source: Any) -> list[tuple[str, str]]:
    """A GeoTIFF's CRS, transform and nodata value, as rasterio reads them (if installed)."""
    from tilewise.io.geo import nodata_text
    from tilewise.io.open import georeference_of

    georeference = georeference_of(source)
    lines = []
    if georeference.georeferenced:
        try:
            import rasterio
        except ImportError:
            lines.append(("crs", "georeferenced (pip install 'tilewise[geo]' to show it)"))
        else:
            if isinstance(source.path, StoreUrl):  # GDAL reads it through fsspec's file
                fs, path = source.path.filesystem()
                opened = rasterio.open(path, opener=fs)
            else:
                opened = rasterio.open(source.path)
            with opened as raster:
                crs, (gcps, _) = raster.crs, raster.gcps
                affine = ", ".join(f"{v:.12g}" for v in raster.transform[:6])
                lines.append(("crs", "none" if crs is None else crs.to_string()))
                lines.append(("transform", f"{len(gcps)} GCPs" if gcps else affine))
                if overviews := raster.overviews(1):
                    lines.append(("overviews", ", ".join(f"1/{factor}" for factor in overviews)))
    if georeference.nodata is not None:
        lines.append(("nodata", nodata_text(georeference.nodata)))
    return lines


def _layout(source: Any) -> str:
    return str(getattr(source, "layout", "in-memory array"))


def _decoded_bytes(source: Any, block: list[int], pixel_bytes: int) -> int:
    """The chunks a block overlaps, decoded whole to read it (compressed TIFF, Zarr)."""
    chunks = getattr(source, "chunks", None)
    if not chunks:
        return 0
    spans = [-(-(size - 1) // chunk) + 1 for size, chunk in zip(block, chunks, strict=False)]
    return math.prod(spans) * math.prod(chunks[: len(block)]) * pixel_bytes


def _bytes(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


# --- entry point -------------------------------------------------------------------------


def _show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    print(f"tilewise: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "scheduler", None) and args.backend not in (None, "dask"):
        parser.error(f"--scheduler runs the tiles on Dask, not with --backend {args.backend}")
    handlers = {"apply": _apply, "info": _info, "demo": _demo}
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return handlers[args.command](args)
        except KeyboardInterrupt:
            if args.debug:
                raise
            hint = "; run it again with --resume to finish it" if args.command == "apply" else ""
            print(f"tilewise: interrupted{hint}", file=sys.stderr)
            return 130
        except (CommandError, TilewiseError, OSError, ImportError) as exc:
            if args.debug:
                raise
            hint = " (--debug shows the traceback)" if isinstance(exc, TileError) else ""
            print(f"tilewise: error: {_one_line(exc)}{hint}", file=sys.stderr)
            return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


if __name__ == "__main__":
    sys.exit(main())
