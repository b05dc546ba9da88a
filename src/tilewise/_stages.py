"""The per-tile pipeline every backend runs: read -> pad -> call -> trim -> check -> write.

:func:`run_tile` is also the one failure boundary: whatever fails while a
tile is handled, in any stage, leaves it as a :class:`~tilewise.TileError`
naming the tile and the stage, with the original exception chained. Every
backend runs this function, so a tile's error reads the same on each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilewise.boundary import read_block
from tilewise.errors import TileError
from tilewise.grid import Tile
from tilewise.io.base import Sink, Source, image_shape


@dataclass(frozen=True, slots=True)
class TileJob:
    """Everything needed to compute any tile of one run; sent once to each worker."""

    func: Callable[..., Any]
    source: Source
    sink: Sink | None  # None: hand the core result back instead of writing it
    boundary: str
    cval: float
    pass_tile: bool
    dtype: np.dtype | None = None
    trailing: tuple[int, ...] | None = None  # extra dimensions every result must have


#: What each stage is called in a tile's error: "<stage> raised OSError: ...".
READ, CALL, WRITE = "reading its block", "func", "writing its result"
#: Making the output from the first wave's results, in a format that may not hold them.
STORE = "storing its result"
#: A worker that cannot unpickle the job (func's module missing there) fails its first tile.
LOAD = "loading func in its worker"


class ResultMismatch(Exception):  # noqa: N818 - not an error of its own: a TileError's reason
    """A result that does not fit the output; its message is the TileError's reason."""


def run_tile(job: TileJob, tile: Tile) -> np.ndarray | None:
    """Compute one tile; return its core result only when the job has no sink."""
    stage = READ
    try:
        block = read_block(job.source.read, image_shape(job.source), tile, job.boundary, job.cval)
        stage = CALL
        result = np.asarray(job.func(block, tile) if job.pass_tile else job.func(block))
        core = _trim(result, tile)
        check_extra_dimensions(core, job.trailing)
        if job.sink is None:
            return core if job.dtype is None else core.astype(job.dtype, copy=False)
        stage = WRITE
        job.sink.write(tile.y, tile.x, core)
    except Exception as exc:
        raise tile_error(tile, stage, exc)  # noqa: B904 - tile_error chains the cause
    return None


def tile_error(tile: Tile, stage: str, exc: Exception) -> TileError:
    """``exc``, raised in ``stage`` of ``tile``, as the TileError that names both.

    For failures around :func:`run_tile` too (a Dask task that cannot load
    its job), so that every tile's error has this one phrasing.
    """
    if isinstance(exc, ResultMismatch):
        error = TileError(tile, str(exc))
        error.__cause__ = None  # the message is the whole story
    else:
        error = TileError(tile, f"{stage} raised {type(exc).__name__}: {exc}")
        error.__cause__ = exc
    return error


def _trim(result: np.ndarray, tile: Tile) -> np.ndarray:
    """Drop the halo from a block-sized result; keep a core-sized one as it is."""
    shape = result.shape[:2]
    if result.ndim >= 2 and shape == tile.core_shape:
        return result
    if result.ndim >= 2 and shape == tile.block_shape:
        h = tile.halo
        return result[
            h.top : h.top + shape[0] - h.top - h.bottom,
            h.left : h.left + shape[1] - h.left - h.right,
        ]
    expected = f"{tile.core_shape} (the core tile)"
    if tile.block_shape != tile.core_shape:
        expected += f" or {tile.block_shape} (the block with its halo)"
    raise ResultMismatch(
        f"func returned shape {result.shape}, expected {expected} as the first two dimensions"
    )


def check_extra_dimensions(core: np.ndarray, trailing: tuple[int, ...] | None) -> None:
    """Refuse a result whose dimensions after the first two are not the output's ``trailing``."""
    if trailing is not None and core.shape[2:] != trailing:
        raise ResultMismatch(
            f"func returned extra dimensions {core.shape[2:]} (shape {core.shape}), "
            f"but the output has {trailing}; every tile must return the same"
        )
