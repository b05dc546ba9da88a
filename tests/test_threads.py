"""The threads executor: every tile exactly once, and a prompt stop on failure or when asked."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tilewise
from tilewise import Grid, Tile, TileError
from tilewise._stages import TileJob
from tilewise.executors import threads as thread_backend
from tilewise.executors.threads import ThreadExecutor
from tilewise.io import ArraySink, ArraySource

IMAGE = np.arange(40 * 50, dtype=np.float64).reshape(40, 50)


def job_counting(calls: Counter[tuple[int, int]]) -> TileJob:
    """A job whose function counts its tiles."""
    lock = threading.Lock()

    def func(block: np.ndarray, tile: Tile) -> np.ndarray:
        with lock:
            calls[tile.index] += 1
        return block * 2

    return TileJob(
        func=func,
        source=ArraySource(IMAGE),
        sink=ArraySink(np.zeros_like(IMAGE)),
        boundary="reflect",
        cval=0.0,
        pass_tile=True,
    )


@given(workers=st.integers(1, 5), tile=st.integers(1, 60))
def test_every_tile_is_computed_and_reported_exactly_once(workers: int, tile: int) -> None:
    calls: Counter[tuple[int, int]] = Counter()
    job = job_counting(calls)
    grid = Grid(shape=IMAGE.shape, tile=(tile, tile))
    executor = ThreadExecutor(workers)
    try:
        reported = Counter(done.index for done in executor.run(job, list(grid)))
    finally:
        executor.close()
    expected = Counter(t.index for t in grid)
    assert reported == expected
    assert calls == expected
    assert job.sink is not None
    np.testing.assert_array_equal(job.sink.array, IMAGE * 2)  # type: ignore[attr-defined]


def stop_is_announced(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set once a run has stopped taking tiles: when it has set its stop, and waits
    for the tiles still running (the executor's one call of ``wait``)."""
    stopped = threading.Event()
    wait = thread_backend.wait

    def wait_once_stopped(*args: Any, **kwargs: Any) -> Any:
        stopped.set()
        return wait(*args, **kwargs)

    monkeypatch.setattr(thread_backend, "wait", wait_once_stopped)
    return stopped


def test_a_failure_stops_the_other_threads_after_their_current_tile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tile (0, 5) fails once each other thread is inside a tile it took after (0, 5)
    # began; those tiles end only once the run has stopped. Whatever the scheduling,
    # each other thread must then finish that tile, and take no other.
    workers, failing = 3, (0, 5)
    grid = Grid(shape=IMAGE.shape, tile=(2, 2))  # 500 tiles
    stopped = stop_is_announced(monkeypatch)
    failure_began = threading.Event()
    all_inside = threading.Barrier(workers, timeout=30)  # the failing tile and one per other
    lock = threading.Lock()
    started: list[tuple[tuple[int, int], str, bool]] = []  # tile, thread, after the stop
    held: dict[str, tuple[int, int]] = {}  # thread: the tile it held when (0, 5) failed

    def func(block: np.ndarray, tile: Tile) -> np.ndarray:
        thread = threading.current_thread().name
        with lock:
            started.append((tile.index, thread, stopped.is_set()))
        if tile.index == failing:
            failure_began.set()
            all_inside.wait()
            raise ValueError("no")
        if failure_began.is_set() and not stopped.is_set():
            with lock:
                held[thread] = tile.index
            all_inside.wait()
            assert stopped.wait(timeout=30), "the run did not stop"
        return block * 2

    sink = ArraySink(np.zeros_like(IMAGE))
    job = TileJob(func, ArraySource(IMAGE), sink, "reflect", 0.0, pass_tile=True)
    executor = ThreadExecutor(workers)
    try:
        with pytest.raises(TileError, match=r"tile \(0, 5\)"):
            for _ in executor.run(job, list(grid)):
                pass
    finally:
        executor.close()
    order = [t.index for t in grid]
    ran = [index for index, _, _ in started]
    assert sorted(ran, key=order.index) == order[: len(ran)]  # each once, in the grid's order
    assert [index for index, _, late in started if late] == []  # none after the stop
    failed_on = next(thread for index, thread, _ in started if index == failing)
    assert len(held) == workers - 1  # one tile held by each other thread
    assert failed_on not in held
    for thread, index in held.items():
        assert [i for i, t, _ in started if t == thread][-1] == index  # its last tile
        tile = grid.tile_at(index)
        np.testing.assert_array_equal(sink.array[tile.y, tile.x], IMAGE[tile.y, tile.x] * 2)


def test_a_caller_that_stops_early_leaves_no_tile_running() -> None:
    lock = threading.Lock()
    calls, inside = 0, 0

    def func(block: np.ndarray) -> np.ndarray:
        nonlocal calls, inside
        with lock:
            calls, inside = calls + 1, inside + 1
        try:
            time.sleep(0.002)  # stands for the tile's work
            return block * 2
        finally:
            with lock:
                inside -= 1

    grid = Grid(shape=IMAGE.shape, tile=(2, 2))
    job = TileJob(
        func, ArraySource(IMAGE), ArraySink(np.zeros_like(IMAGE)), "reflect", 0.0, pass_tile=False
    )
    executor = ThreadExecutor(2)
    try:
        run = executor.run(job, list(grid))
        next(run)
        run.close()  # returns once the threads have finished the tiles they held
        assert inside == 0
        started = calls
    finally:
        executor.close()  # joins the threads: none can start a tile after this
    assert calls == started < len(grid)


def test_map_tiles_on_threads_reports_the_failing_tile_with_its_cause() -> None:
    def fail_on_second_row(block: np.ndarray, tile: Tile) -> np.ndarray:
        if tile.index[0] == 1:
            raise KeyError("row")
        return block

    with pytest.raises(TileError, match=r"tile \(1, \d\) rows 10:20") as info:
        tilewise.map_tiles(fail_on_second_row, IMAGE, tile=10, pass_tile=True, backend="threads")
    assert isinstance(info.value.__cause__, KeyError)


CTRL_C_SCRIPT = """
import os, queue, signal, sys, threading
import numpy as np
import tilewise
from tilewise.executors import threads

# Started from a shell's background job, SIGINT would be ignored: not here.
signal.signal(signal.SIGINT, signal.default_int_handler)
# Tiles start once the caller's thread waits for finished tiles: the Ctrl-C then
# reaches it inside the run, not while it is still starting the threads.
waiting = threading.Event()


class Reports(queue.SimpleQueue):
    def get(self, *args, **kwargs):
        waiting.set()
        return super().get(*args, **kwargs)


wait = threads.wait


def wait_once_stopped(*args, **kwargs):  # the run has stopped taking tiles
    os.write(1, b"stopped\\n")
    return wait(*args, **kwargs)


threads.SimpleQueue, threads.wait = Reports, wait_once_stopped
# A SIGINT that lands just before the caller's thread blocks on the queue (or on
# another thread) is handled only once a report wakes it: every tile reports.
threads.REPORT_EVERY = -1


def held(block):
    waiting.wait()
    os.write(1, b"tile\\n")  # one write: lines of two threads never mix
    sys.stdin.readline()  # until the test lets it end
    os.write(1, b"done\\n")
    return block


image = np.zeros((100, 100))
tilewise.map_tiles(held, image, tile=10, out=np.empty_like(image), backend="threads", workers=2)
os.write(1, b"finished\\n")
"""


@pytest.mark.posix
@pytest.mark.timeout(60)
def test_ctrl_c_stops_a_threads_run_once_the_tiles_running_are_done() -> None:
    script = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert script.stdin is not None
    assert script.stdout is not None
    assert script.stdout.readline() == "tile\n"
    assert script.stdout.readline() == "tile\n"  # both threads hold a tile, of 100
    script.send_signal(signal.SIGINT)
    # One tile is let go: should the SIGINT wait for the caller's thread to wake, its
    # report wakes it; its thread may take one more tile before the stop, no other.
    script.stdin.write("\n")
    script.stdin.flush()
    before = []
    while (line := script.stdout.readline()) != "stopped\n":
        assert line in ("tile\n", "done\n"), line
        before.append(line)
    script.stdin.close()  # the tiles held end
    # Not communicate(): it would miss what readline() has already buffered.
    out, err = script.stdout.read(), script.stderr.read()
    script.wait(timeout=30)
    lines = ["tile\n", "tile\n", *before, *out.splitlines(keepends=True)]
    assert "finished\n" not in lines
    assert lines.count("tile\n") <= 3  # of 100 tiles
    assert lines.count("done\n") == lines.count("tile\n")  # each tile started was finished
    assert "done\n" in out  # and one still held when the run stopped
    assert "KeyboardInterrupt" in err
    assert script.returncode != 0
