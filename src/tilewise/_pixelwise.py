"""``@tilewise.pixelwise``: a per-pixel Python function, compiled, run over whole arrays or tiles.

A pixelwise kernel is a scalar function ``f(z, y, x)`` of a block ``z`` and
one pixel ``(y, x)`` in it, which may read ``z`` up to ``radius`` pixels away;
or, of a volume, ``f(v, z, y, x)``: one index per tiled axis, as many as the
function takes after the block.
tilewise writes the loop over the pixels, compiles it with numba (see
:mod:`tilewise._codegen`) and runs it over tiles like any other function.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from tilewise import _validate as check
from tilewise._api import map_tiles
from tilewise._cpus import available_cpus
from tilewise._importable import importable_module
from tilewise._optional import import_optional
from tilewise._reach import check_reach
from tilewise.boundary import BOUNDARIES, modes
from tilewise.errors import ArgumentError, ArgumentTypeError
from tilewise.grid import Tile

if TYPE_CHECKING:
    from tilewise._codegen import Compiler, Loop
    from tilewise._plan import Plan
    from tilewise._slab_padding import SlabPadder

#: Row strips when a kernel runs on a whole array: at least this many pixels
#: each, so that a strip's fixed cost (~0.1 ms) stays small beside its work...
STRIP_PIXELS = 2**18
#: ...and at most so many that each worker gets this many strips, to share
#: the work out evenly without paying that fixed cost hundreds of times.
STRIPS_PER_WORKER = 16

#: Boundaries a kernel may pad with: all but "none", since every pixel,
#: edge pixels included, is computed from the ``radius`` pixels around it.
PADDING_BOUNDARIES: tuple[str, ...] = tuple(b for b in BOUNDARIES if b != "none")
#: Held while a loop runs on numba's threads: its default threading layer runs one at a time.
_PARALLEL_LOOP = threading.Lock()


def pixelwise(
    *,
    radius: int | tuple[int, ...],
    dtype: DTypeLike = np.float64,
    outputs: int = 1,
    boundary: str = "reflect",
    cval: float = 0.0,
    compile: bool = True,
) -> Callable[[Callable[..., Any]], Pixelwise]:
    """Turn a per-pixel function ``f(z, y, x)`` into a compiled kernel over whole images.

    ``f`` computes one output pixel: ``z`` is a block of the image (a tile
    plus ``radius`` pixels of context on each side, padded per ``boundary``
    at the image's edges) and ``(y, x)`` a pixel in it; ``f`` may read ``z``
    within ``radius`` of ``(y, x)``. tilewise loops over the pixels in
    compiled code and runs tiles in parallel; ``f`` itself stays plain Python.

    A function of four arguments, ``f(v, z, y, x)``, is a volume kernel: ``v``
    is a block of a (Z, Y, X) volume (or (Z, Y, X, C)), ``(z, y, x)`` a voxel
    in it, and :func:`~tilewise.map_tiles` tiles the volume's three axes (an
    int ``tile`` is the size along each).

    Parameters
    ----------
    radius : int or tuple of int
        How far from ``(y, x)`` the function reads, along each axis, or one
        per axis (``(1, 2, 2)`` for a volume kernel). On first
        use for each image dtype, the function is called once as plain Python
        at one pixel of a small block that checks every read: reading further
        than ``radius`` is an ArgumentError naming the axis. That check cannot
        see indices computed from pixel values, reads through numpy functions
        of the whole block, nor a function that does not run as plain Python;
        compiled code checks no index, so such a read gives wrong pixels, or
        memory outside the block.
    dtype : dtype
        The output's dtype; values are cast to it.
    outputs : int
        Values per pixel. With more than one the function returns a tuple of
        that many numbers and the result has shape (H, W, outputs) (a
        volume's: (Z, Y, X, outputs)).
    boundary : {"reflect", "mirror", "nearest", "wrap", "constant"}
        How calling the kernel on a whole image pads it, with
        ``scipy.ndimage``'s mode semantics. :func:`~tilewise.map_tiles`
        takes its own ``boundary=`` instead.
    cval : float
        The fill value for ``boundary="constant"``.
    compile : bool
        False runs the same function as a plain Python loop: for debugging,
        or for functions numba cannot compile (about 100x slower).

    Returns
    -------
    callable
        A decorator making a :class:`Pixelwise` kernel. The kernel is
        compiled with numba once per image dtype, on first use, and cached
        on disk where numba can. Compiled, dividing by zero gives inf or nan
        as in numpy; the Python loop follows Python and may raise.

    Raises
    ------
    tilewise.ArgumentError, tilewise.ArgumentTypeError
        A bad argument. On first use: numba cannot compile the function
        (the message gives numba's reason), or numba is not installed
        (``ModuleNotFoundError``, naming the extra to install).

    Examples
    --------
    >>> import math, numpy as np, tilewise
    >>> @tilewise.pixelwise(radius=1)
    ... def slope(z, y, x):
    ...     dzdx = (z[y, x + 1] - z[y, x - 1]) / 2
    ...     dzdy = (z[y + 1, x] - z[y - 1, x]) / 2
    ...     return math.atan(math.hypot(dzdx, dzdy))
    >>> ramp = np.add.outer(np.arange(3.0), 2 * np.arange(4.0))  # rises 1 down, 2 across
    >>> np.degrees(slope(ramp)).round(1)  # edges see the reflected (flatter) border
    array([[48.2, 64.1, 64.1, 48.2],
           [54.7, 65.9, 65.9, 54.7],
           [48.2, 64.1, 64.1, 48.2]])
    >>> tiled = tilewise.map_tiles(slope, ramp, tile=2, boundary="reflect")
    >>> np.array_equal(tiled, slope(ramp))
    True

    Two values per pixel, from the pixel alone:

    >>> @tilewise.pixelwise(radius=0, outputs=2, compile=False)
    ... def halve_double(z, y, x):
    ...     return z[y, x] / 2, z[y, x] * 2
    >>> halve_double(np.array([[1.0, 2.0]]))
    array([[[0.5, 2. ],
            [1. , 4. ]]])
    """
    radius = _radius(radius)
    out_dtype = check.dtype_or_none(dtype)
    outputs = check.integer("outputs", outputs, 1)
    boundary = check.choice("boundary", boundary, PADDING_BOUNDARIES)
    cval = check.cval(cval, np.dtype(np.float64), "constant")
    compile = check.flag("compile", compile)

    def decorate(func: Callable[..., Any]) -> Pixelwise:
        if not callable(func):
            raise ArgumentTypeError(f"pixelwise decorates a function f(z, y, x), not {func!r}")
        return Pixelwise(
            func,
            radius=radius,
            dtype=np.dtype(np.float64) if out_dtype is None else out_dtype,
            outputs=outputs,
            boundary=boundary,
            cval=cval,
            compile=compile,
        )

    return decorate


def _radius(value: Any) -> int | tuple[int, ...]:
    """``radius=``: an int, or one per tiled axis (two or three)."""
    if isinstance(value, (tuple, list)):
        if len(value) not in (2, 3):
            raise ArgumentError(f"radius={value!r}: one int, or one per axis (2 or 3)")
        return tuple(check.integer("radius", r, 0) for r in value)
    return check.integer("radius", value, 0)


def _check_signature(func: Callable[..., Any], radius: int | tuple[int, ...]) -> int:
    """The kernel's tiled axes: 2 for f(z, y, x), 3 for f(v, z, y, x); refused otherwise.

    A builtin, whose signature Python cannot tell, is left to numba's compile
    step, as an image kernel unless ``radius`` has three values.
    """
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return len(radius) if isinstance(radius, tuple) else 2
    for tiled in (2, 3):
        try:
            signature.bind(None, *(0,) * tiled)
        except TypeError:
            continue
        return tiled
    name = getattr(func, "__qualname__", repr(func))
    shown = signature.replace(return_annotation=inspect.Signature.empty)
    called = getattr(func, "__name__", "f")
    raise ArgumentError(
        f"pixelwise kernel {name!r} takes {shown}, expected {called}(z, y, x): the block and "
        f"one pixel's row and column, or {called}(v, z, y, x) for a volume's voxel"
    )


class Pixelwise:
    """A compiled per-pixel kernel, made by :func:`pixelwise`.

    Call it on a whole image, or pass it to :func:`~tilewise.map_tiles` (the
    halo then defaults to its radius, and the backend to ``"threads"``). It
    pickles by reference when defined at module level, and by value (its
    function and settings) otherwise. Each process compiles it, or loads it
    from numba's disk cache, on first use.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        radius: int | tuple[int, ...],
        dtype: np.dtype,
        outputs: int,
        boundary: str,
        cval: float,
        compile: bool,
    ) -> None:
        self.func = func
        self.radius = radius
        #: The tiled axes the function indexes: 2 for f(z, y, x), 3 for f(v, z, y, x).
        self.ndim = _check_signature(func, radius)
        if isinstance(radius, tuple) and len(radius) != self.ndim:
            raise ArgumentError(
                f"radius={radius}: {len(radius)} values, but pixelwise kernel "
                f"{getattr(func, '__qualname__', func)!r} takes {self.ndim} indices"
            )
        #: How far it reads along each of them.
        self.reach: tuple[int, ...] = radius if isinstance(radius, tuple) else (radius,) * self.ndim
        self.dtype = dtype
        self.outputs = outputs
        self.boundary = boundary
        self.cval = cval
        self.compile = compile
        self.__module__ = getattr(func, "__module__", __name__)
        self.__name__ = getattr(func, "__name__", type(func).__name__)
        self.__qualname__ = getattr(func, "__qualname__", self.__name__)
        self.__doc__ = func.__doc__
        self._loops: dict[tuple[np.dtype, int, bool], Loop] = {}
        self._compiler: Compiler | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"<pixelwise kernel {self.__qualname__}: radius={self.radius}, dtype={self.dtype}, "
            f"outputs={self.outputs}, boundary={self.boundary!r}, compile={self.compile}>"
        )

    @property
    def default_backend(self) -> str:
        """map_tiles's default backend: compiled loops release the GIL, Python loops hold it."""
        return "threads" if self.compile else "processes"

    def __call__(
        self, image: Any, *, workers: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """The kernel at every pixel of ``image``, padded per ``boundary``.

        ``image`` is an (H, W) or (H, W, C) array (a volume kernel's: (Z, Y,
        X) or (Z, Y, X, C)), or anything else :func:`~tilewise.map_tiles`
        reads. The result is (H, W), or (H, W, outputs). It runs through
        map_tiles in strips of rows, written straight into the result: an
        image kernel's strips on threads (each strip's compiled loop
        releases the GIL, so strips run in parallel); a volume kernel's
        slabs of planes one after another, each padded and computed on
        ``workers`` of numba's threads, since only the loop numba compiles
        in parallel vectorises there (measured: a 3x3x3 mean 4x faster,
        where an image kernel's strips are faster on threads; see
        :func:`tilewise._codegen._loop_function` and
        :mod:`tilewise._slab_padding`). A kernel with ``compile=False``
        holds the GIL and runs on one thread.
        """
        settings: dict[str, Any] = {
            "boundary": self.boundary,
            "cval": self.cval,
            "workers": workers,
            "backend": "threads" if self.compile else "serial",
            "progress": progress,
        }
        threads = available_cpus() if workers is None else workers
        k = self.ndim
        in_memory = isinstance(image, np.ndarray) and image.ndim in (k, k + 1) and image.size
        if not in_memory or image.dtype.hasobject or not _is_count(workers):
            return map_tiles(self, image, **settings)  # files; and its checks, its errors
        # Reach and compile errors before any strip runs.
        self.loop_for(image.dtype, image.shape, parallel=self.compile and k == 3)
        out = np.empty(self._out_shape(image.shape[:k]), self.dtype)
        rows, *across = image.shape[:k]  # rows of an image, planes of a volume
        strips = STRIPS_PER_WORKER * threads
        strip = (max(-(-STRIP_PIXELS // math.prod(across)), -(-rows // strips)), *across)
        if self.compile and k == 3:  # one slab at a time, padded and computed on numba's threads
            from tilewise._slab_padding import SlabPadder

            padder = SlabPadder(image, self.reach, modes(self.boundary, k), self.cval)
            settings |= {"backend": "serial", "workers": None}
            into: Callable[..., np.ndarray] = _SlabsIntoArray(self, out, padder, threads)
            halo: Any = 0  # the padder reads each slab's context itself
        else:
            into, halo = _IntoArray(self, out), self.reach
        return map_tiles(into, image, tile=strip, halo=halo, pass_tile=True, out=out, **settings)

    def __reduce__(self) -> str | tuple[Any, ...]:
        if _importable_by_name(self):
            return self.__qualname__
        return (
            _rebuild,
            (
                self.func,
                self.radius,
                self.dtype,
                self.outputs,
                self.boundary,
                self.cval,
                self.compile,
            ),
        )

    def for_tiles(
        self, plan: Plan, image_dtype: np.dtype, shape: tuple[int, ...]
    ) -> tuple[Callable[..., Any], Plan]:
        """Check a map_tiles plan against the kernel, compile it, and give the tile function.

        Compiling here, in the caller and before any tile runs, makes a
        kernel numba cannot compile an error of the call rather than of its
        first tile, and fills numba's disk cache for worker processes.
        """
        name, r, k = self.__qualname__, self.radius, self.ndim
        if plan.pass_tile:
            raise ArgumentError(
                f"pass_tile=True: pixelwise kernel {name!r} is called per pixel with its "
                "indices and takes no tile; leave pass_tile out"
            )
        if len(plan.tile) != k or len(shape) not in (k, k + 1):
            what = (
                "an image, (H, W) or (H, W, C)" if k == 2 else "a volume, (Z, Y, X) or (Z, Y, X, C)"
            )
            raise ArgumentError(
                f"tile={plan.tile}: pixelwise kernel {name!r} takes {k} indices and runs over "
                f"{what}, its {k} axes tiled; this image has shape {shape}"
            )
        if any(h < reach for h, reach in zip(plan.halo, self.reach, strict=True)):
            raise ArgumentError(
                f"halo={plan.halo}: pixelwise kernel {name!r} reads up to radius={r} pixels "
                f"away, so the halo must be at least {r} on each axis (leave halo out to get it)"
            )
        if "none" in modes(plan.boundary, k) and max(self.reach) > 0:
            raise ArgumentError(
                f"boundary='none': pixelwise kernel {name!r} reads {r} pixels around every "
                "pixel, at the image's edges too; choose a boundary that pads, such as 'reflect'"
            )
        self.loop_for(image_dtype, shape)
        return PixelwiseTiles(self), replace(plan, pass_tile=True)

    def loop_for(
        self, image_dtype: np.dtype, shape: tuple[int, ...], parallel: bool = False
    ) -> Loop:
        """The loop over a block's pixels for images of this dtype and ndim, compiled once.

        Before compiling, the kernel's reads are checked against its radius
        (:mod:`tilewise._reach`), on a block with ``shape``'s channels.
        ``parallel``: the loop that runs its first axis in numba's threads.
        """
        key = (np.dtype(image_dtype), len(shape), parallel and self.compile)
        loop = self._loops.get(key)
        if loop is None:
            # One compilation per key even when several threads ask at once.
            with self._lock:
                loop = self._loops.get(key)
                if loop is None:
                    channels = shape[self.ndim] if len(shape) == self.ndim + 1 else None
                    check_reach(self.func, self.__qualname__, self.reach, key[0], channels)
                    loop = self._build_loop(*key)
                    self._loops[key] = loop
        return loop

    def _build_loop(self, image_dtype: np.dtype, ndim: int, parallel: bool) -> Loop:
        if not self.compile:
            from tilewise._codegen import python_loop

            return python_loop(self.func, self.reach)
        import_optional("numba", f"compiling pixelwise kernel {self.__qualname__!r}")
        from tilewise._codegen import Compiler

        if self._compiler is None:
            self._compiler = Compiler(
                self.func, radius=self.reach, outputs=self.outputs, out_dtype=self.dtype
            )
        return self._compiler.compile(image_dtype, ndim, parallel)

    def compute(
        self, block: np.ndarray, origin: tuple[int, ...], shape: tuple[int, ...]
    ) -> np.ndarray:
        """The kernel at the pixels of ``block`` from ``origin`` (row, col), ``shape`` of them."""
        out = np.empty(self._out_shape(shape), self.dtype)
        self.compute_into(block, origin, out)
        return out

    def compute_into(self, block: np.ndarray, origin: tuple[int, ...], out: np.ndarray) -> None:
        """Like :meth:`compute`, into ``out``, a C-contiguous array of the output's dtype."""
        k = self.ndim
        beyond = tuple(o + n for o, n in zip(origin, out.shape[:k], strict=True))
        after = np.subtract(block.shape[:k], beyond)
        if (np.subtract(origin, self.reach) < 0).any() or (after < self.reach).any():
            # The compiled loop reads without checking: never let it past the block.
            raise ValueError(
                f"pixels {origin} to {beyond} of a block of shape {block.shape} lack the "
                f"radius={self.radius} pixels of context around them"
            )
        loop = self.loop_for(block.dtype, block.shape)
        # The loop's pixels have exactly the radius around them, a constant of its code.
        window = tuple(
            slice(o - r, o + n + r)
            for o, n, r in zip(origin, out.shape[:k], self.reach, strict=True)
        )
        # One compiled layout: C. A copy of an interior tile's strided view
        # costs less than the loop loses when the compiler cannot vectorise
        # loads of unknown stride, and it keeps compiling to once per dtype.
        loop(np.ascontiguousarray(block[window]), out)

    def _out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape) if self.outputs == 1 else (*shape, self.outputs)


@dataclass(frozen=True)
class PixelwiseTiles:
    """``func(block, tile)`` for map_tiles: a kernel over the core pixels of one tile."""

    kernel: Pixelwise

    def __call__(self, block: np.ndarray, tile: Tile) -> np.ndarray:
        origin = tuple(before for before, _ in tile.margins)
        return self.kernel.compute(block, origin, tile.core_shape)


@dataclass(frozen=True)
class _IntoArray:
    """``func(block, tile)`` computing a full-width row strip straight into ``out``.

    It returns the strip's window of ``out``; map_tiles, writing into the same
    ``out``, then assigns the window onto itself, which numpy skips. A whole
    array thus costs no allocation and no copy per tile. In-process only.
    """

    kernel: Pixelwise
    out: np.ndarray

    def __call__(self, block: np.ndarray, tile: Tile) -> np.ndarray:
        window = self.out[tile.slices]  # full rows: C-contiguous
        origin = tuple(before for before, _ in tile.margins)
        self.kernel.compute_into(block, origin, window)
        return window


@dataclass(frozen=True)
class _SlabsIntoArray:
    """As :class:`_IntoArray` for a volume's slabs of planes, each run on numba's threads.

    map_tiles hands it each slab's planes with no halo (a view it does not
    read): the padder gathers the slab with its context, in parallel, and
    the kernel's parallel loop computes it straight into ``out``.
    """

    kernel: Pixelwise
    out: np.ndarray
    padder: SlabPadder
    threads: int

    def __call__(self, block: np.ndarray, tile: Tile) -> np.ndarray:
        import numba

        planes = tile.slices[0]
        window = self.out[planes]  # whole planes: C-contiguous
        loop = self.kernel.loop_for(self.padder.volume.dtype, self.padder.volume.shape, True)
        # One parallel loop at a time: numba's default threading layer runs one.
        with _PARALLEL_LOOP:
            numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
            loop(self.padder.pad(planes), window)
        return window


@functools.lru_cache(maxsize=64)
def _rebuild(
    func: Callable[..., Any],
    radius: int,
    dtype: np.dtype,
    outputs: int,
    boundary: str,
    cval: float,
    compile: bool,
) -> Pixelwise:
    """A kernel sent by value; the same object for the same function, so it compiles once."""
    return Pixelwise(
        func,
        radius=radius,
        dtype=dtype,
        outputs=outputs,
        boundary=boundary,
        cval=cval,
        compile=compile,
    )


def _is_count(workers: Any) -> bool:
    return workers is None or (isinstance(workers, int) and workers >= 1)


def _importable_by_name(kernel: Pixelwise) -> bool:
    """Whether a fresh interpreter finds this very kernel as ``module.qualname``.

    Not for ``__main__`` (a notebook or script), nor for a module loaded from
    outside ``sys.path`` (pytest's importlib mode, runpy): those go by value.
    """
    module_name = kernel.__module__
    module = sys.modules.get(module_name)
    if module is None or module_name == "__main__" or "<locals>" in kernel.__qualname__:
        return False
    found: Any = module
    for part in kernel.__qualname__.split("."):
        found = getattr(found, part, None)
    if found is not kernel:
        return False
    return importable_module(module_name)
