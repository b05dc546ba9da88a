"""Check and normalise every argument of ``map_tiles`` once, before any work."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilewise.boundary import BOUNDARIES
from tilewise.errors import ArgumentError, ArgumentTypeError

BACKENDS: tuple[str, ...] = ("processes", "threads", "serial", "dask")
IMPLEMENTED_BACKENDS: tuple[str, ...] = ("threads", "serial")


@dataclass(frozen=True, slots=True)
class Plan:
    """The normalised settings of one run; nothing downstream re-validates them."""

    tile: tuple[int, int]
    halo: tuple[int, int]
    boundary: str
    cval: float
    dtype: np.dtype | None
    workers: int
    backend: str
    pass_tile: bool
    progress: bool


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    if hasattr(os, "process_cpu_count"):  # Python 3.13+, honours affinity on Windows too
        return os.process_cpu_count() or 1
    return os.cpu_count() or 1


def make_plan(
    *,
    tile: Any,
    halo: Any,
    boundary: Any,
    cval: Any,
    dtype: Any,
    workers: Any,
    backend: Any,
    pass_tile: Any,
    progress: Any,
    image_dtype: np.dtype,
    default_backend: str,
) -> Plan:
    boundary = _choice("boundary", boundary, BOUNDARIES)
    return Plan(
        tile=_pair("tile", tile, minimum=1),
        halo=_pair("halo", halo, minimum=0),
        boundary=boundary,
        cval=_cval(cval, image_dtype, boundary),
        dtype=_dtype(dtype),
        workers=available_cpus() if workers is None else _integer("workers", workers, 1),
        backend=_backend(default_backend if backend is None else backend),
        pass_tile=_flag("pass_tile", pass_tile),
        progress=_flag("progress", progress),
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _integer(name: str, value: Any, minimum: int) -> int:
    if not _is_int(value):
        raise ArgumentTypeError(f"{name}={value!r}: must be an integer >= {minimum}")
    if value < minimum:
        raise ArgumentError(f"{name}={value!r}: must be an integer >= {minimum}")
    return int(value)


def _pair(name: str, value: Any, minimum: int) -> tuple[int, int]:
    """An int or a (rows, cols) pair of ints, each >= minimum."""
    what = "positive" if minimum == 1 else "non-negative"
    hint = f"{name}={value!r}: must be a {what} integer or a (rows, cols) pair of them"
    pair = (value, value) if _is_int(value) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(map(_is_int, pair)):
        raise ArgumentTypeError(hint)
    if min(pair) < minimum:
        raise ArgumentError(f"{name}={value!r}: each {name} dimension must be a {what} integer")
    return (int(pair[0]), int(pair[1]))


def _choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ArgumentError(f"{name}={value!r}: must be one of {', '.join(map(repr, options))}")
    return str(value)


def _backend(value: Any) -> str:
    backend = _choice("backend", value, BACKENDS)
    if backend not in IMPLEMENTED_BACKENDS:
        raise ArgumentError(
            f"backend={value!r}: not available in this version; "
            f"use one of {', '.join(map(repr, IMPLEMENTED_BACKENDS))}"
        )
    return backend


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{name}={value!r}: must be True or False")
    return bool(value)


def _dtype(value: Any) -> np.dtype | None:
    if value is None:
        return None
    try:
        dtype = np.dtype(value)
    except TypeError as exc:
        raise ArgumentTypeError(f"dtype={value!r}: not a numpy dtype ({exc})") from exc
    if dtype.hasobject:
        raise ArgumentError(f"dtype={value!r}: object arrays cannot be shared with workers")
    return dtype


def _cval(value: Any, image_dtype: np.dtype, boundary: str) -> float:
    """cval must survive the round trip through the image's dtype, as the padding stores it."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"cval={value!r}: must be a real number")
    if boundary == "constant":
        with np.errstate(invalid="ignore", over="ignore"):
            stored = np.array(value).astype(image_dtype)
        same = bool(stored == value) or (math.isnan(value) and bool(np.isnan(stored)))
        if not same:
            raise ArgumentError(
                f"cval={value!r}: cannot be stored in the image's dtype {image_dtype} "
                f"(it would become {stored.item()!r}); convert the image first"
            )
    return float(value)
