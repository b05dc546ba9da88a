"""Tiles as Dask distributed tasks: the same tiles, on a cluster the user already runs.

Each tile is one task running :func:`tilewise._stages.run_tile`. What
travels, and how often:

- the job (function, source, sink) is pickled once per run, by tilewise's
  rules (functions by value when workers could not import them), and
  broadcast to every worker; each worker unpickles it once;
- a file input travels as its path: workers open it and read their windows
  themselves, so no pixel passes through the client or the scheduler; an
  in-memory image is scattered to every worker once, before the first tile;
- a file output is written by the workers, one tile-aligned region per task,
  and forced to disk before the task reports it done, so the client's
  resume journal only ever records tiles that are on disk wherever the
  worker runs; an in-memory result comes back tile by tile and the client
  writes it into its numpy array.

Only a bounded number of tiles are in flight (:data:`IN_FLIGHT_PER_THREAD`
per worker thread): the client's memory stays bounded whatever the image
size, and a failure stops the run promptly. A worker that dies has its tasks
run again elsewhere by Dask (up to the scheduler's
``distributed.scheduler.allowed-failures``); past that, the tile fails with
:class:`~tilewise.WorkerDiedError`.

Which cluster: ``client=`` when given; else the scheduler at
``scheduler="tcp://HOST:PORT"``; else the current default client (the last
``distributed.Client`` made); else a ``LocalCluster`` of single-threaded
worker processes, started for the run and closed with it.

Examples
--------
>>> import numpy as np, tilewise
>>> from distributed import Client, LocalCluster
>>> with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
...     with Client(cluster) as client:
...         tilewise.map_tiles(np.square, np.arange(6.0).reshape(2, 3), tile=1,
...                            backend="dask", client=client)
array([[ 0.,  1.,  4.],
       [ 9., 16., 25.]])
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import pickle
import time
import uuid
from collections.abc import Generator, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from tilewise._optional import import_optional
from tilewise._plan import available_cpus
from tilewise._stages import TileJob, run_tile
from tilewise.errors import TileError, WorkerDiedError
from tilewise.executors._transport import pickle_job
from tilewise.executors.base import Completed
from tilewise.grid import Tile
from tilewise.io import ArraySink, ArraySource, Sink, Source
from tilewise.io.base import FileSink

__all__ = ["DaskExecutor", "ScatteredSource"]

#: Tiles submitted and not yet collected, per worker thread: the next tile
#: is already on the worker when one finishes, and few enough that results
#: waiting on the client stay small and a failure stops the run promptly.
IN_FLIGHT_PER_THREAD = 2
#: Seconds between looks at the cluster's size: workers may join or leave
#: during a run (an adaptive cluster, a worker lost and replaced).
RESIZE_INTERVAL = 1.0


class ScatteredSource(ArraySource):
    """An in-memory image sent to every worker once; tasks receive it as an argument.

    The caller keeps reading its own array (the job is built from it);
    pickled, it leaves the pixels behind, so the job sent to workers stays small.
    """

    def __init__(self, array: np.ndarray, future: Any) -> None:
        super().__init__(array)
        self.future = future

    def __reduce__(self) -> tuple[type, tuple[tuple[int, ...], np.dtype]]:
        return (_ImageInTask, (self.array.shape, self.array.dtype))


class _ImageInTask:
    """Where a scattered image stands in a worker's job until a task swaps the array in."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = shape
        self.dtype = dtype

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        raise RuntimeError("the scattered image is passed to each task, not kept in the job")


class _ShippedJob:
    """A job pickled once, by tilewise's rules; unpickled once in each worker process.

    Dask moves it between workers as these bytes: a worker never has to
    pickle a function it only received by value.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self._job: TileJob | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"payload": self.payload, "_job": None}

    @property
    def job(self) -> TileJob:
        if self._job is None:  # two threads may both unpickle: one result is kept, both agree
            self._job = pickle.loads(self.payload)
        return self._job


def compute_tile(shipped: _ShippedJob, image: np.ndarray | None, tile: Tile) -> np.ndarray | None:
    """The task: one tile, on a worker. A file output's region is on disk when it returns."""
    job = shipped.job
    if image is not None:
        job = replace(job, source=ArraySource(image))
    core = run_tile(job, tile)
    if isinstance(job.sink, FileSink):
        # The client's journal records the tile once this returns; on another
        # machine, only the writer can force its own writes to shared storage.
        job.sink.sync([(tile.y, tile.x)])
    return core


class DaskExecutor:
    """Runs tiles as tasks on a Dask cluster; see the module docstring.

    ``workers`` sizes the ``LocalCluster`` started when no cluster is at
    hand (None: the CPUs this process may use); on a cluster given or found,
    it caps the worker threads kept busy (None: all of them).
    """

    def __init__(
        self, workers: int | None, *, client: Any = None, scheduler: str | None = None
    ) -> None:
        distributed = import_optional("distributed", "backend='dask'")
        self.workers = workers
        self._cluster: Any = None
        self._own_client = client is None
        if client is None and scheduler is not None:
            client = _connect(distributed, scheduler)
        elif client is None:
            with contextlib.suppress(ValueError):  # no client yet: start a cluster below
                client = distributed.default_client()
            self._own_client = client is None
        if client is None:
            client = self._start_cluster(distributed, workers or available_cpus())
        self.client = client
        self._killed_worker: type[Exception] = distributed.KilledWorker
        self._as_completed = distributed.as_completed
        self._scattered: list[Any] = []
        self._run: Generator[Completed, None, None] | None = None

    def _start_cluster(self, distributed: Any, workers: int) -> Any:
        """A LocalCluster of single-threaded worker processes, for this run only."""
        self._cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,  # pure-Python functions hold the GIL: one thread per process
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # A tile's error reaches the caller as a TileError; the workers'
            # own log of it would print the same traceback again.
            silence_logs=logging.CRITICAL,
        )
        try:
            return distributed.Client(self._cluster, set_as_default=False)
        except BaseException:
            self._cluster.close()
            raise

    def share(self, source: Source) -> Source:
        """An in-memory image scattered to every worker, once; a file source as it is."""
        if not isinstance(source, ArraySource) or isinstance(source, ScatteredSource):
            return source  # files (and zarr arrays) pickle small; workers open their own
        future = self.client.scatter(source.array, broadcast=True, hash=False)
        self._scattered.append(future)
        return ScatteredSource(source.array, future)

    def share_sink(self, sink: Sink) -> Sink:
        return sink  # a numpy array is written here, by run(); other sinks by the workers

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> ArraySink:
        return ArraySink(np.empty(shape, dtype))

    def run(self, job: TileJob, tiles: Sequence[Tile]) -> Iterator[Completed]:
        self._run = self._completed(job, tiles)
        return self._run

    def close(self) -> None:
        try:
            if self._run is not None:
                self._run.close()  # cancels the tiles still queued if the caller stopped early
        finally:
            for future in self._scattered:
                future.release()
            self._scattered.clear()
            if self._own_client:
                self.client.close()
            if self._cluster is not None:
                self._cluster.close()

    def _completed(self, job: TileJob, tiles: Sequence[Tile]) -> Generator[Completed, None, None]:
        # A numpy output lives in this process: tasks return their core and it is written here.
        here = job.sink if isinstance(job.sink, ArraySink) else None
        image = job.source.future if isinstance(job.source, ScatteredSource) else None
        payload = pickle_job(job if here is None else replace(job, sink=None))
        shipped = self.client.scatter(_ShippedJob(payload), broadcast=True, hash=False)
        name = f"tilewise-{uuid.uuid4().hex[:12]}"
        pending = iter(tiles)
        running: dict[Any, Tile] = {}
        completed = self._as_completed(
            with_results=True, raise_errors=False, loop=self.client.loop
        )

        def submit(count: int) -> None:
            for tile in list(itertools.islice(pending, max(count, 0))):
                future = self.client.submit(
                    compute_tile, shipped, image, tile, key=(name, *tile.index), pure=False
                )
                running[future] = tile
                completed.add(future)

        window = _Window(self.client, self.workers)
        try:
            submit(window.size())
            for future, result in completed:
                tile = running.pop(future)
                core = self._result(future, result, tile)
                future.release()
                submit(window.size() - len(running))
                if here is not None:
                    assert core is not None
                    here.write(tile.y, tile.x, core)
                    core = None
                yield tile, core
        finally:
            if running:
                # Queued tiles never start; those already running finish on their workers.
                self.client.cancel(list(running))
            shipped.release()

    def _result(self, future: Any, result: Any, tile: Tile) -> np.ndarray | None:
        """The task's result, or its failure as the error naming the tile."""
        if future.status != "error":
            return result
        try:
            future.result()  # raises the worker's exception, its traceback attached
        except TileError:
            raise
        except self._killed_worker as exc:
            killed: Any = exc
            raise WorkerDiedError(
                tile,
                f"the Dask worker running it died on all {killed.allowed_failures + 1} attempts "
                "(the scheduler's distributed.scheduler.allowed-failures is "
                f"{killed.allowed_failures}); the last was {killed.last_worker.address}",
            ) from exc
        except Exception as exc:
            raise TileError(tile, f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError(f"future {future.key!r} erred but raised nothing")


class _Window:
    """How many tiles to keep in flight: per thread of the cluster, looked at now and then."""

    def __init__(self, client: Any, workers: int | None) -> None:
        self.client = client
        self.workers = workers
        self._size = 0
        self._checked = -float("inf")

    def size(self) -> int:
        now = time.monotonic()
        if now - self._checked >= RESIZE_INTERVAL:
            threads = sum(self.client.nthreads().values())
            if self.workers is not None:
                threads = min(threads, self.workers)
            # With no worker yet (a cluster scaling up), a few tiles wait at the scheduler.
            self._size = IN_FLIGHT_PER_THREAD * max(threads, 1)
            self._checked = now
        return self._size


def _connect(distributed: Any, scheduler: str) -> Any:
    try:
        return distributed.Client(scheduler, set_as_default=False)
    except OSError as exc:
        raise OSError(
            f"scheduler={scheduler!r}: no Dask scheduler answered there ({exc}); start one "
            "(dask scheduler) or check the address"
        ) from exc
