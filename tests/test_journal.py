"""The journal: record format, write order, run identity, and the output lock."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import tilewise
from tilewise.grid import Grid
from tilewise.io.base import Window
from tilewise.io.lock import OutputLock
from tilewise.io.npy import NpySource
from tilewise.journal import (
    Journal,
    UnreadableJournal,
    differences,
    func_identity,
    input_identity,
    journal_path,
    read_journal,
)

TILES = list(Grid(shape=(30, 30), tile=(10, 10)))


class RecordingSink:
    """A sink that checks, when asked to sync, that the journal has not yet recorded the tiles."""

    def __init__(self, journal_file: Path) -> None:
        self.journal_file = journal_file
        self.synced: list[Window] = []
        self.fail = False

    shape = (30, 30)
    dtype = np.dtype(np.float64)

    def write(self, window: Window, data: np.ndarray) -> None:
        pass

    def sync(self, windows: Sequence[Window]) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")
        recorded = read_journal(self.journal_file)
        assert recorded is not None
        for rows, cols in windows:
            assert (rows.start // 10, cols.start // 10) not in recorded[1], "recorded before synced"
        self.synced.extend(windows)


def new_journal(tmp_path: Path, interval: float) -> tuple[Journal, RecordingSink]:
    path = tmp_path / "o.npy.tilewise-journal"
    sink = RecordingSink(path)
    return Journal.create(path, {"tile": [10, 10]}, sink, interval), sink


@pytest.mark.parametrize("interval", [0, 0.01])
def test_a_tile_is_recorded_only_after_its_data_was_synced(tmp_path: Path, interval: float) -> None:
    journal, sink = new_journal(tmp_path, interval)
    for tile in TILES[:5]:
        journal.add(tile)
    journal.close()
    header, done = read_journal(journal.path)  # type: ignore[misc]
    assert header == {"tile": [10, 10]}
    assert done == {tile.index for tile in TILES[:5]}
    assert sorted(sink.synced, key=str) == sorted(((t.y, t.x) for t in TILES[:5]), key=str)


def test_a_line_cut_short_or_corrupted_ends_the_records(tmp_path: Path) -> None:
    journal, _ = new_journal(tmp_path, 0)
    for tile in TILES[:3]:
        journal.add(tile)
    journal.close()
    text = journal.path.read_bytes()
    lines = text.splitlines(keepends=True)
    assert read_journal(journal.path)[1] == {(0, 0), (0, 1), (0, 2)}  # type: ignore[index]
    journal.path.write_bytes(text[:-3])  # the last record torn by a kill
    assert read_journal(journal.path)[1] == {(0, 0), (0, 1)}  # type: ignore[index]
    corrupted = lines[2].replace(b"0 1", b"2 2")  # a record whose CRC no longer matches
    journal.path.write_bytes(b"".join([lines[0], lines[1], corrupted, lines[3]]))
    assert read_journal(journal.path)[1] == {(0, 0)}  # type: ignore[index]


def test_a_resumed_journal_is_rewritten_without_its_torn_line(tmp_path: Path) -> None:
    journal, sink = new_journal(tmp_path, 0)
    journal.add(TILES[0])
    journal.close()
    with open(journal.path, "ab") as file:
        file.write(b"0 1 5e")  # a kill cut this record short
    header, done = read_journal(journal.path)  # type: ignore[misc]
    resumed = Journal.create(journal.path, header, sink, 0, done=done)
    resumed.add(TILES[2])
    resumed.close()
    assert read_journal(journal.path) == (header, {(0, 0), (0, 2)})


def test_a_journal_with_a_damaged_header_is_unreadable_not_absent(tmp_path: Path) -> None:
    path = tmp_path / "j"
    assert read_journal(path) is None
    path.write_bytes(b'{"tile": [10')
    with pytest.raises(UnreadableJournal, match="its first line is damaged"):
        read_journal(path)


def test_resuming_from_a_damaged_journal_says_so_and_computes_every_tile(tmp_path: Path) -> None:
    image = np.arange(64.0).reshape(8, 8)
    out = tmp_path / "o.npy"
    (tmp_path / "o.npy.tilewise-journal").write_bytes(b"garbled, no CRC\n0 0 1234abcd\n")
    (tmp_path / "o.npy.tilewise-partial").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"its journal is unreadable .*; computing every tile"):
        tilewise.map_tiles(np.negative, image, tile=4, out=out, resume=True, backend="serial")
    np.testing.assert_array_equal(np.load(out), -image)


def test_a_failed_sync_records_nothing_and_surfaces(tmp_path: Path) -> None:
    journal, sink = new_journal(tmp_path, 0.001)
    sink.fail = True
    journal.add(TILES[0])
    with pytest.raises(OSError, match="No space left"):
        journal.close()
    assert read_journal(journal.path)[1] == set()  # type: ignore[index]


def test_journal_path_is_beside_the_output() -> None:
    assert journal_path(Path("/data/run/out.tif")) == Path("/data/run/out.tif.tilewise-journal")


# --- run identity ------------------------------------------------------------------------


def compiled(source: str, first_line: int = 1) -> types.FunctionType:
    namespace: dict[str, object] = {}
    code = compile("\n" * (first_line - 1) + textwrap.dedent(source), "<test>", "exec")
    exec(code, namespace)
    return namespace["f"]  # type: ignore[return-value]


def test_a_function_is_identified_by_its_code_not_by_where_it_is() -> None:
    plus_one = "def f(block):\n    return block + 1\n"
    plus_two = "def f(block):\n    return block + 2\n"
    assert func_identity(compiled(plus_one)) == func_identity(compiled(plus_one, first_line=40))
    assert func_identity(compiled(plus_one)) != func_identity(compiled(plus_two))
    assert func_identity(compiled(plus_one))["name"].endswith(":f")


def test_a_pixelwise_kernel_is_identified_by_its_code_and_settings() -> None:
    plus = compiled("def f(z, y, x):\n    return z[y, x] + 1\n")
    minus = compiled("def f(z, y, x):\n    return z[y, x] - 1\n")
    kernel = tilewise.pixelwise(radius=1)
    assert func_identity(kernel(plus)) == func_identity(kernel(plus))
    assert func_identity(kernel(plus)) != func_identity(kernel(minus))
    assert func_identity(kernel(plus)) != func_identity(tilewise.pixelwise(radius=2)(plus))


def test_partial_arguments_and_builtins_are_part_of_the_identity() -> None:
    from scipy import ndimage as ndi

    size3 = func_identity(functools.partial(ndi.uniform_filter, size=3))
    assert size3 == func_identity(functools.partial(ndi.uniform_filter, size=3))
    assert size3 != func_identity(functools.partial(ndi.uniform_filter, size=5))
    assert func_identity(np.square) == func_identity(np.square)
    assert func_identity(np.square) != func_identity(np.sqrt)


def test_a_file_input_is_identified_by_path_size_and_modification(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((4, 4)))
    before = input_identity(NpySource(path))
    assert before == input_identity(NpySource(path))
    np.save(path, np.ones((4, 4)))
    os.utime(path, ns=(before["mtime_ns"] + 10**9, before["mtime_ns"] + 10**9))
    assert before != input_identity(NpySource(path))


def test_an_in_memory_input_is_identified_by_sampled_rows() -> None:
    from tilewise.io import open_source

    image = np.arange(100.0).reshape(10, 10)
    before = input_identity(open_source(image))
    assert before == input_identity(open_source(image.copy()))
    changed = image.copy()
    changed[9, 3] = -1  # the last row is always sampled
    assert before != input_identity(open_source(changed))


def test_differences_name_what_changed() -> None:
    then = {"tile": [512, 512], "input": {"size": 10, "path": "/a"}, "boundary": "reflect"}
    now = {"tile": [256, 256], "input": {"size": 12, "path": "/a"}, "boundary": "reflect"}
    assert differences(then, now) == [
        "tile was [512, 512], now [256, 256]",
        "input size was 10, now 12",
    ]
    assert differences(now, now) == []


# --- the lock ------------------------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from tilewise.io.lock import OutputLock
OutputLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
sys.stdin.read()  # hold until killed
"""


def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "o.npy"
    with OutputLock(out):
        with pytest.raises(
            tilewise.ArgumentError, match=rf"another tilewise run \(pid {os.getpid()}\)"
        ):
            OutputLock(out).acquire()
        with pytest.raises(tilewise.ArgumentError, match="is writing it"):
            tilewise.map_tiles(np.copy, np.zeros((4, 4)), out=out)
    assert not (tmp_path / "o.npy.tilewise-lock").exists()
    with OutputLock(out):  # free again
        pass


@pytest.mark.posix
def test_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    out = tmp_path / "o.npy"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(tilewise.ArgumentError, match=rf"\(pid {holder.pid}\)"):
            OutputLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / "o.npy.tilewise-lock").exists()  # the file stays; the lock does not
    with OutputLock(out):
        pass


def test_a_dask_array_is_recognised_by_its_graph_without_computing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dask.array as da

    from tilewise.io.dask_array import DaskArraySource
    from tilewise.journal import input_identity

    def no_reading(*args: object) -> None:
        raise AssertionError("the identity of a dask array read its pixels")

    monkeypatch.setattr(DaskArraySource, "read", no_reading)
    data = np.arange(600.0).reshape(20, 30)
    same = input_identity(DaskArraySource(da.from_array(data, chunks=10)))
    assert same == input_identity(DaskArraySource(da.from_array(data, chunks=10)))
    other = input_identity(DaskArraySource(da.from_array(data + 1, chunks=10)))
    assert other["dask_graph"] != same["dask_graph"]
