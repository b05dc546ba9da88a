"""Every tile in the calling thread, in order: the reference the other backends must equal."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from tilewise._stages import TileJob, run_tile
from tilewise.executors.base import Completed
from tilewise.grid import Tile
from tilewise.io import ArraySink, Sink, Source


class SerialExecutor:
    def share(self, source: Source) -> Source:
        return source

    def share_sink(self, sink: Sink) -> Sink:
        return sink

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> ArraySink:
        return ArraySink(np.empty(shape, dtype))

    def run(self, job: TileJob, tiles: Sequence[Tile]) -> Iterator[Completed]:
        for tile in tiles:
            yield tile, run_tile(job, tile)

    def close(self) -> None:
        pass
