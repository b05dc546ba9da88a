"""The per-tile pipeline every backend runs: read -> pad -> call -> trim -> check -> write.

:func:`run_tile` is also the one failure boundary: whatever fails while a
tile is handled, in any stage, leaves it as a :class:`~tilewise.TileError`
naming the tile and the stage, with the original exception chained; reading
and writing also name the file or store, when there is one. Every backend
runs this function, so a tile's error reads the same on each.

The check stage applies numpy's casting rule to every result, as
``numpy.copyto(output, result, casting=casting)`` would: ``dtype=``, when
given, converts the result first (an explicit cast, as ``astype``); then a
result whose dtype ``numpy.can_cast`` does not let into the output's under
``casting`` is refused before it is written, and so is an array of Python
objects, which no worker can share and no file can hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from tilewise.boundary import read_block
from tilewise.errors import TileError
from tilewise.grid import Tile
from tilewise.io.base import Location, Sink, Source, image_shape
from tilewise.io.urls import redact_text


@dataclass(frozen=True, slots=True)
class TileJob:
    """Everything needed to compute any tile of one run; sent once to each worker."""

    func: Callable[..., Any]
    source: Source
    sink: Sink | None  # None: hand the core result back instead of writing it
    boundary: str | tuple[str, ...]  # one mode, or one per tiled axis
    cval: float
    pass_tile: bool
    tiled: int = 2  # how many of the image's first axes are tiled; the rest reach func whole
    dtype: np.dtype | None = None  # dtype=: every result converted to it, as astype does
    casting: Casting = "same_kind"  # numpy's rule for a result going into the output
    trailing: tuple[int, ...] | None = None  # extra dimensions every result must have
    output_dtype: np.dtype | None = None  # what every result is cast to, once it is known
    output_from_wave: bool = False  # the output's dtype came from the first wave's results


#: What each stage is called in a tile's error: "<stage> raised OSError: ...".
READ, CALL, WRITE = "reading its block", "func", "writing its result"
#: ``dtype=``'s conversion, which may fail (an object array of strings to float).
CONVERT = "converting its result to dtype="
#: Making the output from the first wave's results, in a format that may not hold them.
STORE = "storing its result"
#: A worker that cannot unpickle the job (func's module missing there) fails its first tile.
LOAD = "loading func in its worker"

#: numpy's casting rules, from the strictest: what ``casting=`` may be.
Casting = Literal["no", "equiv", "safe", "same_kind", "unsafe"]
CASTINGS: tuple[Casting, ...] = get_args(Casting)


class ResultMismatch(Exception):  # noqa: N818 - not an error of its own: a TileError's reason
    """A result that does not fit the output; its message is the TileError's reason."""


def run_tile(job: TileJob, tile: Tile) -> np.ndarray | None:
    """Compute one tile; return its core result only when the job has no sink."""
    stage = READ
    try:
        shape = image_shape(job.source, tile.ndim)
        block = read_block(job.source.read, shape, tile, job.boundary, job.cval)
        stage = CALL
        result = np.asarray(job.func(block, tile) if job.pass_tile else job.func(block))
        core = _trim(result, tile)
        check_extra_dimensions(core, job.trailing, tile.ndim)
        if job.dtype is not None:
            stage = f"{CONVERT}{job.dtype.name!r}"
            core = core.astype(job.dtype, copy=False)
        check_cast(core, job.output_dtype, job.casting, job.output_from_wave)
        if job.sink is None:
            return core
        stage = WRITE
        job.sink.write(tile.slices, core)
    except Exception as exc:
        stage = located(stage, job.source, job.sink)
        raise tile_error(tile, stage, exc)  # noqa: B904 - tile_error chains the cause
    return None


def located(stage: str, source: Source | None = None, sink: Sink | None = None) -> str:
    """``stage`` naming the file or store it reads (``READ``) or writes (``WRITE``), if any.

    Only for an error: a path is absolute once pickled to a worker, so making
    it absolute here too gives every backend the same text.
    """
    if stage == READ and source is not None and source.path is not None:
        return f"{READ} from {_shown(source.path)!r}"
    if stage == WRITE and sink is not None and sink.path is not None:
        return f"{WRITE} to {_shown(sink.path)!r}"
    return stage


def _shown(location: Location) -> str:
    """A path made absolute; a URL without its credentials."""
    return str(location.absolute() if isinstance(location, Path) else location)


def tile_error(tile: Tile, stage: str, exc: Exception) -> TileError:
    """``exc``, raised in ``stage`` of ``tile``, as the TileError that names both.

    For failures around :func:`run_tile` too (a Dask task that cannot load
    its job; a write in the caller, whose stage :func:`located` names the
    file), so that every tile's error has this one phrasing.
    """
    if isinstance(exc, ResultMismatch):
        error = TileError(tile, str(exc))
        error.__cause__ = None  # the message is the whole story
    else:
        # A URL the exception quotes is shown without the credentials it may carry.
        error = TileError(tile, redact_text(f"{stage} raised {type(exc).__name__}: {exc}"))
        error.__cause__ = exc
    return error


def _trim(result: np.ndarray, tile: Tile) -> np.ndarray:
    """Drop the halo from a block-sized result; keep a core-sized one as it is."""
    k = tile.ndim
    shape = result.shape[:k]
    if result.ndim >= k and shape == tile.core_shape:
        return result
    if result.ndim >= k and shape == tile.block_shape:
        return result[tile.core_in_block]
    expected = f"{tile.core_shape} (the core tile)"
    if tile.block_shape != tile.core_shape:
        expected += f" or {tile.block_shape} (the block with its halo)"
    first = "first two dimensions" if k == 2 else f"first {k} dimensions (the tiled axes)"
    raise ResultMismatch(f"func returned shape {result.shape}, expected {expected} as the {first}")


def check_extra_dimensions(
    core: np.ndarray, trailing: tuple[int, ...] | None, tiled: int = 2
) -> None:
    """Refuse a result whose dimensions after the ``tiled`` axes are not the output's."""
    if trailing is not None and core.shape[tiled:] != trailing:
        raise ResultMismatch(
            f"func returned extra dimensions {core.shape[tiled:]} (shape {core.shape}), "
            f"but the output has {trailing}; every tile must return the same"
        )


def check_cast(
    core: np.ndarray, output: np.dtype | None, casting: Casting, from_wave: bool = False
) -> None:
    """Refuse a result ``numpy.copyto(output, core, casting=casting)`` would refuse.

    ``output`` None: not known yet (the first wave makes it from the results).
    An object result is refused whatever the casting: ``dtype=`` converts it
    before it gets here.
    """
    if core.dtype.hasobject:
        raise ResultMismatch(
            f"func returned an array of dtype {core.dtype} (Python objects), which cannot be "
            "shared with workers nor written to files; return a numeric array, or pass "
            "dtype= the dtype to convert it to, e.g. dtype='float64'"
        )
    if output is None or np.can_cast(core.dtype, output, casting):
        return
    found, wanted = core.dtype, output
    try:
        wider = np.promote_types(found, wanted)
    except TypeError:  # no common dtype (a string result and a float output)
        wider = wanted
    fixes = []
    if from_wave:
        origin = ", the dtype of the first wave's results"
        if wider != wanted:
            fixes.append(f"dtype={_spelled(wider)!r} for a {wider} output")
    else:
        origin = ""
    fixes.append(f"dtype={_spelled(wanted)!r} to convert every result to {wanted}")
    allows = next((c for c in CASTINGS if np.can_cast(found, wanted, c)), None)
    if allows is not None:
        fixes.append(f"casting={allows!r}{_what_it_does(found, wanted, allows)}")
    elsewhere = "" if from_wave or wider == wanted else f"; or write into an output of {wider}"
    raise ResultMismatch(
        f"func returned {found}, which casting={casting!r} does not cast to the output's "
        f"{wanted}{origin}; pass {', or '.join(fixes)}{elsewhere}"
    )


def _what_it_does(found: np.dtype, wanted: np.dtype, casting: Casting) -> str:
    """What ``casting`` does to values of ``found`` cast to ``wanted``, when it loses some."""
    if casting != "unsafe":
        return ""
    if found.kind == "c" and wanted.kind != "c":
        return " to drop the imaginary part"
    if found.kind == "f" and wanted.kind in "iu":
        return " to truncate"
    return " to cast as astype does"


def _spelled(dtype: np.dtype) -> str:
    """How to write ``dtype`` as ``dtype=``: its name when that names it (not a byte order)."""
    try:
        return dtype.name if np.dtype(dtype.name) == dtype else dtype.str
    except TypeError:
        return dtype.str
