"""Tiles on a pool of threads: for functions that release the GIL (numpy, scipy, numba)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from queue import Empty, SimpleQueue

from tilewise._stages import TileJob, run_tile
from tilewise.executors.base import Completed, Executor
from tilewise.grid import Tile

#: Seconds a thread gathers finished tiles before it reports them: waking the
#: caller's thread for each small tile would cost more than the tile.
REPORT_EVERY = 0.01

#: Seconds the caller's thread waits for reports at a time, so that it sees a Ctrl-C.
SIGNAL_CHECK = 0.1
#: What a worker thread puts on the queue: tiles it finished and the failure
#: that stopped it, if any; or None once it has no more tiles to take.
_Report = tuple[list[Completed], "BaseException | None"] | None


class ThreadExecutor(Executor):
    """Each thread takes the next tile as soon as it is free, until none are left.

    Threads pull tiles from one shared iterator and report finished tiles on
    one queue, a batch at a time: no future per tile and no wake-up of the
    caller per tile, which matters for small tiles. A failure is reported at
    once, with the tiles finished before it.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tilewise")

    def _completed(self, job: TileJob, tiles: Sequence[Tile]) -> Iterator[Completed]:
        todo = iter(tiles)
        take = threading.Lock()
        stop = threading.Event()  # set when the run ends early: a failure, or the caller stops
        reports: SimpleQueue[_Report] = SimpleQueue()

        def work() -> None:
            finished: list[Completed] = []
            last_report = time.monotonic()
            try:
                while not stop.is_set():
                    with take:
                        tile = next(todo, None)
                    if tile is None:
                        return
                    try:
                        finished.append((tile, run_tile(job, tile)))
                    except BaseException as exc:
                        stop.set()  # the others finish the tile they hold, and take no other
                        reports.put((finished, exc))
                        finished = []
                        return
                    if time.monotonic() - last_report > REPORT_EVERY:
                        reports.put((finished, None))
                        finished, last_report = [], time.monotonic()
            finally:
                reports.put((finished, None))
                reports.put(None)

        threads = []
        try:  # a Ctrl-C while the threads start stops them too
            threads = [self._pool.submit(work) for _ in range(min(self.workers, len(tiles)))]
            running = len(threads)
            while running:
                try:
                    # Not blocked for good: a Ctrl-C that lands just before the
                    # wait is handled within a wake-up, not at the next report.
                    report = reports.get(timeout=SIGNAL_CHECK)
                except Empty:
                    continue
                if report is None:
                    running -= 1
                    continue
                finished, error = report
                yield from finished
                if error is not None:
                    raise error  # a TileError, ending the run
        finally:
            stop.set()  # threads finish the tile they hold, and take no other
            wait(threads)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
