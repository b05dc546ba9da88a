"""The one protocol every backend implements: compute tiles, report each as it completes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from tilewise._stages import TileJob
from tilewise.grid import Tile
from tilewise.io import ArraySink, Sink, Source

#: A finished tile and, when the job has no sink, its core result.
Completed = tuple[Tile, "np.ndarray | None"]


class Executor(Protocol):
    """Runs :func:`tilewise._stages.run_tile` somewhere; backends differ only in where.

    ``run`` yields each tile as it completes, in the caller's thread, so the
    caller alone drives progress bars and journals. The first ``TileError``
    stops the run: tiles not yet started are dropped and the error is raised.
    """

    def share(self, source: Source) -> Source:
        """``source`` made readable by this backend's workers (the same one for threads)."""
        ...

    def share_sink(self, sink: Sink) -> Sink:
        """A sink this backend's workers can write: ``sink`` itself, or one to copy from."""
        ...

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> ArraySink:
        """A new output array that this backend's workers can write into."""
        ...

    def run(self, job: TileJob, tiles: Sequence[Tile]) -> Iterator[Completed]: ...

    def close(self) -> None: ...
