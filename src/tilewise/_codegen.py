"""Compile a pixelwise kernel: the loop over a block's pixels that calls the scalar function.

The loop is a closure over the jitted scalar function, made once per kernel
and compiled once per image dtype and number of dimensions; numba inlines the
scalar function into it. An image kernel ``f(z, y, x)`` loops over rows and
columns, a volume kernel ``f(v, z, y, x)`` over planes too. The compiled
loop releases the GIL, so the threads backend runs tiles truly in parallel,
and it is cached on disk where numba can cache it, so the next process loads
it instead of compiling again.

Importing this module imports numba: :mod:`tilewise._pixelwise` imports it
only when a kernel is first compiled.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import types
from numba.core.errors import NumbaError, TypingError
from numba.extending import overload

from tilewise.errors import ArgumentError

#: ``loop(block, out)`` sets ``out[i, j] = func(block, i + ry, j + rx)`` for
#: every pixel (i, j) of ``out`` (``out[h, i, j] = func(block, h + rz, ...)``
#: for a volume's voxels): ``block`` is C-contiguous, the pixels of ``out``
#: with exactly ``radius`` pixels of context around them.
Loop = Callable[[np.ndarray, np.ndarray], None]

# Division by zero gives inf or nan as in numpy, instead of a ZeroDivisionError
# check on every division; image code expects the former.
_OPTIONS: dict[str, Any] = {"error_model": "numpy"}


def store(out: np.ndarray, i: int, j: int, value: Any, outputs: int) -> None:
    """Store one pixel's value (``outputs == 1``) or values; replaced by the overload below."""
    out[i, j] = value


@overload(store, prefer_literal=True)
def _store(out, i, j, value, outputs):
    # `outputs` is a constant of the closure, so numba types it as a literal:
    # checking the tuple's length here, when compiling, makes a kernel that
    # returns more values than the output has room for a compile error rather
    # than a write past the end of the output.
    if not isinstance(outputs, types.IntegerLiteral):
        return None
    count = outputs.literal_value
    if count == 1:

        def store_one(out, i, j, value, outputs):
            out[i, j] = value

        return store_one
    if not (isinstance(value, types.BaseTuple) and len(value) == count):
        raise TypingError(
            f"the function returns {value}, but outputs={count} needs a {count}-tuple"
        )

    def store_tuple(out, i, j, value, outputs):
        channel = 0
        for item in numba.literal_unroll(value):
            out[i, j, channel] = item
            channel += 1  # noqa: SIM113 - numba cannot enumerate a literal_unroll

    return store_tuple


def store_voxel(out: np.ndarray, h: int, i: int, j: int, value: Any, outputs: int) -> None:
    """Store one voxel's value (``outputs == 1``) or values; replaced by the overload below."""
    out[h, i, j] = value


@overload(store_voxel, prefer_literal=True)
def _store_voxel(out, h, i, j, value, outputs):
    # As _store, one index more.
    if not isinstance(outputs, types.IntegerLiteral):
        return None
    count = outputs.literal_value
    if count == 1:

        def store_one(out, h, i, j, value, outputs):
            out[h, i, j] = value

        return store_one
    if not (isinstance(value, types.BaseTuple) and len(value) == count):
        raise TypingError(
            f"the function returns {value}, but outputs={count} needs a {count}-tuple"
        )

    def store_tuple(out, h, i, j, value, outputs):
        channel = 0
        for item in numba.literal_unroll(value):
            out[h, i, j, channel] = item
            channel += 1  # noqa: SIM113 - numba cannot enumerate a literal_unroll

    return store_tuple


def _loop_function(
    scalar: Any, outputs: int, radius: tuple[int, ...], parallel: bool
) -> Callable[..., None]:
    """The loop over a block's pixels, its first axis in numba's threads when ``parallel``.

    The radius is a constant of the loop, not an argument: the compiler then
    knows every index the kernel reads (``y - 1`` is never negative), drops
    numba's wraparound of negative indices from each read, and can
    vectorise the loop. A volume's loop vectorises only in ``prange``, whose
    arrays numba's parallel lowering marks as not aliasing each other: a
    3x3x3 mean ran about 6x faster on one thread (an image's 3x3 mean
    vectorised either way).
    """
    outer = numba.prange if parallel else range
    if len(radius) == 3:
        rz, ry, rx = radius

        def volume_loop(block, out):
            for h in outer(out.shape[0]):
                for i in range(out.shape[1]):
                    for j in range(out.shape[2]):
                        store_voxel(out, h, i, j, scalar(block, h + rz, i + ry, j + rx), outputs)

        return volume_loop
    ry, rx = radius

    def loop(block, out):
        for i in outer(out.shape[0]):
            for j in range(out.shape[1]):
                store(out, i, j, scalar(block, i + ry, j + rx), outputs)

    return loop


def python_loop(func: Callable[..., Any], radius: tuple[int, ...]) -> Loop:
    """The same loop in plain Python: for ``compile=False``."""

    def loop(block: np.ndarray, out: np.ndarray) -> None:
        for index in np.ndindex(out.shape[: len(radius)]):
            out[index] = func(block, *(i + r for i, r in zip(index, radius, strict=True)))

    return loop


class Compiler:
    """Compiles one kernel's loop for each (image dtype, ndim) it is asked for."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        radius: tuple[int, ...],
        outputs: int,
        out_dtype: np.dtype,
    ) -> None:
        self.func = func
        self.outputs = outputs
        self.out_dtype = out_dtype
        self.tiled = len(radius)  # one index per tiled axis: (y, x), or (z, y, x)
        self.radius = radius
        self.scalar = numba.njit(**_OPTIONS)(func)
        _stable_uuid(self.scalar, func)

    def compile(self, image_dtype: np.dtype, ndim: int, parallel: bool = False) -> Loop:
        """The loop compiled for blocks of this dtype and ndim; ArgumentError if numba cannot.

        ``parallel``: its first axis in numba's threads (:func:`_loop_function`).
        """
        try:
            signature = self._signature(image_dtype, ndim)
        except NumbaError as exc:
            raise self._error(image_dtype, str(exc)) from exc
        loop_function = _loop_function(self.scalar, self.outputs, self.radius, parallel)
        dispatcher = _dispatcher(loop_function, cache=True, parallel=parallel)
        try:
            dispatcher.compile(signature)
        except NumbaError as exc:
            raise self._error(image_dtype, self._reason(signature, exc)) from exc
        except Exception:
            # Only the disk cache can fail outside numba's own errors: its key
            # pickles the closure, and some captured objects do not pickle.
            dispatcher = _dispatcher(loop_function, cache=False, parallel=parallel)
            try:
                dispatcher.compile(signature)
            except NumbaError as exc:
                raise self._error(image_dtype, self._reason(signature, exc)) from exc
        # A writeable block converts to the read-only signature compiled above;
        # without this numba would compile once more for it.
        dispatcher.disable_compile()
        loop: Loop = dispatcher
        return loop

    def _signature(self, image_dtype: np.dtype, ndim: int) -> tuple[Any, ...]:
        block = types.Array(numba.from_dtype(image_dtype), ndim, "C", readonly=True)
        out_ndim = self.tiled if self.outputs == 1 else self.tiled + 1
        out = types.Array(numba.from_dtype(self.out_dtype), out_ndim, "C")
        return (block, out)

    def _reason(self, signature: tuple[Any, ...], exc: NumbaError) -> str:
        """numba's complaint about the user's function itself, when it has one."""
        args = (signature[0], *(types.int64,) * self.tiled)
        try:
            self.scalar.compile(args)
        except NumbaError as scalar_exc:
            return str(scalar_exc)
        returns = self.scalar.overloads[args].signature.return_type
        if returns == types.none:
            return "it returns nothing (None), where it must return the pixel's value"
        if isinstance(returns, types.Array):
            return (
                f"it returns an array ({returns}) for one pixel, where it must return a "
                "number (a block-at-a-time function goes to map_tiles undecorated)"
            )
        if self.outputs == 1 and isinstance(returns, types.BaseTuple):
            return f"it returns {returns}, but outputs=1 needs one number"
        if self.outputs > 1 and not (
            isinstance(returns, types.BaseTuple) and len(returns) == self.outputs
        ):
            return f"it returns {returns}, but outputs={self.outputs} needs a tuple of that many"
        return str(exc)

    def _error(self, image_dtype: np.dtype, reason: str) -> ArgumentError:
        name = getattr(self.func, "__qualname__", repr(self.func))
        code = getattr(self.func, "__code__", None)
        where = f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
        return ArgumentError(
            f"pixelwise kernel {name!r}{where} cannot be compiled by numba for {image_dtype} "
            f"images with output dtype {self.out_dtype}. Pass compile=False to "
            "@tilewise.pixelwise to run it as a plain Python loop (about 100x slower), or "
            f"change it to use only what numba supports. numba says:\n{reason}"
        )


def _dispatcher(loop_function: Callable[..., None], *, cache: bool, parallel: bool) -> Any:
    options = {"nogil": True, "parallel": parallel, **_OPTIONS}
    if cache:
        try:
            return numba.njit(cache=True, **options)(loop_function)
        except RuntimeError:
            pass  # no writable place for a cache ("no locator available"): compile each time
    return numba.njit(**options)(loop_function)


def _stable_uuid(scalar: Any, func: Callable[..., Any]) -> None:
    """Give the jitted scalar function an identity that is the same in every process.

    numba keys the disk cache of a closure on its pickled free variables, and
    a jitted function pickles with a random uuid: the loop would never be found
    in the cache again. The identity names the function and the state of its
    source file, which is also how numba notices edits to cached functions.
    """
    set_uuid = getattr(scalar, "_set_uuid", None)
    if set_uuid is None:  # a numba without it: the loop is compiled in each process
        return
    code = getattr(func, "__code__", None)
    parts = [str(getattr(func, "__module__", "")), str(getattr(func, "__qualname__", ""))]
    if code is not None:
        parts += [code.co_filename, str(code.co_firstlineno)]
        try:
            stat = os.stat(code.co_filename)
            parts += [str(stat.st_mtime_ns), str(stat.st_size)]
        except OSError:
            pass  # a notebook or stdin: the cache key holds the function's code by value
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    set_uuid(f"tilewise-pixelwise-{digest}")
