"""Resume: which tiles of a file output are done, recorded only once their data is on disk.

The journal is a text file beside the output, ``OUTPUT.tilewise-journal``
(for an output behind a URL, a local file named after it in
:func:`tilewise.io.urls.state_dir`)::

    {"input": {...}, "func": {...}, "tile": [512, 512], ...} 5c0e3a91   <- the run, CRC32
    0 0 8bd5a4a2                                                       <- tile (0, 0), CRC32
    0 1 fce7f5b0

The order of writes is what makes a record trustworthy: a worker writes a
tile's data; the journal's commit thread forces that data to disk
(``fsync``); only then does it append the tile's line and force the journal
to disk. A line cut short by a kill fails its CRC and is ignored, with all
after it, so its tile is recomputed. Commits are batched, every
:data:`COMMIT_INTERVAL` seconds, so a killed run loses at most that much
work plus the tiles that were running.

A resumed run must be the same run: the header records the input (path,
size, modification time; a URL's listing of names, sizes and ETags; or a
digest of sampled rows for an in-memory image), the function (qualified
name and a digest of its bytecode), and the tile, halo, boundary, cval,
pass_tile and dtype. Any difference refuses the resume and says what
changed. The digest covers the function's own code, not the functions it
calls.

On success the output is renamed into place and the journal removed: an
output file that exists is complete, and a ``*.tilewise-journal`` file means
an interrupted run that ``resume=True`` can finish.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import threading
import types
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import astuple
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np

from tilewise._kernel import TileKernel
from tilewise._plan import Plan
from tilewise.errors import ArgumentError
from tilewise.grid import Tile
from tilewise.io import Allocate, FileOutput, FileSink, Source
from tilewise.io._files import fsync_dir, remove, temporary_path
from tilewise.io.dask_array import DaskArraySource
from tilewise.io.geo import nodata_text
from tilewise.io.lock import LOCK, OutputLock
from tilewise.io.nodata import NodataRule, NodataSource
from tilewise.io.reordered import ReorderedSource
from tilewise.io.urls import StoreUrl

#: Seconds between commits; 0 commits each tile before the next is recorded.
COMMIT_INTERVAL = 1.0
#: Suffix of the journal beside an output.
JOURNAL = ".tilewise-journal"
#: Rows of an in-memory image hashed to recognise it (reading all could take minutes).
SAMPLED_ROWS = 16


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + JOURNAL)


# --- what makes two runs the same run ----------------------------------------------


def run_identity(
    source: Source, func: Callable[..., Any], plan: Plan, nodata: NodataRule | None = None
) -> dict[str, Any]:
    """Everything a resumed run must share with the journalled one, as JSON values."""
    identity = {
        "input": input_identity(source),
        "func": func_identity(func),
        "tile": plan.tile,
        "halo": plan.halo,
        "boundary": plan.boundary,
        "cval": plan.cval,
        "pass_tile": plan.pass_tile,
        "dtype": None if plan.dtype is None else plan.dtype.str,
    }
    if nodata is not None:  # as text: NaN is no JSON number
        identity["nodata"] = [None if v is None else nodata_text(v) for v in astuple(nodata)]
    return dict(json.loads(json.dumps(identity)))


def input_identity(source: Source) -> dict[str, Any]:
    """A file by path, size and modification time; a dask array by the name of its graph
    (a token of what it computes: sampling its rows would compute chunks in the caller);
    an in-memory image by sampled rows."""
    found: dict[str, Any] = {"shape": source.shape, "dtype": source.dtype.str}
    if isinstance(source, NodataSource):  # the image read, not its NaN view
        return input_identity(source.inner)
    if isinstance(source, ReorderedSource):  # the file, and the order its axes are taken in
        return {**input_identity(source.inner), "order": list(source.order)}
    if isinstance(source, DaskArraySource):
        return {**found, "dask_graph": str(source.array.name)}
    path = source.path
    if isinstance(path, StoreUrl):
        return {"url": str(path), **path.fingerprint(), **found}
    if path is not None:
        size, mtime_ns = _stat_tree(Path(path))
        return {"path": str(Path(path).resolve()), "size": size, "mtime_ns": mtime_ns, **found}
    rows, cols = source.shape[:2]
    digest = hashlib.blake2b(digest_size=8)
    for row in np.unique(np.linspace(0, rows - 1, SAMPLED_ROWS).astype(int)):
        digest.update(np.ascontiguousarray(source.read(slice(row, row + 1), slice(0, cols))).data)
    return {**found, "sampled_rows": digest.hexdigest()}


def _stat_tree(path: Path) -> tuple[int, int]:
    """Total size and latest modification of a file, or of every file in a folder (a store)."""
    if not path.is_dir():
        stat = path.stat()
        return stat.st_size, stat.st_mtime_ns
    size = mtime_ns = 0
    for folder, _, files in os.walk(path):
        for name in files:
            stat = os.stat(os.path.join(folder, name))
            size, mtime_ns = size + stat.st_size, max(mtime_ns, stat.st_mtime_ns)
    return size, mtime_ns


def func_identity(func: Callable[..., Any]) -> dict[str, str]:
    """The function's qualified name and a digest of its code (or of its pickle)."""
    name = f"{getattr(func, '__module__', None)}:{getattr(func, '__qualname__', repr(func))}"
    digest = hashlib.blake2b(digest_size=8)
    for part in _code_parts(func):
        digest.update(part)
    return {"name": name, "code": digest.hexdigest()}


def _code_parts(func: Any) -> Iterator[bytes]:
    if isinstance(func, functools.partial):
        yield from _code_parts(func.func)
        yield _pickled((func.args, func.keywords))
        return
    inner = getattr(func, "__wrapped__", None) or getattr(func, "py_func", None)
    if inner is not None:  # a decorated function or a numba function: the Python code
        yield from _code_parts(inner)
        return
    if isinstance(func, TileKernel):  # a pixelwise kernel: its code and settings
        yield from _code_parts(func.func)
        yield _pickled(func)
        return
    code = getattr(func, "__code__", None)
    if isinstance(code, types.CodeType):
        yield from _bytecode(code)
        yield _pickled(getattr(func, "__defaults__", None))
        return
    yield _pickled(func)  # a ufunc, a builtin, a callable object: by value where it has one


def _bytecode(code: types.CodeType) -> Iterator[bytes]:
    """The instructions and constants; not line numbers, so moving the function is no change."""
    yield code.co_code
    yield repr(code.co_names).encode()
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _bytecode(const)
        else:
            yield repr(const).encode()


def _pickled(value: Any) -> bytes:
    try:
        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return repr(value).encode()


def differences(journalled: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What changed between two run identities, one phrase per difference."""
    found: list[str] = []
    for key, now in current.items():
        then = journalled.get(key)
        if then == now:
            continue
        if isinstance(then, dict) and isinstance(now, dict):
            found.extend(
                f"{key} {part} was {then.get(part)!r}, now {now.get(part)!r}"
                for part in now
                if then.get(part) != now.get(part)
            )
        else:
            found.append(f"{key} was {then!r}, now {now!r}")
    return found


# --- the journal file ----------------------------------------------------------------


def _index(index: tuple[int, ...]) -> str:
    """A tile's index as its journal line says it: ``3 7`` for tile (3, 7)."""
    return " ".join(map(str, index))


def _line(text: str) -> bytes:
    return f"{text} {zlib.crc32(text.encode()):08x}\n".encode()


def _parse(line: bytes) -> str | None:
    """The text of a complete line whose CRC matches; None for a torn one."""
    if not line.endswith(b"\n"):
        return None
    text, _, crc = line[:-1].decode(errors="replace").rpartition(" ")
    return text if crc == f"{zlib.crc32(text.encode()):08x}" else None


class UnreadableJournal(Exception):  # noqa: N818 - a state of the file, caught in this module
    """A journal file whose header is damaged: nothing it records can be trusted."""


def read_journal(path: Path) -> tuple[dict[str, Any], set[tuple[int, ...]]] | None:
    """The header and the recorded tiles; None when there is no journal.

    Raises :class:`UnreadableJournal` when the header is damaged: journals
    are created whole and renamed into place, so this is not a kill cut
    short but a file changed since.
    """
    try:
        with open(path, "rb") as file:
            lines = file.readlines()
    except FileNotFoundError:
        return None
    header = _parse(lines[0]) if lines else None
    if header is None:
        raise UnreadableJournal(f"{str(path)!r}: its first line is damaged")
    done = set()
    for line in lines[1:]:
        text = _parse(line)
        if text is None:
            break
        done.add(tuple(int(i) for i in text.split()))
    return json.loads(header), done


class Journal:
    """Appends tile records, each only after its data was forced to disk.

    ``add`` is called from the run's thread as tiles complete; a background
    thread commits them in batches. An error in a commit (a full disk) is
    raised by the next ``add`` or by ``close``.
    """

    def __init__(self, path: Path, sink: FileSink, interval: float) -> None:
        self.path = path
        self._sink = sink
        self._interval = interval
        self._file = open(path, "ab")  # noqa: SIM115 -- open for the life of the run
        self._pending: list[Tile] = []
        self._closing = False
        self._error: BaseException | None = None
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        if interval > 0:
            self._thread = threading.Thread(
                target=self._commit_loop, name="tilewise-journal", daemon=True
            )
            self._thread.start()

    @classmethod
    def create(
        cls,
        path: Path,
        header: dict[str, Any],
        sink: FileSink,
        interval: float,
        done: Iterable[tuple[int, ...]] = (),
    ) -> Journal:
        """A journal holding ``header`` and the tiles ``done``, written whole, then renamed.

        Resuming rewrites the journal this way: appending to one whose last
        line a kill cut short would glue the next record to it, and lose it.
        """
        temporary = temporary_path(path)
        with open(temporary, "wb") as file:
            file.write(_line(json.dumps(header)))
            file.write(b"".join(_line(_index(index)) for index in sorted(done)))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        fsync_dir(path.parent)
        return cls(path, sink, interval)

    def add(self, tile: Tile) -> None:
        if self._error is not None:
            raise self._error
        if self._thread is None:
            self._commit([tile])
            return
        with self._wake:
            self._pending.append(tile)

    def close(self, record_pending: bool = True) -> None:
        """Commit what is pending (unless ``record_pending`` is False), then stop.

        Raises a commit's error. A run that publishes its output next need
        not record its last tiles: publishing forces the output to disk, and
        if it fails, those tiles are computed again.
        """
        if self._thread is not None:
            with self._wake:
                self._closing = True
                if not record_pending:
                    self._pending = []
                self._wake.notify()
            self._thread.join()
        self._file.close()
        if self._error is not None:
            raise self._error

    def _commit_loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._closing, timeout=self._interval)
                batch, self._pending = self._pending, []
                closing = self._closing
            try:
                self._commit(batch)
            except BaseException as exc:
                self._error = exc
                return
            if closing:
                return

    def _commit(self, tiles: list[Tile]) -> None:
        if not tiles:
            return
        self._sink.sync([tile.slices for tile in tiles])
        self._file.write(b"".join(_line(_index(t.index)) for t in tiles))
        self._file.flush()
        os.fsync(self._file.fileno())


# --- a run on a file output ------------------------------------------------------------


class ResumableRun:
    """A run writing a file output: locked, journalled, resumed when asked and possible.

    On entry: takes the output's lock, removes a killed run's temporary
    files, and either reopens the journalled partial output (``resume``) or
    clears it. ``done`` holds the tile indices to skip and ``sink`` the
    reopened output, or None until ``create`` makes it from the first
    wave's results (the run is the executor's :class:`~tilewise.io.Output`).
    On a clean exit the output is published and the journal removed; on an
    error, the tiles finished so far stay recorded.
    """

    def __init__(
        self, output: FileOutput, identity: dict[str, Any], resume: bool, tile: tuple[int, ...]
    ) -> None:
        self.output = output
        self.identity = identity
        self.resume = resume
        self.tile = tile
        self.journal_path = output.state_file(JOURNAL)
        self.sink: FileSink | None = None
        self.done: frozenset[tuple[int, ...]] = frozenset()
        self._lock = OutputLock(str(output.path), output.state_file(LOCK))
        self._journal: Journal | None = None

    def __enter__(self) -> ResumableRun:
        self._lock.acquire()
        try:
            self._start()
        except BaseException:
            self._lock.release()
            raise
        return self

    def _start(self) -> None:
        for leftover in [*self.output.leftovers(), temporary_path(self.journal_path)]:
            remove(leftover)
        previous = None
        if self.resume:
            try:
                previous = read_journal(self.journal_path)
            except UnreadableJournal as exc:
                why = f"its journal is unreadable ({exc})"
            else:
                why = f"no {self.journal_path.name}"
            if previous is not None and not self.output.has_partial():
                previous, why = None, f"no partial output {str(self.output.partial)!r}"
            if previous is None:
                warnings.warn(
                    f"resume=True: no interrupted run of {str(self.output.path)!r} to resume "
                    f"({why}); computing every tile",
                    stacklevel=4,
                )
        if previous is None:
            # The journal goes first: it must never describe a file it did not see written.
            remove(self.journal_path)
            self.output.discard_partial()
            fsync_dir(self.journal_path.parent)
            return
        header, done = previous
        changed = differences(header, self.identity)
        if changed:
            raise ArgumentError(
                f"resume=True: cannot resume {str(self.output.path)!r}, this run differs from "
                f"the interrupted one: {'; '.join(changed)}. Run without resume to start over"
            )
        shape, dtype = tuple(header["output"]["shape"]), np.dtype(header["output"]["dtype"])
        self.sink = self.output.reopen(shape, dtype, self.tile)
        self.done = frozenset(done)
        self._journal = Journal.create(
            self.journal_path, header, self.sink, COMMIT_INTERVAL, done=self.done
        )

    def create(self, shape: tuple[int, ...], dtype: np.dtype, allocate: Allocate) -> FileSink:
        """The output, made once the first results give its dtype and extra dimensions.

        A file holds its own pixels: ``allocate``, for in-memory outputs, is not used.
        """
        self.sink = self.output.create(shape, dtype, self.tile)
        header = {**self.identity, "output": {"shape": list(shape), "dtype": dtype.str}}
        self._journal = Journal.create(self.journal_path, header, self.sink, COMMIT_INTERVAL)
        return self.sink

    def tile_done(self, tile: Tile) -> None:
        """Record ``tile``, whose data its worker has written."""
        assert self._journal is not None
        self._journal.add(tile)

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            if self._journal is not None:
                try:
                    self._journal.close(record_pending=exc_type is not None)
                except Exception:
                    if exc_type is None:
                        raise
            if self.sink is not None:
                self.sink.close()  # Windows cannot replace a file this process maps
            if exc_type is None:
                self.output.publish()
                remove(self.journal_path)
                fsync_dir(self.journal_path.parent)
        finally:
            self._lock.release()
