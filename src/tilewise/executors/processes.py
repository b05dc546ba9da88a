"""Tiles on worker processes: for pure-Python functions, which hold the GIL.

The input and output live in shared memory (:mod:`tilewise.sharedmem`);
each worker maps them once, reads its tile plus halo and writes its result
in place, so only a job (once per worker) and tile coordinates go through
the pipes. Workers and segments are reused by the next call: a loop of
calls pays for process start-up and fresh shared memory once.

The parent alone schedules: it sends each worker at most
``IN_FLIGHT_PER_WORKER`` tiles and tops it up as results come back, so
uneven tiles balance themselves, and it always knows which worker holds
which tile. It waits on every worker's pipe *and* process sentinel at once
(``multiprocessing.connection.wait``), so a worker that dies is seen at
once, without polling:

- a dead worker (segfault, ``os._exit``, ``sys.exit``, the OOM killer) is
  replaced; the tile it was running is charged one attempt, the tiles queued
  behind it are sent again free; past ``retries`` the run fails with a
  :class:`~tilewise.WorkerDiedError` saying how the worker died each time;
- a :class:`~tilewise.TileError` ends the run at once; so does a tile that
  runs past ``timeout`` (:class:`~tilewise.TileTimeoutError`);
- whatever ends a run early (those errors, Ctrl-C, SIGTERM) kills the
  workers still holding its tiles; idle workers go back to the reusable pool
  (see :func:`shutdown`), and no shared-memory name outlives the call.

Under ``fork`` a worker inherits every mapping its parent holds when it is
forked, for its whole life; so the pool is forked before a run's arrays are
made (an unpicklable ``func`` is then reported with the workers started,
but before any tile runs).

Examples
--------
>>> import numpy as np, tilewise
>>> image = np.arange(12.0).reshape(3, 4)
>>> tilewise.map_tiles(lambda b: b * 2, image, tile=2, backend="processes", workers=2)
array([[ 0.,  2.,  4.,  6.],
       [ 8., 10., 12., 14.],
       [16., 18., 20., 22.]])
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from multiprocessing.connection import wait
from typing import Any

import numpy as np

from tilewise._cpus import available_cpus
from tilewise._stages import LOAD, TileJob
from tilewise.errors import Death, TileError, TileTimeoutError, WorkerDiedError
from tilewise.executors._pool import Worker, WorkerPool, acquire_pool, release_pool, shutdown
from tilewise.executors._signals import stop_on_sigterm as _stop_on_sigterm
from tilewise.executors._transport import SharedSink, SharedSource, pickle_job, shared_copy
from tilewise.executors._worker import (
    JobFailed,
    JobLoaded,
    LoadJob,
    RemoteTraceback,
    RunTiles,
    TileDone,
    TileFailed,
    rebuild_error,
    send_fds,
)
from tilewise.executors.base import Completed, Executor, Settle, copy_back
from tilewise.grid import Tile
from tilewise.io import ArraySink, ArraySource, Sink, Source
from tilewise.sharedmem import SharedArray, remove_stale_segments
from tilewise.sharedmem.segments import Segment

__all__ = ["ProcessExecutor", "default_start_method", "shutdown"]

#: Tiles sent to a worker and not yet answered: the next one is already
#: waiting when it finishes, and few enough that uneven tiles still balance
#: and a failure stops the run promptly.
IN_FLIGHT_PER_WORKER = 2
#: For tiles faster than QUICK_TILE seconds, the message per tile costs more
#: than the tile (waking a process is tens of microseconds): workers then get
#: up to IN_FLIGHT_QUICK tiles, sent half a queue at a time.
QUICK_TILE = 0.002
IN_FLIGHT_QUICK = 32

_SHARED = (SharedSource, SharedSink)

_job_ids = itertools.count()


def _start_hint(deaths: list[Death], start_method: str) -> str:
    """Why workers may die before their first tile: the script they import runs the work."""
    if start_method == "fork" or not all(death.while_starting for death in deaths):
        return ""
    return (
        f"; workers that die while starting under the {start_method!r} start method most "
        'often ran a script without `if __name__ == "__main__":` around its work (each '
        "worker imports the script; see the troubleshooting guide)"
    )


def default_start_method() -> str:
    """The process-wide start method, without fixing it as ``get_start_method()`` would."""
    method = multiprocessing.get_start_method(allow_none=True)
    return method or multiprocessing.get_all_start_methods()[0]


class ProcessExecutor(Executor):
    """Runs tiles on a (reused) pool of worker processes; see the module docstring."""

    def __init__(
        self,
        workers: int,
        *,
        start_method: str | None = None,
        retries: int = 2,
        timeout: float | None = None,
    ) -> None:
        self.workers = workers
        self.start_method = start_method or default_start_method()
        self.retries = retries
        self.timeout = timeout
        remove_stale_segments()
        self._inputs: list[SharedArray] = []
        self._outputs: list[SharedArray] = []
        self._pool: WorkerPool | None = None
        self._run: Generator[Completed, None, None] | None = None
        self._wrote_files = False  # a file output: workers must let go of it before it is published
        self._restore_sigterm = _stop_on_sigterm()
        if self.start_method == "fork":
            # A forked worker inherits every mapping its parent has at that moment,
            # and keeps it for life: fork the workers before this run's arrays exist.
            self._pool = acquire_pool(self.start_method)
            self._pool.resize(workers)

    def _place_source(self, source: Source) -> Source:
        """An in-memory image moved to shared memory, once; other sources as they are."""
        if not source.process_local or isinstance(source, SharedSource):
            return source
        assert isinstance(source, ArraySource)
        shared = shared_copy(source.array)
        if shared.owner:
            self._inputs.append(shared)
        return SharedSource(shared)

    def _place_sink(self, sink: Sink) -> tuple[Sink, Settle | None]:
        """A sink workers can write: ``sink`` itself, its segment, or a copy carried back."""
        if not sink.process_local or isinstance(sink, SharedSink):
            return sink, None
        found = SharedArray.find(sink.array) if isinstance(sink, ArraySink) else None
        if found is not None:
            return SharedSink(found), None
        proxy = SharedArray.create(sink.shape, sink.dtype)
        self._inputs.append(proxy)  # recycled at close, once copied back
        return SharedSink(proxy), copy_back(proxy.array, sink)

    def _allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        shared = SharedArray.create(shape, dtype)
        self._outputs.append(shared)  # handed over to the caller at close
        return shared.array

    def _completed(self, job: TileJob, tiles: Sequence[Tile]) -> Iterator[Completed]:
        payload = pickle_job(job)  # an unpicklable func fails here, before any worker starts
        self._wrote_files |= job.sink is not None and job.sink.path is not None
        if self._pool is None:
            self._pool = acquire_pool(self.start_method)
        shared = [x.shared.segment for x in (job.source, job.sink) if isinstance(x, _SHARED)]
        self._run = _Run(
            pool=self._pool,
            payload=payload,
            segments=[s for s in shared if s.fd is not None],
            func=job.func,
            workers=self.workers,
            retries=self.retries,
            timeout=self.timeout,
        ).completed(tiles)
        return self._run

    def close(self) -> None:
        try:
            if self._run is not None:
                self._run.close()  # kills workers still busy if the caller stopped early
        finally:
            try:
                for shared in self._inputs:
                    shared.recycle()
                for shared in self._outputs:
                    shared.hand_over()  # the returned array keeps the memory mapped
            finally:
                # Last: idle workers then drop every segment this process let go.
                if self._pool is not None:
                    release_pool(self._pool, wait=self._wrote_files)
                self._restore_sigterm()


class _Run:
    """One run's bookkeeping: who holds which tile, deaths per tile, deadlines."""

    def __init__(
        self,
        *,
        pool: WorkerPool,
        payload: bytes,
        segments: list[Segment],
        func: Callable[..., Any],
        workers: int,
        retries: int,
        timeout: float | None,
    ) -> None:
        self.pool = pool
        self.job_id = next(_job_ids)
        self.payload = payload
        self.cwd = os.getcwd()
        self.segments = segments  # memfd segments: workers need their descriptors
        self.func = func
        self.n_workers = workers
        self.threads = max(1, available_cpus() // workers)
        self.retries = retries
        self.timeout = timeout
        self.pending: deque[Tile] = deque()
        self.deaths: dict[tuple[int, ...], list[Death]] = {}
        self.tile_seconds = float("inf")  # a running mean of how long a tile takes

    def completed(self, tiles: Sequence[Tile]) -> Generator[Completed, None, None]:
        self.pending.extend(tiles)
        finished = False
        try:
            self.pool.resize(self.n_workers)
            self._dispatch()
            while self.pending or any(w.tiles for w in self.pool.workers):
                yield from self._step()
                self._dispatch()
            finished = True
        finally:
            if not finished:
                busy = [w for w in self.pool.workers if w.job_id == self.job_id]
                self.pool.kill([w for w in busy if w.tiles or w.unsure])

    def _step(self) -> Iterator[Completed]:
        owners: dict[Any, Worker] = {}
        for worker in self.pool.workers:
            owners[worker.conn] = owners[worker.process.sentinel] = worker
        for ready in wait(list(owners), timeout=self._time_left()):
            worker = owners[ready]
            if worker not in self.pool.workers:
                continue  # buried already: both its pipe and its sentinel were ready
            if ready is worker.conn:
                yield from self._receive(worker)
            else:
                yield from self._bury(worker)
        self._check_deadlines()

    def _receive(self, worker: Worker) -> Iterator[Completed]:
        """Every message a worker has sent by now: one wake-up, often several tiles."""
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                yield from self._bury(worker)
                return
            done = self._handle(worker, message)
            if done is not None:
                yield done
            if not worker.conn.poll():
                return

    def _handle(self, worker: Worker, message: Any) -> Completed | None:
        if isinstance(message, JobFailed):
            last = message.traceback.strip().splitlines()[-1]
            error = TileError(worker.tiles[0], f"{LOAD} raised {last}")
            raise error from RemoteTraceback(message.traceback)
        if isinstance(message, JobLoaded):
            worker.started = time.monotonic()  # start-up and loading do not count as tile time
            return None
        assert isinstance(message, (TileDone, TileFailed))
        assert message.job_id == self.job_id
        tile = worker.tiles.popleft()
        assert tile.index == message.tile_index
        now = time.monotonic()
        if worker.started is not None:
            took = now - worker.started
            first = self.tile_seconds == float("inf")
            self.tile_seconds = took if first else 0.8 * self.tile_seconds + 0.2 * took
        worker.started = now
        if isinstance(message, TileFailed):
            code = getattr(self.func, "__code__", None)
            raise rebuild_error(message, getattr(code, "co_filename", None))
        self._top_up(worker)
        return (tile, message.core)

    def _bury(self, worker: Worker) -> Iterator[Completed]:
        """A worker died: keep what it finished, charge the tile it ran, requeue the rest."""
        while True:
            try:
                if not worker.conn.poll():
                    break
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            done = self._handle(worker, message)
            if done is not None:
                yield done
        death = self.pool.reap(worker)
        if worker.tiles:
            tile = worker.tiles[0]
            deaths = self.deaths.setdefault(tile.index, [])
            deaths.append(death)
            if len(deaths) > self.retries:
                attempts = ", ".join(f"attempt {i}: {d}" for i, d in enumerate(deaths, 1))
                hint = _start_hint(deaths, self.pool.start_method)
                if hint:
                    # Workers still starting will die the same way: let them, and
                    # print why, before the caller reports it below their output.
                    self.pool.stop(list(self.pool.workers))
                raise WorkerDiedError(
                    tile,
                    f"the worker process running it died on all {len(deaths)} attempts "
                    f"({attempts}); retries={self.retries}{hint}",
                    deaths=deaths,
                )
            self.pending.extendleft(reversed(worker.tiles))
            worker.tiles.clear()
        if self.pending:
            self.pool.start()

    def _dispatch(self) -> None:
        """Top up every worker, one tile each round, so the first tiles spread out."""
        for depth in range(1, IN_FLIGHT_PER_WORKER + 1):
            for worker in list(self.pool.workers):
                if self.pending and len(worker.tiles) < depth and not worker.unsure:
                    self._send(worker, [self.pending.popleft()])

    def _top_up(self, worker: Worker) -> None:
        """After an answer: refill the worker's queue, in one message for quick tiles."""
        depth = IN_FLIGHT_QUICK if self.tile_seconds < QUICK_TILE else IN_FLIGHT_PER_WORKER
        if self.pending and len(worker.tiles) <= depth // 2 and not worker.unsure:
            fair = -(-len(self.pending) // len(self.pool.workers))  # the last tiles spread out
            count = min(depth - len(worker.tiles), fair)
            self._send(worker, [self.pending.popleft() for _ in range(count)])

    def _send(self, worker: Worker, tiles: list[Tile]) -> None:
        worker.unsure = True  # until both messages are out; an interrupted send garbles the pipe
        try:
            if worker.job_id != self.job_id:
                new = [s for s in self.segments if s.spec.name not in worker.segments]
                specs = tuple(s.spec for s in new)
                worker.conn.send(LoadJob(self.job_id, self.payload, self.threads, specs, self.cwd))
                if new:
                    send_fds(worker.conn, [s.fd for s in new if s.fd is not None])
                    worker.segments.update(spec.name for spec in specs)
                worker.job_id = self.job_id
                worker.started = None  # until it reports the job loaded
            elif not worker.tiles:
                worker.started = time.monotonic()
            worker.conn.send(RunTiles(self.job_id, tuple(tiles)))
        except OSError:
            self.pending.extendleft(reversed(tiles))  # it is dead: its sentinel will say so
            return
        worker.unsure = False
        worker.tiles.extend(tiles)

    def _time_left(self) -> float | None:
        if self.timeout is None:
            return None
        starts = [w.started for w in self.pool.workers if w.tiles and w.started is not None]
        if not starts:
            return None
        return max(0.0, min(starts) + self.timeout - time.monotonic())

    def _check_deadlines(self) -> None:
        if self.timeout is None:
            return
        now = time.monotonic()
        for worker in self.pool.workers:
            started = worker.started
            if worker.tiles and started is not None and now - started >= self.timeout:
                tile = worker.tiles[0]
                self.pool.kill([worker])
                raise TileTimeoutError(
                    tile,
                    f"still running after timeout={self.timeout:g} s; "
                    f"its worker process (pid {worker.pid}) was killed",
                )
