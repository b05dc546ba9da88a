"""Tiles as Dask distributed tasks: the same tiles, on a cluster the user already runs.

Each task runs :func:`tilewise._stages.run_tile` on one tile, or on a few
consecutive tiles when tiles are quick: Dask spends milliseconds on every
task, so tiles that take less travel several to a task (see
:data:`TASK_SECONDS`). What travels, and how often:

- the job (function, source, sink) is pickled once per run, by tilewise's
  rules (functions by value when workers could not import them); when small,
  as it nearly always is, these bytes go with every task, which then
  depends on nothing and goes to whichever worker is free; when large (a
  function holding much data), they are one task whose result each worker
  fetches and unpickles once (should every worker holding it die, the
  scheduler makes it again);
- a file input travels as its path: workers open it and read their windows
  themselves, so no pixel passes through the client or the scheduler;
- an in-memory image, when every worker runs on the caller's machine (a
  ``LocalCluster``, or a cluster of one big machine), travels not at all:
  it is copied once into shared memory that the workers map, and they write
  their results into another segment, as on the ``processes`` backend and in
  the same reused segments (:mod:`tilewise.executors._dask_local`);
- otherwise an in-memory image travels in strips, the rows each row of tiles
  reads (halo included), each sent once, when its first tile goes out, and
  Dask runs each tile where its strip is (:mod:`tilewise.executors._dask_strips`);
- a file output is written by the workers, one tile-aligned region per tile;
  a worker on another machine than the client forces its tiles to disk
  before the task reports them done, so the client's resume journal only
  records tiles that are on disk wherever they were computed; an in-memory
  result is written by the workers into shared memory on the caller's
  machine, or else comes back tile by tile and the client writes it into
  its numpy array.

Only a bounded number of tasks are in flight (:data:`IN_FLIGHT_PER_THREAD`
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
import logging
import math
import pickle
import socket
import time
import traceback
import uuid
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tilewise._cpus import available_cpus
from tilewise._optional import import_optional
from tilewise._stages import LOAD, WRITE, TileJob, run_tile, tile_error
from tilewise.errors import SchedulerUnreachableError, TileError, WorkerDiedError
from tilewise.executors._dask_local import LocalSink, LocalSource, workers_share_memory
from tilewise.executors._dask_strips import InMemorySource, Rows, Strips
from tilewise.executors._signals import stop_on_sigterm
from tilewise.executors._transport import pickle_job, shared_copy
from tilewise.executors.base import Completed, Executor, Settle, copy_back
from tilewise.grid import Tile
from tilewise.io import ArraySink, ArraySource, Sink, Source
from tilewise.io.base import FileSink
from tilewise.sharedmem import SharedArray

__all__ = ["DaskExecutor", "workers_share_memory"]

#: Tasks submitted and not yet collected, per worker thread: the next task
#: is already on the worker when one finishes, and few enough that results
#: waiting on the client stay small and a failure stops the run promptly.
IN_FLIGHT_PER_THREAD = 2
#: Seconds a task should last at least: Dask spends milliseconds of the
#: scheduler's and the worker's time on each task, so quicker tiles travel
#: several to a task (consecutive ones, in row-major order).
TASK_SECONDS = 0.1
#: Tiles in one task at most: its results all wait on the worker until the last is done.
MAX_TILES_PER_TASK = 16
#: A pickled job up to this size goes with each task; a larger one is a task
#: of its own, which the tile tasks depend on. A dependency ties tasks to the
#: workers that hold it: Dask places a task only among those.
INLINE_JOB_BYTES = 64 * 2**10
#: The Dask setting of the environment of worker processes, set by their nanny.
PRE_SPAWN_ENVIRON = "distributed.nanny.pre-spawn-environ"
#: The Dask setting by which nannies give their workers MALLOC_TRIM_THRESHOLD_
#: (see DaskExecutor._start_cluster); set to None, workers start without it.
MALLOC_TRIM_SETTING = f"{PRE_SPAWN_ENVIRON}.MALLOC_TRIM_THRESHOLD_"
#: Seconds between looks at the cluster's size: workers may join or leave
#: during a run (an adaptive cluster, a worker lost and replaced).
RESIZE_INTERVAL = 1.0


class _ShippedJob:
    """A job pickled once, by tilewise's rules; unpickled where it is used.

    Dask moves it between workers as these bytes: a worker never pickles a
    function it only received by value. Sent with each task, it is unpickled
    by each task, and dropped with it (a worker keeps a task's arguments for
    a while after it); as a task of its own, once per worker, and kept until
    the run releases it. ``machine`` is the client's (:func:`machine_id`).
    """

    def __init__(self, payload: bytes, machine: str, *, keep: bool = False) -> None:
        self.payload = payload
        self.machine = machine
        self.keep = keep
        self._job: TileJob | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_job": None}

    @property
    def job(self) -> TileJob:
        if not self.keep:
            return pickle.loads(self.payload)
        if self._job is None:  # two threads may both unpickle: one result is kept, both agree
            self._job = pickle.loads(self.payload)
        return self._job


def compute_tiles(
    shipped: _ShippedJob,
    pieces: Sequence[tuple[int, np.ndarray]] | None,
    tiles: tuple[Tile, ...],
) -> tuple[list[np.ndarray | None], float]:
    """The task: a few tiles, in order, on a worker; their results and the seconds each took.

    ``pieces``: the rows of an in-memory image these tiles read. A file
    output's regions are on disk when it returns.
    """
    try:
        return _compute_tiles(shipped, pieces, tiles)
    except BaseException as exc:
        # The worker keeps a failed task's traceback until the client lets go of
        # it: its frames must not keep the blocks, and the caller's memory, mapped.
        _clear_frames(exc)
        raise


def _compute_tiles(
    shipped: _ShippedJob,
    pieces: Sequence[tuple[int, np.ndarray]] | None,
    tiles: tuple[Tile, ...],
) -> tuple[list[np.ndarray | None], float]:
    try:
        job = shipped.job
    except Exception as exc:
        raise tile_error(tiles[0], LOAD, exc)  # noqa: B904 - tile_error chains the cause
    if pieces is not None:
        job = replace(job, source=Rows(job.source.shape, job.source.dtype, pieces))
    start = time.perf_counter()
    cores = [run_tile(job, tile) for tile in tiles]
    seconds = (time.perf_counter() - start) / len(tiles)
    if isinstance(job.sink, FileSink) and shipped.machine != machine_id():
        # The client's journal records the tiles once this returns, and forces
        # them to disk first; but on another machine, only the writer can force
        # its own writes to shared storage (on the client's, they share a page cache).
        try:
            job.sink.sync([tile.slices for tile in tiles])
        except Exception as exc:
            raise tile_error(tiles[0], WRITE, exc)  # noqa: B904 - tile_error chains the cause
    if job.sink is not None:
        # No mapping of a file output outlives the task: Windows could not publish it.
        job.sink.close()
    return cores, seconds


def _clear_frames(exc: BaseException | None) -> None:
    """Drop the local variables of the finished frames of ``exc``'s tracebacks, and its causes'."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)  # skips the frames still running
        exc = exc.__cause__ or exc.__context__


def machine_id() -> str:
    """What tells this machine (its running kernel) from others: Linux's boot id, or the host name.

    Containers on one host share its boot id, and its page cache. Not cached:
    read where it is called, even in a copy of this function sent by value.
    """
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return socket.gethostname()


class DaskExecutor(Executor):
    """Runs tiles as tasks on a Dask cluster; see the module docstring.

    ``workers`` sizes the ``LocalCluster`` started when no cluster is at
    hand (None: the CPUs this process may use); on a cluster given or found,
    it counts as the cluster's threads when fewer (None: all of them).
    """

    def __init__(
        self, workers: int | None, *, client: Any = None, scheduler: str | None = None
    ) -> None:
        distributed = import_optional("distributed", "backend='dask'")
        self.max_workers = workers
        self._cluster: Any = None
        self._own_client = client is None
        # From here SIGTERM unwinds as Ctrl-C does: a cluster started here is closed.
        self._restore_sigterm = stop_on_sigterm()
        try:
            if client is None and scheduler is not None:
                client = _connect(distributed, scheduler)
            elif client is None:
                with contextlib.suppress(ValueError):  # no client yet: start a cluster below
                    client = distributed.default_client()
                self._own_client = client is None
            if client is None:
                client = self._start_cluster(distributed, workers or available_cpus())
        except BaseException:
            self._restore_sigterm()
            raise
        self.client = client
        self._killed_worker: type[Exception] = distributed.KilledWorker
        self._as_completed = distributed.as_completed
        self._run: Generator[Completed, None, None] | None = None
        self._pace = _Pace(client, workers)  # kept across runs: the first run times the tiles
        self._shares_memory: bool | None = None  # asked of the workers when first needed
        self._inputs: list[SharedArray] = []  # shared copies of in-memory images
        self._outputs: list[SharedArray] = []  # shared outputs, handed to the caller
        # A task cancelled may still run, and map a segment it was given, after
        # the run: such segments must not be reused for another run's arrays.
        self._tasks_may_run = False

    def _start_cluster(self, distributed: Any, workers: int) -> Any:
        """A LocalCluster of single-threaded worker processes, for this run only."""
        import dask.config

        # Dask has workers hand freed memory back to the system at once
        # (MALLOC_TRIM_THRESHOLD_); tiles allocate arrays of megabytes, and that
        # cost them a third more CPU time. This cluster ends with the run anyway.
        with dask.config.set({MALLOC_TRIM_SETTING: None}):
            self._cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,  # pure-Python functions hold the GIL: one per process
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                # Its health page on any free port: not on 8787, another cluster's dashboard.
                scheduler_kwargs={"dashboard_address": ":0"},
                # A tile's error reaches the caller as a TileError; the workers'
                # own log of it would print the same traceback again.
                silence_logs=logging.CRITICAL,
            )
        try:
            # Workers on this machine are reachable: pixels need not hop through the scheduler.
            return distributed.Client(self._cluster, set_as_default=False, direct_to_workers=True)
        except BaseException:
            self._cluster.close()
            raise

    def _place_source(self, source: Source) -> Source:
        """An in-memory image in shared memory, or marked to travel in strips; files as they are."""
        if not source.process_local or isinstance(source, InMemorySource):
            return source  # files (and zarr arrays) pickle small; workers open their own
        assert isinstance(source, ArraySource)
        if self._local():
            shared = shared_copy(source.array)  # a result of an earlier run is not copied
            if shared.owner:
                self._inputs.append(shared)
            return LocalSource(shared)
        return InMemorySource(source.array)

    def _place_sink(self, sink: Sink) -> tuple[Sink, Settle | None]:
        """A sink the workers write; or, for one in this process only, a copy in shared memory.

        Without shared memory, the tasks return their results and
        :meth:`_completed` writes them into a sink of this process.
        """
        if not sink.process_local or not self._local():
            return sink, None
        found = SharedArray.find(sink.array) if isinstance(sink, ArraySink) else None
        if found is not None:
            return LocalSink(found), None
        proxy = SharedArray.create(sink.shape, sink.dtype)
        self._inputs.append(proxy)  # recycled at close, once copied back
        return LocalSink(proxy), copy_back(proxy.array, sink)

    def _allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        if not self._local():
            return np.empty(shape, dtype)
        shared = SharedArray.create(shape, dtype)
        self._outputs.append(shared)
        return shared.array

    def _first_wave(self) -> int:
        return self._pace.threads()

    def _local(self) -> bool:
        """Whether in-memory arrays go to the workers through shared memory."""
        if self._shares_memory is None:
            self._shares_memory = workers_share_memory(self.client)
        return self._shares_memory

    def _completed(self, job: TileJob, tiles: Sequence[Tile]) -> Iterator[Completed]:
        self._run = self._tasks(job, tiles)
        return self._run

    def close(self) -> None:
        try:
            if self._run is not None:
                self._run.close()  # cancels the tiles still queued if the caller stopped early
        finally:
            if self._tasks_may_run:  # not to be reused: a late task may write into them
                for shared in (*self._inputs, *self._outputs):
                    shared.close()
            else:
                for shared in self._inputs:
                    shared.recycle()
                for shared in self._outputs:
                    shared.hand_over()  # reused once the array returned is gone
            self._inputs.clear()
            self._outputs.clear()
            try:
                if self._own_client:
                    self.client.close()
                if self._cluster is not None:
                    self._cluster.close()
            finally:
                self._restore_sigterm()

    def _tasks(self, job: TileJob, tiles: Sequence[Tile]) -> Generator[Completed, None, None]:
        # An output in this process alone: tasks return their core and it is written here.
        here = job.sink if job.sink is not None and job.sink.process_local else None
        payload = pickle_job(job if here is None else replace(job, sink=None))
        name = f"{_task_prefix(job.func)}-{uuid.uuid4().hex[:12]}"
        shipped: Any = _ShippedJob(payload, machine_id())
        if len(payload) > INLINE_JOB_BYTES:
            # A task, not scattered data: should every worker holding it die, the
            # scheduler makes it again from these bytes.
            shipped = self.client.submit(
                _ShippedJob, payload, shipped.machine, keep=True, key=f"{name}-job", pure=False
            )
        strips = Strips(self.client, name, job) if isinstance(job.source, InMemorySource) else None
        pending = deque(tiles)
        # Tiles of a task that killed its workers on every attempt, to run again one by
        # one, each alone (see _result); with the task they were first in.
        suspects: deque[tuple[Tile, tuple[Tile, ...]]] = deque()
        running: dict[Any, _InFlight] = {}
        completed = self._as_completed(with_results=True, raise_errors=False, loop=self.client.loop)

        def send(group: tuple[Tile, ...], key: tuple[Any, ...], first: tuple[Tile, ...]) -> None:
            for other in running.values():
                other.alone = False
            pieces = None if strips is None else strips.acquire(list(group))
            future = self.client.submit(
                compute_tiles, shipped, pieces, group, key=key, pure=False
            )  # fmt: skip
            running[future] = _InFlight(group, first, alone=not running)
            completed.add(future)

        def submit() -> None:
            if suspects:
                if not running:  # alone: a worker's death is then this tile's doing
                    tile, first = suspects.popleft()
                    send((tile,), (f"{name}-alone", *tile.index), first)
                return
            while pending and len(running) < self._pace.in_flight():
                size = self._pace.tiles_per_task(len(pending))
                row = pending[0].index[0]
                group: list[Tile] = []
                while pending and len(group) < size:
                    if strips is not None and pending[0].index[0] != row:
                        break  # one row of tiles: one strip of the image
                    group.append(pending.popleft())
                send(tuple(group), (name, *group[0].index), tuple(group))

        try:
            if strips is not None:
                strips.count(tiles)
            submit()
            for future, result in completed:
                task = running.pop(future)
                try:
                    done = self._result(future, result, task)
                finally:
                    # Dask keeps a task's exception, whose traceback will hold
                    # this frame and the run's arrays, for as long as its key.
                    future.release()
                if done is None:
                    suspects.extend((tile, task.first) for tile in task.group)
                    submit()
                    continue
                cores, seconds = done
                if strips is not None:
                    strips.release(task.group)
                self._pace.observe(seconds)
                submit()
                for tile, core in zip(task.group, cores, strict=True):
                    if here is not None:
                        assert core is not None
                        here.write(tile.slices, core)
                    yield tile, None if here is not None else core
        finally:
            if running:
                # Queued tiles never start; those already running finish on their workers.
                self.client.cancel(list(running))
                self._tasks_may_run = True
            if strips is not None:
                strips.close()
            if not isinstance(shipped, _ShippedJob):
                shipped.release()

    def _result(
        self, future: Any, result: Any, task: _InFlight
    ) -> tuple[list[np.ndarray | None], float] | None:
        """The task's results, or its failure as the error naming the tile.

        None: the task killed the workers it ran on, on every attempt, but
        not as one tile alone on the cluster, so which tile did is not known:
        Dask counts a death against every task the worker held (its tiles,
        and the tasks queued beside it). Its tiles then run again one by one,
        each alone, and each with the scheduler's allowed failures of its own.
        """
        if future.status == "finished":
            return result
        group = task.group
        tile = group[0]
        together = "" if len(group) == 1 else f" (run in one task with {_others(group)})"
        try:
            future.result()  # raises the worker's exception, its traceback attached
        except TileError:
            raise
        except self._killed_worker as exc:
            if len(group) > 1 or not task.alone:
                return None
            killed: Any = exc
            if task.first != group:
                before = "" if len(task.first) == 1 else f" with {_others(task.first, tile)}"
                alone = f" when it ran alone, after its first task{before} had killed its workers"
            else:
                alone = ""
            raise WorkerDiedError(
                tile,
                f"the Dask worker running it died on all {killed.allowed_failures + 1} "
                f"attempts{alone} (the scheduler's distributed.scheduler.allowed-failures is "
                f"{killed.allowed_failures}); the last was {killed.last_worker.address}",
            ) from exc
        except Exception as exc:
            error = tile_error(tile, f"its Dask task{together}", exc)
            raise error from exc
        raise AssertionError(f"future {future.key!r} erred but raised nothing")


@dataclass(slots=True)
class _InFlight:
    """A task submitted: its tiles, the task they were first sent in, and whether it has had
    the cluster to itself (no other task of the run in flight) since it was submitted."""

    group: tuple[Tile, ...]
    first: tuple[Tile, ...]
    alone: bool


class _Pace:
    """How many tasks to keep in flight, and how many tiles to put in each.

    Tasks in flight: :data:`IN_FLIGHT_PER_THREAD` per thread of the
    cluster, looked at now and then, as workers may come and go; or exactly
    ``workers``, when that is fewer threads than the cluster has. Tiles per
    task: enough for a task to last :data:`TASK_SECONDS`, from the tiles'
    measured time; fewer near the end, so the last tiles spread over the
    workers.
    """

    def __init__(self, client: Any, workers: int | None) -> None:
        self.client = client
        self.workers = workers
        self.tile_seconds: float | None = None  # a running mean
        self._threads = 1
        self._checked = -float("inf")

    def threads(self) -> int:
        """The cluster's threads, or ``workers`` if fewer."""
        now = time.monotonic()
        if now - self._checked >= RESIZE_INTERVAL:
            # With no worker yet (a cluster scaling up), a few tiles wait at the scheduler.
            self._threads = max(sum(self.client.nthreads().values()), 1)
            self._checked = now
        return self._threads if self.workers is None else min(self._threads, self.workers)

    def in_flight(self) -> int:
        threads = self.threads()
        if self.workers is not None and self.workers < self._threads:
            return self.workers  # a limit asked for: no more tasks than that at once
        return IN_FLIGHT_PER_THREAD * threads

    def observe(self, seconds: float) -> None:
        last = self.tile_seconds
        self.tile_seconds = seconds if last is None else 0.8 * last + 0.2 * seconds

    def tiles_per_task(self, remaining: int) -> int:
        if self.tile_seconds is None:
            return 1  # until a tile has been timed
        enough = math.ceil(TASK_SECONDS / max(self.tile_seconds, 1e-6))
        fair = -(-remaining // self.threads())
        return max(1, min(enough, fair, MAX_TILES_PER_TASK))


def _task_prefix(func: Any) -> str:
    """``tilewise_<function name>``: the name the dashboard shows these tasks under.

    Dask learns how long tasks take per name (the key up to its first
    ``-``) and places tasks by it: tiles of different functions must not
    share one, or a quick function's record makes a slow one's tasks look
    too short to be worth moving to an idle worker.
    """
    inner = getattr(func, "func", func)  # functools.partial, a pixelwise kernel
    name = getattr(inner, "__name__", None) or type(inner).__name__
    return "tilewise_" + ("".join(c for c in name if c.isalnum() or c == "_") or "func")


def _others(group: tuple[Tile, ...], tile: Tile | None = None) -> str:
    """The tiles of ``group`` but ``tile`` (by default its first)."""
    others = [t for t in group if t != (group[0] if tile is None else tile)]
    return f"tile{'s' * (len(others) > 1)} {', '.join(str(t.index) for t in others)}"


def _connect(distributed: Any, scheduler: str) -> Any:
    try:
        return distributed.Client(scheduler, set_as_default=False)
    except OSError as exc:
        raise SchedulerUnreachableError(
            f"scheduler={scheduler!r}: no Dask scheduler answered there ({exc}); start one "
            "(dask scheduler) or check the address"
        ) from exc
