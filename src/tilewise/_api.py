"""``map_tiles``: normalise the arguments into a Plan, then run it on a backend."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from tilewise import _validate as check
from tilewise._cpus import available_cpus
from tilewise._kernel import TileKernel, default_backend
from tilewise._plan import Plan, make_plan, tiled_axes
from tilewise._progress import progress_bar
from tilewise._stages import Casting, TileJob
from tilewise.boundary import modes
from tilewise.errors import ArgumentError, ArgumentTypeError
from tilewise.executors import make_executor
from tilewise.grid import Grid, Tile
from tilewise.io import (
    NewArray,
    Output,
    in_decode_order,
    is_path,
    open_output,
    open_sink,
    open_source,
)
from tilewise.io.axes import order as axes_order
from tilewise.io.base import image_shape
from tilewise.io.geo import NO_GEOREFERENCE
from tilewise.io.masked import with_mask
from tilewise.io.nodata import FROM_INPUT, MarkNodata, nodata_rule, with_nodata
from tilewise.io.open import axes_of, check_output_axes, georeference_of, short_repr
from tilewise.io.reordered import reordered
from tilewise.io.tiff_encode import make_encoding
from tilewise.io.urls import StoreUrl, check_reachable, check_storage_options
from tilewise.io.xarray import is_data_array, labelled
from tilewise.journal import ResumableRun, run_identity


def map_tiles(
    func: Callable[..., Any],
    image: Any,
    *,
    tile: int | tuple[int, ...] = 512,
    halo: int | tuple[int, ...] | None = None,
    boundary: str | tuple[str, ...] = "reflect",
    axes: str | tuple[str, ...] | None = None,
    cval: float = 0.0,
    dtype: DTypeLike | None = None,
    casting: str = "same_kind",
    workers: int | None = None,
    backend: str | None = None,
    pass_tile: bool = False,
    out: np.ndarray | str | os.PathLike[str] | Any | None = None,
    storage_options: dict[str, Any] | None = None,
    nodata: float | str | None = FROM_INPUT,
    out_nodata: float | None = None,
    metadata: bool = True,
    compression: str | None = None,
    level: int | None = None,
    cog: bool = False,
    overview_resampling: str = "average",
    progress: bool = False,
    start_method: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    resume: bool = False,
    client: Any = None,
    scheduler: str | None = None,
) -> Any:
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
        array whose first dimensions, one per tiled axis (two for an
        image), are the block's (the halo is then trimmed off) or the core
        tile's. Further dimensions must agree between tiles. Or a
        :func:`~tilewise.pixelwise` kernel, run over the core pixels of
        each tile.
    image : array (numpy, masked, zarr, dask, xarray.DataArray) or path
        Shape (H, W) or (H, W, C), or a volume or stack such as (Z, Y, X)
        (see ``tile``), any dtype and memory layout; or the path
        of a ``.npy``, ``.tif``/``.tiff``, ``.zarr``, ``.png`` or ``.jpg``
        file, read window by window (PNG and JPEG are decoded whole). A
        dask array is computed window by window, each tile computing only
        the chunks its block overlaps, where the tile runs. A masked array
        must be of floats: masked pixels reach ``func`` as NaN (the halo
        beyond the edge too), and the result is a masked array, masked
        where the image was and wherever a float result is NaN; a plain
        numpy ``out=`` gets NaN there, a file or zarr array the results as
        they are. An integer masked array is refused (pass
        ``image.astype("float32")``, or ``image.filled(value)``). A
        DataArray gives a DataArray, with its dims, coords, attrs and name
        (see :mod:`tilewise.io.xarray`).
    tile : int, tuple of int, or dict
        Core tile size. An int or a pair tiles the first two axes, rows and
        columns, and passes any further axis (channels) whole; a tuple of k
        sizes tiles the first k axes, e.g. ``(32, 256, 256)`` a (Z, Y, X)
        volume. Tiles at the far end of each axis are smaller. A DataArray's
        dims may be named, ``{"y": 512, "x": 512}``: those are tiled, the
        others passed whole.
    halo : int, tuple of int, or dict, optional
        Context pixels given to ``func`` on each side of a tile, the same
        along every tiled axis, or one per tiled axis (or tiled dim); by
        default 0, or a pixelwise kernel's radius (a smaller halo is an
        error).
    boundary : {"reflect", "mirror", "nearest", "wrap", "constant", "none"} or tuple
        How context beyond the image edge is filled, with the semantics of
        ``scipy.ndimage``'s modes, along every tiled axis or one mode per
        tiled axis (``("wrap", "reflect", "reflect")``); ``"none"`` gives
        edge tiles only the context that exists.
    axes : str or tuple of str, optional
        The axes to tile, by name, in order: ``"zyx"`` tiles z, y and x of a
        (T, Z, C, Y, X) OME-TIFF and passes t and c whole, after them (each
        block is (Z, Y, X, T, C)). For files that name their axes: TIFF
        stacks, OME-TIFF, OME-Zarr, Zarr arrays with ``dimension_names``.
        An int ``tile`` is then the size along each. An ``.ome.tif`` or
        ``.ome.zarr`` output holds the result in the image's own order.
    cval : float
        The fill value for ``boundary="constant"``.
    dtype : dtype, optional
        Output dtype; by default the one numpy promotes the first results to
        (the first wave: one tile per worker), or ``out``'s. Given, it is a
        cast asked for: every result is converted to it as by ``astype``,
        whatever ``casting`` says (an object result too).
    casting : {"same_kind", "no", "equiv", "safe", "unsafe"}
        Which results may go into the output, as in ``numpy.copyto``:
        a result whose dtype ``numpy.can_cast(result, output, casting)``
        refuses fails its tile, before it is written. ``"same_kind"`` (the
        default, as numpy's ``out=``) takes float32 into float64 or int64
        into float32, but refuses float64 into an int32 ``out``; ``"unsafe"``
        truncates as ``astype`` does. A result of Python objects is refused
        whatever the casting, unless ``dtype`` converts it.
    workers : int, optional
        Tiles computed at once; by default the CPUs this process may use.
        With ``"dask"``: the workers of the ``LocalCluster`` started when no
        cluster is given; on a cluster given, at most this many of its
        threads are kept busy (by default, all of them).
    backend : {"processes", "threads", "serial", "dask"}, optional
        Where tiles run. ``"processes"`` (the default for plain functions)
        runs pure-Python code on every core, with the image and result in
        shared memory; ``"threads"`` suits functions that release the GIL
        (numpy, scipy, compiled kernels); ``"dask"`` runs each tile as a Dask
        distributed task (see ``client`` and ``scheduler``), the default
        when either is given.
    pass_tile : bool
        Call ``func(block, tile)`` with the :class:`~tilewise.Tile`.
    out : numpy.ndarray, zarr.Array or path, optional
        Write into this array (first two dimensions those of ``image``)
        instead of a new one; a zarr array's chunks must not straddle tiles.
        A path (``.npy``, ``.tif``, ``.zarr``, ``.png``, ``.jpg``) is written
        tile by tile by the workers, with nothing whole-image in memory:
        peak memory is about ``workers`` x 2 (tiles in flight) x the
        block's bytes in and out, whatever the image size. The file appears
        at ``out`` only once complete (see :mod:`tilewise.journal`), and
        replaces what was there, as ``numpy.save`` and rasterio's ``"w"``
        mode do (a folder that is not a Zarr store is refused);
        ``tilewise apply`` refuses an existing output unless ``--overwrite``.
        A ``.tif`` output of a GeoTIFF ``image`` is georeferenced as the
        image is (see ``metadata``).
    storage_options : dict, optional
        Options of the filesystem a URL ``image`` or ``out`` is opened with
        (``s3://``, ``gs://``, ``az://``, ``https://``, ``memory://``...), as
        fsspec, zarr and dask take them: ``{"anon": True}``,
        ``{"endpoint_url": ...}``, credentials. A URL ``out`` is a Zarr
        store, written in place; its journal and lock are local files (see
        :func:`tilewise.io.urls.state_dir`). No credential is written to
        the journal or shown in an error; workers get the options with
        their tasks, as fsspec's own filesystems do.
    nodata : float, None or "input"
        The value of pixels that carry no value; by default the GeoTIFF
        image's own (its GDAL nodata tag), else none. They reach ``func`` as
        NaN, an integer image being read as floats for that (``float32``
        up to 16 bits, else ``float64``), and so do NaN pixels of a float
        image; the halo beyond the image's edge is padded from those NaN.
        The output holds ``out_nodata`` wherever the image had nodata (in
        any band) and wherever a float result is NaN.
    out_nodata : float, optional
        The output's nodata value, declared in a ``.tif`` output; by default
        the image's nodata value if the output's dtype holds it, else NaN
        for a float output (an integer output that cannot hold the image's
        value needs one). Given alone, it marks NaN results and NaN pixels.
    metadata : bool
        Carry a GeoTIFF image's georeferencing to a ``.tif`` output: its CRS,
        geotransform (rotation terms included), GCPs, RPCs, pixel-is-area or
        -point, and band descriptions when the band count is unchanged.
        ``False`` writes none of it (nodata is set by ``out_nodata``).
    compression : {"zstd", "deflate", "lzw", "jpeg"}, optional
        Compress a ``.tif`` output's tiles (256 x 256), with a predictor
        for the lossless codecs; ``"jpeg"`` for 8-bit images of 1 or 3
        bands. The tiles are encoded once all are computed, on every CPU;
        the uncompressed result needs room on disk beside the output meanwhile.
    level : int, optional
        The codec's level (zstd 1-22, default 9; deflate 1-9, default 6)
        or JPEG's quality (1-100, default 75): GDAL's defaults.
    cog : bool
        Write a ``.tif`` output as a Cloud-Optimized GeoTIFF (GDAL's COG
        driver, through rasterio: tiles of 512, overviews built from the
        result), compressed per ``compression``.
    overview_resampling : str
        How ``cog=True`` makes its overviews: "average" (the default),
        "nearest", "bilinear", "cubic", "cubicspline", "lanczos", "mode" or "rms".
    progress : bool
        Show a progress bar (tiles, rate, ETA) on stderr.
    start_method : {"fork", "spawn", "forkserver"}, optional
        How ``"processes"`` starts its workers (refused with other backends);
        by default the process-wide :mod:`multiprocessing` start method.
        Worker processes and shared memory are kept for the next call;
        ``tilewise.shutdown()`` frees them (done at exit).
    retries : int, optional
        With ``"processes"``: how many more times a tile is tried when the
        worker process running it dies (segfault, ``os._exit``, out of memory);
        2 by default. Dask retries by its own setting,
        ``distributed.scheduler.allowed-failures``.
    timeout : float, optional
        With ``"processes"``: seconds a tile may run; a tile that runs longer
        has its worker killed and fails the run.
    resume : bool
        With a path ``out``: finish an interrupted run, computing only the
        tiles its journal does not record; refused, saying why, when the
        input, function, tile, halo, boundary or dtype changed.
    client : distributed.Client, optional
        With ``"dask"``: the cluster to run on. Without ``client`` or
        ``scheduler``, the current default client, or else a ``LocalCluster``
        of this machine's CPUs, started and closed with the call. Files are
        read and written by the workers: they must see the same paths, or
        be URLs of object storage, which needs no shared disk.
    scheduler : str, optional
        With ``"dask"``: the address of the cluster's scheduler,
        ``"tcp://HOST:PORT"`` (or ``"tls://..."``, with Dask's TLS settings).

    Returns
    -------
    numpy.ndarray, zarr.Array, pathlib.Path or str
        Shape (H, W) plus the extra dimensions of ``func``'s results; ``out``
        when given (as a :class:`~pathlib.Path` for a file, the URL as given
        for a store behind one); for a masked
        ``image``, a ``numpy.ma.MaskedArray``.

    Raises
    ------
    tilewise.ArgumentError, tilewise.ArgumentTypeError
        A bad argument, before any tile runs (also ``ValueError``/``TypeError``).
    tilewise.TileError
        ``func`` failed, or returned a wrong shape or a dtype ``casting``
        does not let into the output, on a tile, which it names.
    tilewise.WorkerDiedError, tilewise.TileTimeoutError
        With ``"processes"`` or ``"dask"``: a tile killed its worker on every
        attempt; with ``"processes"``: a tile ran past ``timeout``.

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
    user_func = func
    labels = labelled(image, tile, halo, boundary) if is_data_array(image) else None
    if labels is not None:  # its data, the tiled dims first
        image, tile, halo, boundary = labels.data, labels.tile, labels.halo, labels.boundary
    check_storage_options(storage_options, image, out)
    source = open_source(image, storage_options)
    encoding = make_encoding(compression, level, cog, overview_resampling)
    georeference = georeference_of(source)
    image_axes, order = axes_of(source), None
    if axes is not None:  # the axes named are tiled, in that order; the others follow
        order = axes_order(axes, image_axes.names, tuple(source.shape))
        tile = _tile_for_axes(tile, axes)
        source, image_axes = reordered(source, order), image_axes.reordered(order)
    rule = nodata_rule(nodata, out_nodata, source.dtype, georeference.nodata)
    if rule is not None:
        source = with_nodata(source, rule.nodata)
    kernel = func if isinstance(func, TileKernel) else None
    if halo is None:  # a kernel's radius; one int for all axes, whatever the tile says
        halo = 0 if kernel is None else kernel.radius
    if kernel is not None and check.is_int(tile):  # as many tiled axes as the kernel has indices
        tile = (tile,) * kernel.ndim
    plan = make_plan(
        tile=tile,
        halo=halo,
        boundary=boundary,
        cval=cval,
        dtype=dtype,
        casting=casting,
        workers=workers,
        backend=backend,
        pass_tile=pass_tile,
        progress=progress,
        image_dtype=source.dtype,
        default_backend=default_backend(func),
        start_method=start_method,
        retries=retries,
        timeout=timeout,
        resume=resume,
        client=client,
        scheduler=scheduler,
    )
    tiled_axes(plan, tuple(source.shape))
    if kernel is not None:
        func, plan = kernel.for_tiles(plan, source.dtype, tuple(source.shape))
    identity_plan = plan  # a resumed run must agree with it; pass_tile as the user gave it
    if rule is not None:
        func = MarkNodata(func, plan.pass_tile, rule, plan.dtype)
        plan = replace(plan, pass_tile=True)
    carried = georeference if check.flag("metadata", metadata) else NO_GEOREFERENCE
    output = (
        open_output(out, encoding, carried, rule, plan.dtype, storage_options, image_axes, order)
        if is_path(out)
        else None
    )
    check_output_axes(output, plan.tile)
    if output is None:
        encoding.refuse(out)
    check_reachable("image", source.path, plan.backend)
    check_reachable("out", None if output is None else output.path, plan.backend)
    if plan.resume and output is None:
        raise ArgumentError(f"resume=True: needs out= a file path, not {short_repr(out)}")
    sink = None if out is None or output is not None else open_sink(out, source, plan.tile)
    if sink is not None and plan.dtype is not None:
        _check_dtype_fits(plan.dtype, sink.dtype, plan.casting)
    grid = Grid(
        shape=image_shape(source, len(plan.tile)),
        tile=plan.tile,
        halo=plan.halo,
        clip_halo=tuple(mode == "none" for mode in modes(plan.boundary, len(plan.tile))),
    )
    job = TileJob(
        func=func,
        source=source,
        sink=sink,
        boundary=plan.boundary,
        cval=plan.cval,
        pass_tile=plan.pass_tile,
        tiled=len(plan.tile),
        dtype=plan.dtype,
        casting=plan.casting,
    )
    if output is None:
        result = NewArray() if out is None else None
        _run(job, list(grid), result, plan)
        # A masked image's mask goes to the result (tilewise.io.masked).
        result_array = out if result is None else result.array
        made = with_mask(source, result_array, made=result is not None, tiled=len(plan.tile))
        return made if labels is None or out is not None else labels.wrap(made)
    identity = run_identity(source, user_func, identity_plan, rule)
    # A file run holds the output's lock until its workers have stopped.
    with ResumableRun(output, identity, plan.resume, plan.tile) as run:
        tiles = [tile for tile in grid if tile.index not in run.done]
        # A resumed run's output is there already; a new one is made from the first wave.
        _run(replace(job, sink=run.sink), tiles, run, plan, record=run.tile_done)
    return out if isinstance(output.path, StoreUrl) else output.path


def _tile_for_axes(tile: Any, axes: Any) -> Any:
    """``tile`` for the axes ``axes=`` names: an int is the size along each."""
    if check.is_int(tile):
        return (tile,) * len(axes)
    if isinstance(tile, (tuple, list)) and len(tile) != len(axes):
        raise ArgumentError(
            f"tile={tile!r}: {len(tile)} sizes, but axes={axes!r} names {len(axes)} axes to tile"
        )
    return tile


def _check_dtype_fits(dtype: np.dtype, out_dtype: np.dtype, casting: Casting) -> None:
    """Refuse ``dtype=`` that ``casting`` would not let into ``out``: known before any tile runs."""
    if not np.can_cast(dtype, out_dtype, casting):
        raise ArgumentError(
            f"dtype={dtype.name!r}: casting={casting!r} does not cast {dtype} to out's "
            f"{out_dtype}; pass dtype={out_dtype.name!r} (or leave dtype out), or "
            "casting='unsafe' to cast as astype does"
        )


def _run(
    job: TileJob,
    tiles: list[Tile],
    output: Output | None,
    plan: Plan,
    record: Callable[[Tile], None] | None = None,
) -> None:
    """Compute ``tiles`` on the plan's backend, into the job's sink or ``output``, made first."""
    # Threads share one process's cache of decoded chunks; a worker process or a task has its own.
    in_flight = (plan.workers or available_cpus()) if plan.backend == "threads" else 1
    tiles = in_decode_order(tiles, job.source, plan.tile, plan.halo, in_flight)
    executor = make_executor(
        plan.backend,
        None if plan.workers is None else min(plan.workers, max(len(tiles), 1)),
        start_method=plan.start_method,
        retries=plan.retries,
        timeout=plan.timeout,
        client=plan.client,
        scheduler=plan.scheduler,
    )
    try:
        with progress_bar(len(tiles), plan.progress) as bar:
            for done in executor.run(job, tiles, output):
                if record is not None:
                    record(done)  # its data is written; the journal records it once on disk
                bar.update()
    finally:
        executor.close()
