"""``map_tiles``: normalise the arguments into a Plan, then run it on a backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from tilewise._plan import Plan, make_plan
from tilewise._progress import progress_bar
from tilewise._stages import TileJob
from tilewise.errors import ArgumentTypeError
from tilewise.executors import Executor, make_executor
from tilewise.grid import Grid
from tilewise.io import ArraySink, Source, open_sink, open_source
from tilewise.io.base import image_shape


def map_tiles(
    func: Callable[..., Any],
    image: Any,
    *,
    tile: int | tuple[int, int] = 512,
    halo: int | tuple[int, int] = 0,
    boundary: str = "reflect",
    cval: float = 0.0,
    dtype: DTypeLike | None = None,
    workers: int | None = None,
    backend: str | None = None,
    pass_tile: bool = False,
    out: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Apply ``func`` to every tile of ``image`` and assemble the result.

    The result never depends on ``tile``, ``workers`` or ``backend``: for a
    function that looks no further than ``halo`` pixels, it equals ``func``
    applied to the whole image padded per ``boundary``, with the padding
    trimmed off.

    Parameters
    ----------
    func : callable
        ``func(block)`` (or ``func(block, tile)`` with ``pass_tile=True``)
        receives a tile plus its halo as a read-only array and returns an
        array whose first two dimensions are the block's (the halo is then
        trimmed off) or the core tile's. Further dimensions must agree
        between tiles.
    image : numpy.ndarray
        Shape (H, W) or (H, W, C), any dtype and memory layout.
    tile : int or (int, int)
        Core tile size in (rows, cols); tiles on the bottom and right edges
        are smaller.
    halo : int or (int, int)
        Context pixels given to ``func`` on each side of a tile.
    boundary : {"reflect", "mirror", "nearest", "wrap", "constant", "none"}
        How context beyond the image edge is filled, with the semantics of
        ``scipy.ndimage``'s modes; ``"none"`` gives edge tiles only the
        context that exists.
    cval : float
        The fill value for ``boundary="constant"``.
    dtype : dtype, optional
        Output dtype; by default that of the first tile's result.
    workers : int, optional
        Tiles computed at once; by default the CPUs this process may use.
    backend : {"threads", "serial"}, optional
        Where tiles run; ``"threads"`` suits functions that release the GIL.
    pass_tile : bool
        Call ``func(block, tile)`` with the :class:`~tilewise.Tile`.
    out : numpy.ndarray, optional
        Write into this array (first two dimensions those of ``image``)
        instead of a new one.
    progress : bool
        Show a progress bar (tiles, rate, ETA) on stderr.

    Returns
    -------
    numpy.ndarray
        Shape (H, W) plus the extra dimensions of ``func``'s results; ``out``
        when given.

    Raises
    ------
    tilewise.ArgumentError, tilewise.ArgumentTypeError
        A bad argument, before any tile runs (also ``ValueError``/``TypeError``).
    tilewise.TileError
        ``func`` failed or returned a wrong shape on a tile, which it names.

    Examples
    --------
    >>> import numpy as np, tilewise
    >>> image = np.arange(12.0).reshape(3, 4)
    >>> tilewise.map_tiles(np.square, image, tile=2, backend="serial")
    array([[  0.,   1.,   4.,   9.],
           [ 16.,  25.,  36.,  49.],
           [ 64.,  81., 100., 121.]])

    A 3x3 mean needs one pixel of context around each tile:

    >>> from scipy import ndimage as ndi
    >>> smooth = tilewise.map_tiles(lambda b: ndi.uniform_filter(b, 3), image,
    ...                             tile=2, halo=1, backend="threads")
    >>> np.allclose(smooth, ndi.uniform_filter(image, 3))
    True
    """
    if not callable(func):
        raise ArgumentTypeError(f"func={func!r}: must be callable")
    source = open_source(image)
    plan = make_plan(
        tile=tile,
        halo=halo,
        boundary=boundary,
        cval=cval,
        dtype=dtype,
        workers=workers,
        backend=backend,
        pass_tile=pass_tile,
        progress=progress,
        image_dtype=source.dtype,
        default_backend="threads",
    )
    sink = None if out is None else open_sink(out, source)
    grid = Grid(
        shape=image_shape(source), tile=plan.tile, halo=plan.halo, clip_halo=plan.boundary == "none"
    )
    executor = make_executor(plan.backend, plan.workers)
    try:
        return _run(func, source, sink, plan, grid, executor)
    finally:
        executor.close()


def _run(
    func: Callable[..., Any],
    source: Source,
    sink: ArraySink | None,
    plan: Plan,
    grid: Grid,
    executor: Executor,
) -> np.ndarray:
    job = TileJob(
        func=func,
        source=source,
        sink=sink,
        boundary=plan.boundary,
        cval=plan.cval,
        pass_tile=plan.pass_tile,
        dtype=plan.dtype,
        trailing=None if sink is None else sink.shape[2:],
    )
    tiles = list(grid)
    with progress_bar(len(tiles), plan.progress) as bar:
        if sink is None:
            # The output's dtype and extra dimensions come from the first real result.
            first, core = next(iter(executor.run(job, tiles[:1])))
            assert core is not None
            sink = executor.allocate(image_shape(source) + core.shape[2:], core.dtype)
            sink.write(first.y, first.x, core)
            bar.update()
            job = replace(job, sink=sink, trailing=core.shape[2:])
            tiles = tiles[1:]
        for _ in executor.run(job, tiles):
            bar.update()
    return sink.array
