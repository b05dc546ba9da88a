"""Run a function over the tiles, or every pixel, of a large 2-D array on every core."""

from tilewise._api import map_tiles
from tilewise._pixelwise import pixelwise
from tilewise.errors import (
    ArgumentError,
    ArgumentTypeError,
    TileError,
    TileTimeoutError,
    TilewiseError,
    WorkerDiedError,
)
from tilewise.executors.processes import shutdown
from tilewise.grid import Grid, Halo, Tile

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "Grid",
    "Halo",
    "Tile",
    "TileError",
    "TileTimeoutError",
    "TilewiseError",
    "WorkerDiedError",
    "map_tiles",
    "pixelwise",
    "shutdown",
]
__version__ = "0.1.0"
