"""The threads executor: every tile exactly once, and a prompt stop on failure or when asked."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tilewise
from tilewise import Grid, Tile, TileError
from tilewise._stages import TileJob
from tilewise.executors.threads import ThreadExecutor
from tilewise.io import ArraySink, ArraySource

IMAGE = np.arange(40 * 50, dtype=np.float64).reshape(40, 50)


def job_counting(
    calls: Counter[tuple[int, int]], fail_at: tuple[int, int] | None = None, pause: float = 0.0
) -> TileJob:
    """A job whose function counts its tiles, takes ``pause`` s each, and fails at ``fail_at``."""
    lock = threading.Lock()

    def func(block: np.ndarray, tile: Tile) -> np.ndarray:
        with lock:
            calls[tile.index] += 1
        if tile.index == fail_at:
            raise ValueError("no")
        time.sleep(pause)
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


def test_a_failure_stops_the_other_threads_after_their_current_tile() -> None:
    calls: Counter[tuple[int, int]] = Counter()
    grid = Grid(shape=IMAGE.shape, tile=(2, 2))  # 500 tiles
    job = job_counting(calls, fail_at=(0, 3), pause=0.002)
    executor = ThreadExecutor(2)
    try:
        with pytest.raises(TileError, match=r"tile \(0, 3\)"):
            for _ in executor.run(job, list(grid)):
                pass
    finally:
        executor.close()
    # Tiles (0, 0)..(0, 3) and at most the one the other thread held.
    assert sum(calls.values()) <= 5


def test_a_caller_that_stops_early_leaves_no_tile_running() -> None:
    calls: Counter[tuple[int, int]] = Counter()
    grid = Grid(shape=IMAGE.shape, tile=(2, 2))
    executor = ThreadExecutor(2)
    try:
        run = executor.run(job_counting(calls, pause=0.002), list(grid))
        next(run)
        run.close()  # returns once the threads have finished the tiles they held
        started = sum(calls.values())
        time.sleep(0.05)
        assert sum(calls.values()) == started < len(grid)
    finally:
        executor.close()


def test_map_tiles_on_threads_reports_the_failing_tile_with_its_cause() -> None:
    def fail_on_second_row(block: np.ndarray, tile: Tile) -> np.ndarray:
        if tile.index[0] == 1:
            raise KeyError("row")
        return block

    with pytest.raises(TileError, match=r"tile \(1, \d\) rows 10:20") as info:
        tilewise.map_tiles(fail_on_second_row, IMAGE, tile=10, pass_tile=True, backend="threads")
    assert isinstance(info.value.__cause__, KeyError)


CTRL_C_SCRIPT = """
import signal, time
import numpy as np
import tilewise

# Started from a shell's background job, SIGINT would be ignored: not here.
signal.signal(signal.SIGINT, signal.default_int_handler)

def slow(block):
    print("tile", flush=True)
    time.sleep(0.3)
    return block

tilewise.map_tiles(slow, np.zeros((100, 100)), tile=10, backend="threads", workers=2)
print("finished", flush=True)
"""


def test_ctrl_c_stops_a_threads_run_once_the_tiles_running_are_done() -> None:
    script = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert script.stdout is not None
    assert script.stdout.readline() == "tile\n"  # 100 tiles of 0.3 s: 15 s to the end
    start = time.monotonic()
    script.send_signal(signal.SIGINT)
    out, err = script.communicate(timeout=30)
    assert time.monotonic() - start < 2
    assert "KeyboardInterrupt" in err
    assert "finished" not in out
