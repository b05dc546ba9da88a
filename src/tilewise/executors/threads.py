"""Tiles on a pool of threads: for functions that release the GIL (numpy, scipy, numba)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import numpy as np

from tilewise._stages import TileJob, run_tile
from tilewise.executors.base import Completed
from tilewise.grid import Tile
from tilewise.io import ArraySink, Sink, Source

#: Tiles submitted but not finished, per worker: enough to keep every thread
#: busy, few enough that a failure stops the run promptly.
IN_FLIGHT_PER_WORKER = 2


class ThreadExecutor:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tilewise")

    def share(self, source: Source) -> Source:
        return source  # threads read the caller's memory

    def share_sink(self, sink: Sink) -> Sink:
        return sink

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> ArraySink:
        return ArraySink(np.empty(shape, dtype))

    def run(self, job: TileJob, tiles: Sequence[Tile]) -> Iterator[Completed]:
        pending = iter(tiles)
        running: dict[Future[np.ndarray | None], Tile] = {}
        try:
            for tile in pending:
                running[self._pool.submit(run_tile, job, tile)] = tile
                if len(running) >= self.workers * IN_FLIGHT_PER_WORKER:
                    break
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    tile = running.pop(future)
                    result = future.result()  # a TileError propagates, ending the run
                    next_tile = next(pending, None)
                    if next_tile is not None:
                        running[self._pool.submit(run_tile, job, next_tile)] = next_tile
                    yield tile, result
        finally:
            for future in running:
                future.cancel()
            wait(running)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
