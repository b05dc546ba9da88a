"""Fault injection on the processes backend: dying, hanging and failing tiles, signals.

Every test checks afterwards that no worker process is left beyond the idle
workers of the reusable pool, that /dev/shm holds the same entries as before,
and that nothing about leaked resources reached stderr. Tests synchronise
through FIFOs (a tile announces that it has started), never through sleeps.
"""

from __future__ import annotations

import faulthandler
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import pytest

import tilewise
from tilewise import Tile, TileError, TileTimeoutError, WorkerDiedError
from tilewise.errors import Death
from tilewise.executors import _pool
from tilewise.executors.processes import shutdown
from tilewise.sharedmem import PREFIX, remove_stale_segments

IMAGE = np.arange(48 * 64, dtype=np.float64).reshape(48, 64)
TILE = 16  # 3 x 4 tiles
SHM = Path("/dev/shm")


def posix(*values: object) -> object:
    """A parameter that only POSIX runs: signal deaths, the fork server."""
    return pytest.param(*values, marks=pytest.mark.posix)


# --- leak checks ------------------------------------------------------------------------


def shm_entries(owner: int | None = None) -> set[str]:
    """/dev/shm, less what other processes on a shared machine are creating meanwhile.

    That is: other owners' tilewise segments, and multiprocessing's semaphores
    (named ``sem.mp-*`` only between their creation and immediate unlink).
    """
    mine = f"{PREFIX}{os.getpid() if owner is None else owner}_"
    names = set(os.listdir(SHM)) if SHM.is_dir() else set()
    return {
        n
        for n in names
        if not n.startswith("sem.mp-") and (not n.startswith(PREFIX) or n.startswith(mine))
    }


def is_infrastructure(process: psutil.Process, root: int) -> bool:
    """multiprocessing's own helpers of ``root`` (resource tracker, fork server), not workers.

    Workers forked by the fork server share its command line, one level down.
    """
    try:
        command = " ".join(process.cmdline())
        parent = process.ppid()
    except psutil.Error:
        return False
    return "resource_tracker" in command or ("forkserver" in command and parent == root)


def is_alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def live(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if is_alive(p)]


def pool_workers() -> dict[int, _pool.Worker]:
    return {w.process.pid: w for pool in _pool._idle.values() for w in pool.workers}  # type: ignore[misc]


@pytest.fixture(autouse=True)
def no_leaks(capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    shm_before = shm_entries()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    workers = pool_workers()
    assert all(not w.tiles and w.process.is_alive() for w in workers.values())
    others = [
        p
        for p in live(psutil.Process().children(recursive=True))
        if p.pid not in before and p.pid not in workers and not is_infrastructure(p, os.getpid())
    ]
    assert others == []
    assert shm_entries() == shm_before
    err = capfd.readouterr().err
    assert "resource_tracker" not in err
    assert "leaked" not in err


def test_shutdown_leaves_no_worker() -> None:
    tilewise.map_tiles(np.negative, IMAGE, tile=TILE, backend="processes", workers=2)
    pids = list(pool_workers())
    assert len(pids) == 2
    shutdown()
    assert pool_workers() == {}
    assert live([psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)]) == []


# --- tiles that misbehave ------------------------------------------------------------------


def die(how: str) -> None:
    if how == "exit":
        os._exit(3)
    elif how == "sys.exit":
        sys.exit(4)
    elif how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "segfault":
        faulthandler.disable()  # a real segfault, without the traceback dump on stderr
        faulthandler._sigsegv()


def kill_worker(
    block: np.ndarray, tile: Tile, *, marks: str, targets: object, how: str, once: bool
) -> np.ndarray:
    """Kill the worker on the target tiles: once each (a mark file remembers), or always."""
    if targets == "all" or tile.index in targets:  # type: ignore[operator]
        mark = Path(marks) / f"{tile.index[0]}-{tile.index[1]}"
        if not (once and mark.exists()):
            mark.touch()
            die(how)
    return block * 2


@pytest.mark.parametrize("how", ["exit", posix("sigkill"), posix("segfault")])
def test_a_worker_that_dies_once_is_replaced(tmp_path: Path, how: str) -> None:
    func = partial(kill_worker, marks=str(tmp_path), targets=[(1, 2)], how=how, once=True)
    got = tilewise.map_tiles(func, IMAGE, tile=TILE, pass_tile=True, backend="processes")
    np.testing.assert_array_equal(got, IMAGE * 2)


@pytest.mark.parametrize(
    ("how", "death"),
    [
        ("exit", "exit code 3"),
        ("sys.exit", "exit code 4"),
        posix("sigkill", "killed by SIGKILL (out of memory?)"),
        posix("segfault", "killed by SIGSEGV"),
    ],
)
def test_a_tile_that_always_kills_its_worker_is_reported(
    tmp_path: Path, how: str, death: str
) -> None:
    func = partial(kill_worker, marks=str(tmp_path), targets=[(1, 2)], how=how, once=False)
    with pytest.raises(WorkerDiedError) as info:
        tilewise.map_tiles(func, IMAGE, tile=TILE, pass_tile=True, backend="processes", retries=2)
    assert info.value.tile.index == (1, 2)
    assert [str(record) for record in info.value.deaths] == [death] * 3  # 3 attempts, no more
    assert "tile (1, 2) rows 16:32, cols 32:48" in str(info.value)
    assert "died on all 3 attempts" in str(info.value)
    assert death in str(info.value)


def test_tiles_in_flight_on_a_dying_worker_are_not_charged(tmp_path: Path) -> None:
    # Every tile kills its worker once, always with another tile queued behind
    # it; with retries=1 a single wrongly charged death would fail the run.
    func = partial(kill_worker, marks=str(tmp_path), targets="all", how="exit", once=True)
    got = tilewise.map_tiles(
        func, IMAGE, tile=TILE, pass_tile=True, backend="processes", workers=2, retries=1
    )
    np.testing.assert_array_equal(got, IMAGE * 2)
    assert len(list(tmp_path.iterdir())) == 12


def test_retries_zero_fails_at_the_first_death(tmp_path: Path) -> None:
    func = partial(kill_worker, marks=str(tmp_path), targets=[(0, 3)], how="exit", once=True)
    with pytest.raises(WorkerDiedError) as info:
        tilewise.map_tiles(func, IMAGE, tile=TILE, pass_tile=True, backend="processes", retries=0)
    assert info.value.deaths == (Death(3),)


@pytest.mark.slow
@pytest.mark.parametrize("start_method", ["spawn", posix("forkserver")])
def test_replacement_workers_under_other_start_methods(tmp_path: Path, start_method: str) -> None:
    func = partial(
        kill_worker, marks=str(tmp_path), targets=[(0, 1), (2, 3)], how="exit", once=True
    )
    got = tilewise.map_tiles(
        func, IMAGE, tile=TILE, pass_tile=True, backend="processes", start_method=start_method
    )
    np.testing.assert_array_equal(got, IMAGE * 2)
    shutdown()  # do not keep a spawn/forkserver pool for the rest of the session


NO_GUARD = """
import numpy as np

import tilewise

image = np.zeros((64, 64))
tilewise.map_tiles(lambda b: b + 1, image, tile=32, start_method={start_method!r})
"""


@pytest.mark.parametrize("start_method", ["spawn", posix("forkserver")])
def test_a_script_without_the_main_guard_is_told_why_its_workers_die(
    tmp_path: Path, start_method: str
) -> None:
    script = tmp_path / "no_guard.py"
    script.write_text(NO_GUARD.format(start_method=start_method))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    # Every worker has died, and printed why, before the caller reports it: its error is last.
    error = done.stderr.rstrip().splitlines()[-1]
    # Which tile of the first wave runs out of attempts first is a race; one of them does.
    assert re.match(r"tilewise.errors.WorkerDiedError: tile \(0, [01]\)", error), done.stderr
    assert "attempt 3: exit code 1 while starting" in error
    assert 'without `if __name__ == "__main__":`' in error


def test_a_worker_dying_after_it_started_gets_no_guard_hint(tmp_path: Path) -> None:
    func = partial(kill_worker, marks=str(tmp_path), targets=[(0, 0)], how="exit", once=False)
    with pytest.raises(WorkerDiedError) as info:
        tilewise.map_tiles(
            func, IMAGE, tile=TILE, pass_tile=True, backend="processes", start_method="spawn"
        )
    assert "__main__" not in str(info.value)
    assert not any(death.while_starting for death in info.value.deaths)
    shutdown()


# --- hanging and failing tiles, synchronised through FIFOs -------------------------------


class Fifo:
    """A named pipe: tiles write a line to it, the test waits for that line."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        # Read-write, so writers never block and the test never sees end-of-file.
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._buffer = b""

    def readline(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                raise TimeoutError(f"nothing on {self.path} within {timeout} s")
            self._buffer += os.read(self._fd, 4096)
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        os.close(self._fd)


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Fifo]:
    pipe = Fifo(tmp_path / "fifo")
    yield pipe
    pipe.close()


def announce(path: str, text: str) -> None:
    with open(path, "w") as pipe:
        pipe.write(f"{text}\n")


def hang_on(block: np.ndarray, tile: Tile, *, fifo: str, target: tuple[int, int]) -> np.ndarray:
    if tile.index == target:
        announce(fifo, f"{tile.index} {os.getpid()}")
        threading.Event().wait()
    return block


@pytest.mark.posix
def test_a_hung_tile_times_out_and_its_worker_is_killed(fifo: Fifo) -> None:
    func = partial(hang_on, fifo=str(fifo.path), target=(1, 1))
    # The tile never ends: that the run does is the timeout's doing.
    with pytest.raises(TileTimeoutError) as info:
        tilewise.map_tiles(func, IMAGE, tile=TILE, pass_tile=True, backend="processes", timeout=1)
    assert info.value.tile.index == (1, 1)
    assert "timeout=1 s" in str(info.value)
    index, pid = fifo.readline().rsplit(" ", 1)
    assert index == "(1, 1)"
    assert live([psutil.Process(int(pid))] if psutil.pid_exists(int(pid)) else []) == []


def fail_while_another_hangs(block: np.ndarray, tile: Tile, *, rendezvous: str) -> np.ndarray:
    """Tile (0, 2) hangs; tile (0, 3) fails once it knows (0, 2) is running, naming its pid.

    Both come after the first wave, (0, 0) and (0, 1) on two workers, which the
    others wait for: the output is made from its results.
    """
    if tile.index == (0, 2):
        announce(rendezvous, str(os.getpid()))
        threading.Event().wait()
    if tile.index == (0, 3):
        with open(rendezvous) as pipe:
            raise ValueError(f"bad tile; pid {pipe.readline().strip()} is busy")
    return block


@pytest.mark.posix
def test_a_tile_error_stops_the_run_without_waiting(tmp_path: Path) -> None:
    rendezvous = tmp_path / "rendezvous"
    os.mkfifo(rendezvous)
    func = partial(fail_while_another_hangs, rendezvous=str(rendezvous))
    with pytest.raises(TileError) as info:
        tilewise.map_tiles(func, IMAGE, tile=TILE, pass_tile=True, backend="processes", workers=2)
    error = info.value
    assert type(error) is TileError
    assert error.tile.index == (0, 3)
    assert "func raised ValueError: bad tile" in str(error)
    # The original exception is chained, and the worker's traceback behind it.
    assert isinstance(error.__cause__, ValueError)
    remote = error.__cause__.__cause__
    assert type(remote).__name__ == "RemoteTraceback"
    assert "in fail_while_another_hangs" in str(remote)
    pid = int(re.search(r"pid (\d+)", str(error)).group(1))  # type: ignore[union-attr]
    assert live([psutil.Process(pid)] if psutil.pid_exists(pid) else []) == []


def unpicklable_exception(block: np.ndarray) -> np.ndarray:
    class LocalError(Exception):
        def __reduce__(self) -> object:
            raise TypeError("not today")

    raise LocalError("odd")


def test_an_exception_that_does_not_pickle_still_reports_its_traceback() -> None:
    with pytest.raises(TileError, match="func raised LocalError: odd") as info:
        tilewise.map_tiles(unpicklable_exception, IMAGE, tile=TILE, backend="processes")
    remote = info.value.__cause__
    assert type(remote).__name__ == "RemoteTraceback"
    assert "LocalError: odd" in str(remote)


# --- signals to a running script ---------------------------------------------------------

SCRIPT = """
import os, sys, threading
import multiprocessing as mp
import numpy as np
import tilewise

def hang(block):
    with open({fifo!r}, "w") as pipe:
        pipe.write(f"started {{os.getpid()}}\\n")
    threading.Event().wait()

if __name__ == "__main__":
    tilewise.sharedmem.segments.USE_MEMFD = {memfd!r}
    mp.set_start_method({start_method!r})
    image = np.zeros((64, 64))
    tilewise.map_tiles(lambda b: b + 1, image, tile=32)  # idle workers in the pool too
    tilewise.map_tiles(hang, image, tile=16, workers=2)
"""


def start_script(
    tmp_path: Path, fifo: Fifo, start_method: str, memfd: bool = True
) -> subprocess.Popen[str]:
    script = tmp_path / "script.py"
    text = SCRIPT.format(fifo=str(fifo.path), start_method=start_method, memfd=memfd)
    script.write_text(textwrap.dedent(text))
    return subprocess.Popen(
        [sys.executable, str(script)], stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still alive (zombies count as gone) after up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while live(processes) and time.monotonic() < deadline:
        psutil.wait_procs(live(processes), timeout=0.1)
    return live(processes)


@pytest.mark.linux
@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "start_method"),
    [(signal.SIGINT, "spawn"), (signal.SIGTERM, "forkserver"), (signal.SIGTERM, "fork")],
)
def test_a_signal_stops_the_script_and_everything_it_started(
    tmp_path: Path, fifo: Fifo, sig: int, start_method: str
) -> None:
    script = start_script(tmp_path, fifo, start_method)
    shm_before = shm_entries(script.pid)
    assert fifo.readline().startswith("started")
    spawned = descendants(script.pid)
    workers = [p for p in spawned if not is_infrastructure(p, script.pid)]
    assert len(workers) == 2
    script.send_signal(sig)
    # Its tiles never end: that the script does shows it stopped without waiting for them.
    _, err = script.communicate(timeout=10)
    assert script.returncode != 0
    assert wait_gone(spawned, timeout=10) == []
    assert shm_entries(script.pid) == shm_before
    assert "resource_tracker" not in err
    assert "leaked" not in err
    if sig == signal.SIGTERM:
        assert script.returncode == 128 + signal.SIGTERM
        assert "Traceback" not in err  # SystemExit(143): a clean exit, not a crash
    else:
        assert "KeyboardInterrupt" in err


@pytest.mark.linux
@pytest.mark.slow
@pytest.mark.parametrize(("start_method", "segments"), [("fork", "memfd"), ("spawn", "named")])
def test_workers_exit_when_the_parent_is_killed(
    tmp_path: Path, fifo: Fifo, start_method: str, segments: str
) -> None:
    script = start_script(tmp_path, fifo, start_method, memfd=segments == "memfd")
    shm_before = shm_entries(script.pid)
    assert fifo.readline().startswith("started")
    spawned = descendants(script.pid)
    script.kill()
    script.communicate()
    assert wait_gone(spawned, timeout=10) == []
    left = shm_entries(script.pid) - shm_before
    if segments == "memfd":
        assert left == set()  # the kernel freed them with their last process
        return
    # Named segments are left, marked with the dead run's pid; the next run removes them.
    assert left
    assert all(name.startswith(f"{PREFIX}{script.pid}_") for name in left)
    assert left <= {Path(p).name for p in remove_stale_segments()}
    assert shm_entries(script.pid) == shm_before
