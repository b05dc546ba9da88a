"""Every tile in the calling thread, in order: the reference the other backends must equal."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tilewise._stages import TileJob, run_tile
from tilewise.executors.base import Completed, Executor
from tilewise.grid import Tile


class SerialExecutor(Executor):
    workers = 1

    def _completed(self, job: TileJob, tiles: Sequence[Tile]) -> Iterator[Completed]:
        for tile in tiles:
            yield tile, run_tile(job, tile)

    def close(self) -> None:
        pass
