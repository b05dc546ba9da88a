"""What ``map_tiles`` asks of a kernel that brings its own tiling (a ``pixelwise`` kernel).

``map_tiles`` recognises such a kernel by this protocol alone: it takes the
halo and the default backend from it, and runs the function it returns
for tiles. A plain function is none of this, and runs as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from tilewise._plan import Plan

#: Where plain Python functions run by default: they hold the GIL.
PLAIN_FUNCTION_BACKEND = "processes"


@runtime_checkable
class TileKernel(Protocol):
    """A callable that knows how far it reads, where it runs best, and its per-tile form."""

    #: The Python function the kernel was made from: what a resumed run must share.
    func: Callable[..., Any]
    #: How far from a pixel the kernel reads, as declared: one int, or one per axis.
    radius: int | tuple[int, ...]
    #: The axes it tiles: one index per axis in its function (2, or 3 for a volume).
    ndim: int
    #: How far it reads along each of them: the halo it needs at least.
    reach: tuple[int, ...]

    @property
    def default_backend(self) -> str: ...

    def for_tiles(
        self, plan: Plan, image_dtype: np.dtype, shape: tuple[int, ...]
    ) -> tuple[Callable[..., Any], Plan]:
        """Check ``plan`` against the kernel; the function to call per tile, and the plan."""
        ...


def default_backend(func: Callable[..., Any]) -> str:
    """``"processes"`` for plain functions, as Python code holds the GIL; a kernel's own otherwise.

    >>> default_backend(len)
    'processes'
    """
    return func.default_backend if isinstance(func, TileKernel) else PLAIN_FUNCTION_BACKEND
