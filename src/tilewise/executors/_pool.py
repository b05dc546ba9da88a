"""Worker processes: started, replaced and stopped in one place, and reused across calls.

A :class:`WorkerPool` holds the workers of one start method. Between calls
the pool waits, idle, in a module-level registry (as loky's reusable
executor does), so a loop of many ``map_tiles`` calls pays process start-up
once; :func:`shutdown` (also run at exit) stops them. A run that ends
abnormally kills the workers still holding its tiles, so the pool never
keeps a worker that is busy or in an unknown state.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import multiprocessing
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from tilewise.errors import Death
from tilewise.executors._worker import Release, Released, worker_main
from tilewise.grid import Tile
from tilewise.sharedmem import clear_cache, live_segment_names

#: How long a worker told to exit may take before it is killed.
EXIT_GRACE = 1.0
#: How long an idle worker may take to say it dropped a job before it is killed.
RELEASE_GRACE = 10.0


@dataclass(eq=False)
class Worker:
    """One worker process and what the parent knows of it."""

    process: BaseProcess
    conn: Connection
    job_id: int = -1  # the job it has loaded
    tiles: deque[Tile] = field(default_factory=deque)  # sent, not answered; the first is running
    started: float | None = None  # when the first of ``tiles`` started (monotonic), if known
    unsure: bool = False  # a message to it was interrupted half-way
    segments: set[str] = field(default_factory=set)  # memfd segments it has mapped

    @property
    def pid(self) -> int | None:
        return self.process.pid


class WorkerPool:
    """Worker processes of one start method, owned by this process."""

    def __init__(self, start_method: str) -> None:
        self.start_method = start_method
        self.context: Any = multiprocessing.get_context(start_method)
        self.owner_pid = os.getpid()
        self.workers: list[Worker] = []
        # Workers wait for EOF on this pipe; only this process holds the writer.
        self._alive_reader, self._alive_writer = self.context.Pipe(duplex=False)
        self._names = itertools.count(1)

    def resize(self, n: int) -> list[Worker]:
        """Exactly ``n`` live, idle workers (dead ones replaced, surplus ones stopped)."""
        for worker in [w for w in self.workers if not w.process.is_alive()]:
            self.reap(worker)
        while len(self.workers) > n:
            self.stop([self.workers[-1]])
        while len(self.workers) < n:
            self.start()
        return list(self.workers)

    def start(self) -> Worker:
        conn, child_conn = self.context.Pipe(duplex=True)
        inherited = self._alive_writer if self.start_method == "fork" else None
        process = self.context.Process(
            target=worker_main,
            args=(child_conn, self._alive_reader, inherited),
            name=f"tilewise-worker-{next(self._names)}",
            daemon=True,
        )
        process.start()
        child_conn.close()
        worker = Worker(process, conn)
        self.workers.append(worker)
        return worker

    def reap(self, worker: Worker) -> Death:
        """Forget a worker that has died (or is dying); how it ended."""
        worker.process.join(EXIT_GRACE)
        if worker.process.exitcode is None:  # its pipe broke but it lingers
            worker.process.kill()
            worker.process.join()
        self._forget(worker)
        exitcode = worker.process.exitcode
        assert exitcode is not None
        return Death(exitcode, while_starting=worker.started is None)

    def kill(self, workers: list[Worker]) -> None:
        for worker in workers:
            worker.process.kill()
        for worker in workers:
            worker.process.join()
            self._forget(worker)

    def stop(self, workers: list[Worker]) -> None:
        """Ask idle workers to exit; kill those that do not in time."""
        for worker in workers:
            with contextlib.suppress(OSError):  # already gone
                worker.conn.send(None)
        for worker in workers:
            worker.process.join(EXIT_GRACE)
        self.kill(workers)

    def release(self, wait: bool = False) -> None:
        """Have idle workers drop the last job, its files and the segments no longer held.

        With ``wait``, returns once each has (or has died): on Windows, a file
        output that a worker still maps could not be published.
        """
        keep = live_segment_names()
        asked = []
        for worker in self.workers:
            with contextlib.suppress(OSError):  # dead; replaced at the next resize
                worker.conn.send(Release(keep, answer=wait))
                asked.append(worker)
            worker.job_id = -1
            worker.segments &= keep
        for worker in asked if wait else ():
            if not _released(worker):
                self.kill([worker])  # wedged: a worker that cannot say it let go does not stay

    def shutdown(self) -> None:
        self.stop(list(self.workers))
        self._alive_writer.close()
        self._alive_reader.close()

    def _forget(self, worker: Worker) -> None:
        worker.conn.close()
        if worker in self.workers:
            self.workers.remove(worker)


def _released(worker: Worker) -> bool:
    """Wait for a worker's :class:`Released`, skipping answers of an ended run; False if stuck.

    A worker that dies meanwhile has let go of everything too.
    """
    deadline = time.monotonic() + RELEASE_GRACE
    while (left := deadline - time.monotonic()) > 0:
        if not wait([worker.conn, worker.process.sentinel], timeout=left):
            break
        try:
            if isinstance(worker.conn.recv(), Released):
                return True
        except (EOFError, OSError):
            return True  # it died: nothing of it maps anything
    return False


# The reusable pools: at most one idle pool per start method, lent to one run at a time.
_lock = threading.Lock()
_idle: dict[str, WorkerPool] = {}


def acquire_pool(start_method: str) -> WorkerPool:
    """The idle reusable pool for ``start_method``, or a new one."""
    with _lock:
        pool = _idle.pop(start_method, None)
    if pool is None or pool.owner_pid != os.getpid():
        pool = WorkerPool(start_method)
    return pool


def release_pool(pool: WorkerPool, wait: bool = False) -> None:
    """Return a pool after a run; a second pool of the same method (threads) is stopped.

    ``wait``: until every worker has let go of the run's files (see :meth:`WorkerPool.release`).
    """
    pool.release(wait)
    with _lock:
        surplus = _idle.get(pool.start_method) is not None
        if not surplus:
            _idle[pool.start_method] = pool
    if surplus:
        pool.shutdown()


def shutdown() -> None:
    """Stop the worker processes and free the shared memory kept for reuse (also run at exit).

    Examples
    --------
    >>> import tilewise
    >>> tilewise.shutdown()
    """
    with _lock:
        pools = list(_idle.values())
        _idle.clear()
    for pool in pools:
        if pool.owner_pid == os.getpid():
            pool.shutdown()
    clear_cache()


def _forget_pools_after_fork() -> None:
    # A forked child must neither use nor stop its parent's workers; the lock
    # may have been held by another thread at the moment of the fork.
    global _lock
    _lock = threading.Lock()
    _idle.clear()


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_forget_pools_after_fork)
