"""Filesystem steps shared by the file formats: durable writes, atomic publishing, checks."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np

from tilewise.errors import ArgumentError, MissingInputError, OutOfSpaceError
from tilewise.io.base import FileSink

#: Suffix added to an output's name for the file that tiles are written to.
PARTIAL = ".tilewise-partial"
#: Suffix of short-lived files (an encoding in progress): always safe to delete.
TEMPORARY = ".tilewise-tmp"

_CANNOT_RESERVE = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL)


def temporary_path(path: Path) -> Path:
    return path.with_name(path.name + TEMPORARY)


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk, whoever wrote it (the page cache is shared)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the creation, rename or removal of entries in directory ``path`` durable."""
    if os.name == "nt":  # Windows cannot open a directory; NTFS journals renames itself.
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reserve(fd: int, size: int, path: Path) -> None:
    """Allocate a file's blocks now, so a full disk fails here, not in a memory-mapped write.

    A write through a memory map into a sparse file on a full disk kills the
    process with SIGBUS; ``posix_fallocate`` turns that into an ``OSError``
    before any tile runs.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in _CANNOT_RESERVE:
            return  # the filesystem cannot reserve; the file stays sparse
        raise OutOfSpaceError(
            exc.errno, f"cannot allocate {size} bytes for {path}: {exc.strerror}"
        ) from exc


def remove(path: Path) -> None:
    """Remove a file or a directory tree, if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def publish(partial: Path, path: Path) -> None:
    """Move a finished ``partial`` to ``path``, replacing what was there.

    A file is replaced atomically. A directory (a Zarr store) cannot replace
    a non-empty one, so the old one is removed first; a crash in between
    leaves no output, never a mixed one.
    """
    if partial.is_dir() and path.exists():
        remove(path)
    os.replace(partial, path)
    fsync_dir(path.parent)


def check_writable_parent(path: Path, what: str) -> None:
    if not path.parent.is_dir():
        raise ArgumentError(f"{what}={str(path)!r}: the folder {str(path.parent)!r} does not exist")


def check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise MissingInputError(f"{what}={str(path)!r}: no such file or folder")


class Reopening:
    """A file source or sink: it pickles without its open files, and with an absolute path.

    Whichever process unpickles it opens its own handles on first use, from
    the path as the caller meant it: a worker's working directory is its
    own. Subclasses name their handle attributes in ``_handles`` and open
    them lazily. Two threads opening at once both succeed; one handle is kept.
    """

    _handles: tuple[str, ...] = ()
    chunks: tuple[int, ...] | None = None
    process_local = False

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        for name in self._handles:
            state[name] = None
        path = state.get("path")
        if isinstance(path, Path):
            state["path"] = path.absolute()
        return state

    def close(self) -> None:
        """Drop the handles; a thread still using one keeps it until it is done."""
        for name in self._handles:
            setattr(self, name, None)


class OutputFile:
    """What every file output shares: the partial file beside it, leftovers, publishing.

    Subclasses create and reopen their format's sink at :attr:`partial`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def partial(self) -> Path:
        return partial_path(self.path)

    def create(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> FileSink:
        raise NotImplementedError

    def reopen(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> FileSink:
        raise NotImplementedError

    def leftovers(self) -> list[Path]:
        """Temporary files a killed run may leave behind; never needed again."""
        return [temporary_path(self.path)]

    def state_file(self, suffix: str) -> Path:
        """The file of the run's own (its journal, its lock): beside the output."""
        return self.path.with_name(self.path.name + suffix)

    def has_partial(self) -> bool:
        return self.partial.exists()

    def discard_partial(self) -> None:
        remove(self.partial)

    def publish(self) -> None:
        if self.partial.is_file():
            fsync_file(self.partial)
        publish(self.partial, self.path)
