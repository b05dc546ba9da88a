"""The protocols every input and output format implements.

Sources and sinks say what they are (their capabilities), as zarr's store
protocol does: executors decide where arrays must live for their workers
from these alone, without knowing any file format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from tilewise.io.urls import StoreUrl

#: A window of the image: one slice per tiled axis, (rows, cols) for an image.
Window = tuple[slice, ...]
#: Where a file or store is: a local path, or a URL (shown redacted, opened with its options).
Location = Path | StoreUrl
#: Makes a new, uninitialised array where an executor's workers can write it.
Allocate = Callable[[tuple[int, ...], np.dtype], np.ndarray]


@runtime_checkable
class Source(Protocol):
    """An image that can be read window by window."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def path(self) -> Location | None:
        """The file or store read, which any process can open; None for an array in memory."""
        ...

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """What a window read decodes whole (compressed chunks); None: read in place."""
        ...

    @property
    def process_local(self) -> bool:
        """Whether its pixels live in this process's memory, unreachable by others as it is."""
        ...

    @property
    def layout(self) -> str:
        """How it is stored and read, in words (``tilewise info`` shows it)."""
        ...

    def read(self, *window: slice) -> np.ndarray:
        """The window, one slice per tiled axis (rows, cols), further axes whole; may be a view."""
        ...

    def close(self) -> None:
        """Drop this process's handles (memory maps, open files); a later read reopens them."""
        ...


@runtime_checkable
class Sink(Protocol):
    """An output that can be written window by window."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def path(self) -> Location | None:
        """The file or store written, which any process can open; None for memory."""
        ...

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """The units a write must cover whole (zarr chunks or shards); None: any window."""
        ...

    @property
    def process_local(self) -> bool:
        """Whether only this process can write it (a numpy array, a zarr MemoryStore).

        Workers in other processes then write a copy that the executor
        carries back once every tile is done.
        """
        ...

    def write(self, window: Window, data: np.ndarray) -> None:
        """Store ``data`` at ``window``; windows of different tiles never overlap."""
        ...

    def close(self) -> None:
        """Drop this process's handles (memory maps, open files); a later write reopens them.

        Windows cannot replace a file that any process still maps: every
        process closes its handles on a file output before it is published.
        """
        ...


class Output(Protocol):
    """An output made only once the first results give its shape and dtype."""

    def create(self, shape: tuple[int, ...], dtype: np.dtype, allocate: Allocate) -> Sink:
        """The output's sink; an in-memory one takes its array from ``allocate``."""
        ...


@runtime_checkable
class FileSink(Sink, Protocol):
    """A sink backed by files, whose writes the resume journal can make durable."""

    def sync(self, windows: Sequence[Window]) -> None:
        """Force the data already written at ``windows`` (by any process) to disk."""
        ...


class FileOutput(Protocol):
    """An output file in the making.

    Tiles are written to ``partial``, beside ``path``; ``publish`` moves the
    finished result to ``path`` in one atomic rename, so a file at ``path``
    is always complete. A store behind a URL is its own partial, written in
    place (an object store has no rename).
    """

    @property
    def path(self) -> Location: ...

    @property
    def partial(self) -> Location: ...

    def state_file(self, suffix: str) -> Path:
        """The local file of this run named by ``suffix``: its journal, its lock."""
        ...

    def has_partial(self) -> bool:
        """Whether an interrupted run's partial output is there."""
        ...

    def discard_partial(self) -> None:
        """Remove an interrupted run's partial output, if any."""
        ...

    def create(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> FileSink:
        """A new, empty ``partial`` of this shape and dtype, tile-aligned."""
        ...

    def reopen(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> FileSink:
        """The ``partial`` of an interrupted run, checked against its journalled shape."""
        ...

    def publish(self) -> None:
        """Make the complete ``partial`` the output at ``path``, durably."""
        ...

    def leftovers(self) -> list[Path]:
        """Temporary files a killed run may have left; never needed again."""
        ...


def image_shape(source: Source, ndim: int = 2) -> tuple[int, ...]:
    """The size of a source's ``ndim`` tiled axes, (rows, cols) for an image."""
    return tuple(source.shape[:ndim])
