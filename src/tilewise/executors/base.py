"""What every backend shares: where a run's arrays live, and the first wave of tiles.

A backend runs :func:`tilewise._stages.run_tile` somewhere; it differs from
the others only in where, and so in where the image and the result must
live for its workers to reach them. That placement is the executor's
alone: the caller hands over a source, and a sink or an :class:`Output`
to make, and receives finished tiles.

When the output's dtype and extra dimensions are not known (no ``out=``),
they come from real results, never from a call on made-up data: a first
wave of one tile per worker runs without a sink and hands its results
back; the output is made from them (the dtype numpy promotes them to), they
are written to it, and the other tiles then run into it. Every worker is
busy from the start, nothing is held in memory but the wave's results,
and the output's dtype does not depend on which tile finishes first. The
price: the other tiles wait for the slowest tile of the wave (``timeout=``
bounds a tile that hangs). If several tiles of the wave fail, the first
failure to arrive is the one raised.

Every result is then held to the output's dtype under ``casting=`` (see
:mod:`tilewise._stages`): the wave's own results before the output is made
(they can differ from the dtype they promote to only under ``"no"`` and
``"equiv"``), and each later tile's before it is written, so a later tile
returning float64 into an output the wave made int64 fails under
``"same_kind"`` rather than being truncated.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import numpy as np

from tilewise._stages import (
    CALL,
    STORE,
    WRITE,
    Casting,
    ResultMismatch,
    TileJob,
    check_cast,
    check_extra_dimensions,
    tile_error,
)
from tilewise.errors import ArgumentError
from tilewise.grid import Tile
from tilewise.io import Output, Sink, Source
from tilewise.io.base import image_shape

#: A finished tile and, when the job has no sink, its core result.
Completed = tuple[Tile, "np.ndarray | None"]
#: Run once every tile is done: carries a copy of the output back to the caller's sink.
Settle = Callable[[], None]


class Executor(ABC):
    """Runs tiles on one backend; see the module docstring.

    Subclasses compute tiles in :meth:`_completed` and, when their workers
    cannot reach this process's memory, override the placement methods.
    ``run`` yields each tile as it completes, in the caller's thread, so the
    caller alone drives progress bars and journals. The first ``TileError``
    stops the run: tiles not yet started are dropped and the error is raised.
    """

    #: Tiles computed at once: the size of the first wave.
    workers: int

    def run(
        self, job: TileJob, tiles: Sequence[Tile], output: Output | None = None
    ) -> Iterator[Tile]:
        """Compute ``tiles`` into ``job.sink``, or into ``output`` made from the first wave."""
        job = replace(job, source=self._place_source(job.source))
        if job.sink is None:
            assert output is not None, "a job without a sink needs an output to make"
            wave, tiles = tiles[: self._first_wave()], tiles[self._first_wave() :]
            results = list(self._completed(job, wave))
            try:
                shape = image_shape(job.source, job.tiled)
                sink = self._create(output, shape, results, job.casting)
            except ArgumentError as exc:  # a result the output's format cannot store
                raise tile_error(results[0][0], STORE, exc)  # noqa: B904 - chains the cause
            job = replace(job, sink=sink, output_from_wave=True)
            yield from _written(sink, results, job.tiled)
        assert job.sink is not None
        placed, settle = self._place_sink(job.sink)
        trailing = job.sink.shape[job.tiled :]
        job = replace(job, sink=placed, trailing=trailing, output_dtype=job.sink.dtype)
        yield from (tile for tile, _ in self._completed(job, tiles))
        if settle is not None:
            settle()

    def _create(
        self, output: Output, shape: tuple[int, ...], results: list[Completed], casting: Casting
    ) -> Sink:
        """The output: the image's shape, and the first wave's extra dimensions and dtype.

        The dtype is the one numpy promotes the wave's results to (int64 and
        float64 make float64), so no result of the first wave is truncated;
        under ``casting="no"`` or ``"equiv"``, results that differ are refused
        before the output is made.
        """
        (_, core), *others = results
        assert core is not None
        k = len(shape)
        for tile, other in others:
            assert other is not None
            try:
                check_extra_dimensions(other, core.shape[k:], k)
            except ResultMismatch as mismatch:
                raise tile_error(tile, CALL, mismatch) from None
        dtype = np.result_type(*(c for _, c in results if c is not None))
        for tile, result in results:
            assert result is not None
            try:
                check_cast(result, dtype, casting, from_wave=True)
            except ResultMismatch as mismatch:
                raise tile_error(tile, CALL, mismatch) from None
        return output.create(shape + core.shape[k:], dtype, self._allocate)

    def _first_wave(self) -> int:
        return self.workers

    def _place_source(self, source: Source) -> Source:
        """``source`` as this backend's workers can read it."""
        return source

    def _place_sink(self, sink: Sink) -> tuple[Sink, Settle | None]:
        """A sink this backend's workers can write, and what carries it back to ``sink``."""
        return sink, None

    def _allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A new result array that this backend's workers can write into."""
        return np.empty(shape, dtype)

    @abstractmethod
    def _completed(self, job: TileJob, tiles: Sequence[Tile]) -> Iterator[Completed]:
        """Run ``job`` on ``tiles``; yield each as it completes, with its core if no sink."""

    @abstractmethod
    def close(self) -> None:
        """Stop what runs, and release what the run held."""


def _written(sink: Sink, results: list[Completed], tiled: int) -> Iterator[Tile]:
    """Write the first wave's results, in this process, into the output made from them."""
    for tile, core in results:
        assert core is not None
        try:
            check_extra_dimensions(core, sink.shape[tiled:], tiled)
            sink.write(tile.slices, core)
        except Exception as exc:
            raise tile_error(tile, WRITE, exc)  # noqa: B904 - tile_error chains the cause
        yield tile


def copy_back(proxy: np.ndarray, sink: Sink) -> Settle:
    """What writes a copy the workers filled into the caller's own sink, in one window."""

    def settle() -> None:
        sink.write(tuple(slice(0, n) for n in sink.shape), proxy)

    return settle
