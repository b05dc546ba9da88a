"""The per-tile pipeline every backend runs: read -> pad -> call -> trim -> check -> write."""

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


def run_tile(job: TileJob, tile: Tile) -> np.ndarray | None:
    """Compute one tile; return its core result only when the job has no sink."""
    block = read_block(job.source.read, image_shape(job.source), tile, job.boundary, job.cval)
    result = _call(job, block, tile)
    core = _trim(result, tile)
    _check(core, tile, job)
    if job.sink is None:
        return core if job.dtype is None else core.astype(job.dtype, copy=False)
    job.sink.write(tile.y, tile.x, core)
    return None


def _call(job: TileJob, block: np.ndarray, tile: Tile) -> np.ndarray:
    try:
        result = job.func(block, tile) if job.pass_tile else job.func(block)
    except Exception as exc:
        raise TileError(tile, f"func raised {type(exc).__name__}: {exc}") from exc
    return np.asarray(result)


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
    raise TileError(
        tile, f"func returned shape {result.shape}, expected {expected} as the first two dimensions"
    )


def _check(core: np.ndarray, tile: Tile, job: TileJob) -> None:
    if job.trailing is not None and core.shape[2:] != job.trailing:
        raise TileError(
            tile,
            f"func returned extra dimensions {core.shape[2:]} (shape {core.shape}), "
            f"but the output has {job.trailing}; every tile must return the same",
        )
