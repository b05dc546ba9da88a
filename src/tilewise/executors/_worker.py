"""The worker process: load a job once, then compute the tiles it is sent, one at a time.

The parent and a worker talk over one duplex pipe, in small records (as
``concurrent.futures.process`` does): :class:`LoadJob`, :class:`RunTiles` and
``None`` (exit) one way; :class:`JobLoaded`, :class:`TileDone`,
:class:`TileFailed` and :class:`JobFailed` the other. A worker handles its messages in order, so the
parent knows which tile it is running: the oldest one it has not answered.

A worker exits when told, when its pipe closes, or when the parent dies: a
thread waits for end-of-file on a pipe whose only writer is the parent, which
the kernel closes however the parent ends (even SIGKILL).
"""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
import signal
import socket
import sys
import threading
import traceback
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import cloudpickle
import numpy as np

from tilewise._stages import TileJob, run_tile
from tilewise.errors import TileError
from tilewise.grid import Tile
from tilewise.sharedmem.attached import adopt, release_attached
from tilewise.sharedmem.segments import SegmentSpec


class LoadJob(NamedTuple):
    """Replace the worker's job (its function, source and sink).

    The descriptors of ``segments`` (memfd segments new to this worker) follow
    on the pipe, as ancillary data (SCM_RIGHTS).
    """

    job_id: int
    payload: bytes  # the pickled TileJob
    threads: int  # threads each native library (BLAS, OpenMP, numba) may use
    segments: tuple[SegmentSpec, ...] = ()
    # Reused workers outlive the caller's os.chdir; relative paths must mean the same.
    cwd: str | None = None


class RunTiles(NamedTuple):
    """Compute these tiles, in order, answering each as it is done."""

    job_id: int
    tiles: tuple[Tile, ...]


class Release(NamedTuple):
    """Drop the job, its files' handles, and the shared-memory segments but those in ``keep``.

    With ``answer``, answered by :class:`Released` once done: Windows cannot
    replace a file output that any process still maps, so a run writing a
    file publishes it only after that. Other runs do not wait.
    """

    keep: frozenset[str] = frozenset()
    answer: bool = False


class Released(NamedTuple):
    """The job, its files and the segments not kept are no longer mapped here."""


class JobLoaded(NamedTuple):
    """The job is loaded: the worker starts its first tile now (timeouts count from here)."""

    job_id: int


class TileDone(NamedTuple):
    job_id: int
    tile_index: tuple[int, ...]
    core: np.ndarray | None  # only for a job without a sink


class TileFailed(NamedTuple):
    job_id: int
    tile_index: tuple[int, ...]
    error: bytes  # the pickled TileError
    cause: bytes | None  # the pickled original exception, when it pickles
    traceback: str


class JobFailed(NamedTuple):
    job_id: int
    traceback: str


class RemoteTraceback(Exception):  # noqa: N818 - the name concurrent.futures gives it
    """A worker's traceback, chained as ``__cause__`` so it prints with the error."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def worker_main(conn: Connection, parent_alive: Connection, inherited: Connection | None) -> None:
    """The worker process's whole life."""
    # Ctrl-C reaches the whole process group; the parent alone decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if inherited is not None:
        inherited.close()  # fork copied the parent's end: without this, no EOF ever comes
    threading.Thread(
        target=_exit_when_parent_dies, args=(parent_alive,), name="tilewise-parent-watch",
        daemon=True,
    ).start()  # fmt: skip
    job: TileJob | None = None
    job_id = -1
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        if isinstance(message, RunTiles):
            for tile in message.tiles:
                conn.send(_run(job, job_id, tile))
        elif isinstance(message, LoadJob):
            job = None  # release the old job's mappings before attaching the new ones
            job_id = message.job_id
            fds = recv_fds(conn, len(message.segments)) if message.segments else []
            for spec, fd in zip(message.segments, fds, strict=True):
                adopt(spec, fd)
            try:
                job = _load(message)
            except Exception:
                conn.send(JobFailed(job_id, traceback.format_exc()))
            else:
                conn.send(JobLoaded(job_id))
        elif isinstance(message, Release):
            if job is not None:
                job.source.close()
                if job.sink is not None:
                    job.sink.close()
            job = None
            release_attached(message.keep)
            if message.answer:
                conn.send(Released())


def send_fds(conn: Connection, fds: list[int]) -> None:
    """Send descriptors over a Unix-socket pipe (after a message that announces them)."""
    with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        reduction.sendfds(sock, fds)


def recv_fds(conn: Connection, count: int) -> list[int]:
    with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        return list(reduction.recvfds(sock, count))


def _exit_when_parent_dies(parent_alive: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        parent_alive.recv_bytes()  # the parent never writes: this returns when it is gone
    os._exit(1)


def _load(message: LoadJob) -> TileJob:
    if message.cwd is not None and message.cwd != os.getcwd():
        os.chdir(message.cwd)
    job: TileJob = pickle.loads(message.payload)
    _limit_threads(message.threads)
    return job


def _limit_threads(threads: int) -> None:
    """Keep workers x native threads within the cores (libraries loaded by now)."""
    from threadpoolctl import threadpool_limits

    numba = sys.modules.get("numba")
    if numba is not None:
        # First: this may load numba's threading layer (an OpenMP library),
        # which the limits below must then cover.
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=threads)


def _run(job: TileJob | None, job_id: int, tile: Tile) -> Any:
    if job is None:  # loading failed; the parent stops at the JobFailed already sent
        return JobFailed(job_id, "the job could not be loaded")
    try:
        return TileDone(job_id, tile.index, run_tile(job, tile))
    except TileError as error:  # run_tile turns every failure of a tile into one
        return _failure(job_id, tile, error)


def _failure(job_id: int, tile: Tile, error: TileError) -> TileFailed:
    original = error.__cause__
    tb = "".join(traceback.format_exception(original if original is not None else error))
    try:
        cause = None if original is None else cloudpickle.dumps(original)
    except Exception:
        cause = None  # the traceback text still tells the whole story
    return TileFailed(job_id, tile.index, pickle.dumps(_unchained(error)), cause, tb)


def _unchained(error: TileError) -> TileError:
    """``error`` without its chain, which travels on its own.

    Where tblib's exception pickling is installed (importing distributed does
    that), pickling an error pickles its ``__cause__`` too, which may not pickle.
    """
    bare = copy.copy(error)
    bare.__cause__ = bare.__context__ = bare.__traceback__ = None
    return bare


def rebuild_error(failure: TileFailed, filename: str | None = None) -> TileError:
    """The worker's TileError, with the original exception and its traceback chained.

    A function sent by value (cloudpickle) runs as ``<dynamic-code>``; its
    frames get ``filename``, where it was defined, back.
    """
    error: TileError = pickle.loads(failure.error)
    tb = failure.traceback
    if filename is not None:
        tb = tb.replace('File "<dynamic-code>"', f'File "{filename}"')
    remote = RemoteTraceback(tb)
    cause: BaseException | None = None
    if failure.cause is not None:
        try:
            cause = pickle.loads(failure.cause)
        except Exception:
            cause = None
    if cause is None:
        error.__cause__ = remote
    else:
        cause.__cause__ = remote
        error.__cause__ = cause
    return error
