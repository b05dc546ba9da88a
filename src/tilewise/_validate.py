"""Argument checks shared by ``map_tiles`` and ``pixelwise``: one message per mistake.

Each returns the normalised value or raises an :class:`~tilewise.ArgumentError`
(or :class:`~tilewise.ArgumentTypeError`) that names the argument and its value.

>>> sizes("tile", 512, minimum=1)
(512, 512)
>>> sizes("tile", (0, 5), minimum=1)
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


def sizes(name: str, value: Any, minimum: int, axes: int = 2) -> tuple[int, ...]:
    """An int (the same for ``axes`` axes) or a tuple of ints, one per tiled axis, each >= minimum.

    >>> sizes("tile", (32, 256, 256), minimum=1)
    (32, 256, 256)
    >>> sizes("halo", 2, minimum=0, axes=3)
    (2, 2, 2)
    """
    what = "positive" if minimum == 1 else "non-negative"
    hint = (
        f"{name}={value!r}: must be a {what} integer or a tuple of them, one per tiled axis "
        "((rows, cols) for an image)"
    )
    sizes = (value,) * axes if is_int(value) else value
    if not isinstance(sizes, (tuple, list)) or len(sizes) < 2 or not all(map(is_int, sizes)):
        raise ArgumentTypeError(hint)
    if min(sizes) < minimum:
        raise ArgumentError(f"{name}={value!r}: each {name} dimension must be a {what} integer")
    return tuple(int(n) for n in sizes)


def modes(value: Any, options: tuple[str, ...], axes: int) -> str | tuple[str, ...]:
    """``boundary``: one of ``options``, or a tuple of them, one per tiled axis.

    A tuple of one mode repeated is that mode.

    >>> modes(("wrap", "reflect", "reflect"), ("wrap", "reflect"), 3)
    ('wrap', 'reflect', 'reflect')
    >>> modes(["wrap", "wrap"], ("wrap", "reflect"), 2)
    'wrap'
    """
    if not isinstance(value, (tuple, list)):
        return choice("boundary", value, options)
    if len(value) != axes:
        raise ArgumentError(
            f"boundary={value!r}: {len(value)} modes for {axes} tiled axes; give one mode, or "
            "one per tiled axis"
        )
    for mode in value:
        if mode not in options:
            raise ArgumentError(
                f"boundary={value!r}: {mode!r} is not one of {', '.join(map(repr, options))}"
            )
    given = tuple(str(mode) for mode in value)
    return given[0] if len(set(given)) == 1 else given


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


def cval(value: Any, image_dtype: np.dtype, boundary: str | tuple[str, ...]) -> float:
    """cval as the padding stores it, in the image's dtype: rounded at most, never changed.

    A float image rounds cval to its precision (as ``numpy.pad`` does) but must
    not overflow to inf; any other dtype must hold cval exactly.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"cval={value!r}: must be a real number")
    if "constant" in ((boundary,) if isinstance(boundary, str) else boundary):
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
