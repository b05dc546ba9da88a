"""Argument checks shared by ``map_tiles`` and ``pixelwise``: one message per mistake.

Each returns the normalised value or raises an :class:`~tilewise.ArgumentError`
(or :class:`~tilewise.ArgumentTypeError`) that names the argument and its value.

>>> pair("tile", 512, minimum=1)
(512, 512)
>>> pair("tile", (0, 5), minimum=1)
Traceback (most recent call last):
...
tilewise.errors.ArgumentError: tile=(0, 5): each tile dimension must be a positive integer
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from tilewise.errors import ArgumentError, ArgumentTypeError


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def integer(name: str, value: Any, minimum: int) -> int:
    if not is_int(value):
        raise ArgumentTypeError(f"{name}={value!r}: must be an integer >= {minimum}")
    if value < minimum:
        raise ArgumentError(f"{name}={value!r}: must be an integer >= {minimum}")
    return int(value)


def pair(name: str, value: Any, minimum: int) -> tuple[int, int]:
    """An int or a (rows, cols) pair of ints, each >= minimum."""
    what = "positive" if minimum == 1 else "non-negative"
    hint = f"{name}={value!r}: must be a {what} integer or a (rows, cols) pair of them"
    pair = (value, value) if is_int(value) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(map(is_int, pair)):
        raise ArgumentTypeError(hint)
    if min(pair) < minimum:
        raise ArgumentError(f"{name}={value!r}: each {name} dimension must be a {what} integer")
    return (int(pair[0]), int(pair[1]))


def choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ArgumentError(f"{name}={value!r}: must be one of {', '.join(map(repr, options))}")
    return str(value)


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{name}={value!r}: must be True or False")
    return bool(value)


def dtype_or_none(value: Any) -> np.dtype | None:
    if value is None:
        return None
    try:
        dtype = np.dtype(value)
    except TypeError as exc:
        raise ArgumentTypeError(f"dtype={value!r}: not a numpy dtype ({exc})") from exc
    if dtype.hasobject:
        raise ArgumentError(f"dtype={value!r}: object arrays cannot be shared with workers")
    return dtype


def cval(value: Any, image_dtype: np.dtype, boundary: str) -> float:
    """cval as the padding stores it, in the image's dtype: rounded at most, never changed.

    A float image rounds cval to its precision (as ``numpy.pad`` does) but must
    not overflow to inf; any other dtype must hold cval exactly.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"cval={value!r}: must be a real number")
    if boundary == "constant":
        # A Python number, so that np.float64(0.1) and 0.1 are judged alike.
        number: Any = value.item() if isinstance(value, np.generic) else value
        with np.errstate(invalid="ignore", over="ignore"):
            stored = np.array(number).astype(image_dtype)
        if image_dtype.kind in "fc":
            same = bool(np.isfinite(stored)) or not math.isfinite(number)
        else:
            same = bool(stored.item() == number)
        if not same:
            raise ArgumentError(
                f"cval={value!r}: cannot be stored in the image's dtype {image_dtype} "
                f"(it would become {stored.item()!r}); convert the image first"
            )
        if image_dtype.kind not in "fc":
            return int(number)  # exact: a float would round integers beyond 2**53
    return float(value)
