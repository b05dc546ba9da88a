"""The dask backend's faults: a tile that kills its worker is the one named; SIGTERM stops cleanly.

Real faults on real clusters: a tile segfaults in a worker process of a
LocalCluster on loopback; SIGTERM goes to a script that runs its own
LocalCluster, once its tile has said through a FIFO that it runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import numpy as np
import psutil
import pytest
from distributed import Client, LocalCluster

import tilewise
from tilewise import Tile, WorkerDiedError
from tilewise.executors.dask import MALLOC_TRIM_SETTING
from tilewise.journal import read_journal
from tilewise.sharedmem import PREFIX, clear_cache

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

#: Two attempts per task: a tile that kills every worker is found in a few seconds.
ALLOWED_FAILURES = 1
CULPRIT = (2, 3)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """Two single-threaded worker processes behind a scheduler on 127.0.0.1."""
    config = {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES, MALLOC_TRIM_SETTING: None}
    with (
        dask.config.set(config),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def segments_held() -> set[str]:
    """tilewise's shared-memory segments this process holds, by descriptor or mapping, once
    garbage is collected and the reuse cache emptied; and those named in /dev/shm."""
    gc.collect()
    clear_cache()
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone
            held.add(os.readlink(f"/proc/self/fd/{fd}"))
    with open("/proc/self/maps") as maps:
        held.update(line.split(maxsplit=5)[-1].strip() for line in maps)
    ours = {name for name in held if PREFIX in name}
    shm = Path("/dev/shm")
    return ours | (
        {p.name for p in shm.iterdir() if p.name.startswith(PREFIX)} if shm.is_dir() else set()
    )


def segfault_at_culprit(block: np.ndarray, tile: Tile) -> np.ndarray:
    if tile.index == CULPRIT:
        ctypes.string_at(0)  # reads address 0: SIGSEGV, on every attempt
    return block + 1


@pytest.mark.linux
def test_the_tile_that_segfaults_is_named_not_its_task_mates(client: Client) -> None:
    """Quick tiles travel several to a task: the culprit shares one with others, which are
    then run one by one, each alone, until the one that kills is known."""
    image = np.zeros((64, 80))  # 4 x 5 tiles of 16; after the first wave, tasks of several
    before = segments_held()
    tasks: list[tuple[Tile, ...]] = []
    submit = client.submit

    def recording_submit(func: object, *args: object, **options: object) -> object:
        if len(args) == 3 and isinstance(args[2], tuple):
            tasks.append(args[2])  # type: ignore[arg-type]
        return submit(func, *args, **options)  # type: ignore[arg-type]

    client.submit = recording_submit  # type: ignore[method-assign]
    try:
        with pytest.raises(WorkerDiedError) as caught:
            tilewise.map_tiles(segfault_at_culprit, image, tile=16, pass_tile=True, client=client)
    finally:
        del client.submit
    assert caught.value.tile.index == CULPRIT
    message = str(caught.value)
    assert message.startswith(f"tile {CULPRIT} rows 32:48, cols 48:64: ")
    assert f"died on all {ALLOWED_FAILURES + 1} attempts when it ran alone" in message
    first = next(group for group in tasks if any(t.index == CULPRIT for t in group))
    assert len(first) > 1  # the case the rerun is for: it was not alone in its first task
    assert all(f"{t.index}" in message for t in first if t.index != CULPRIT)
    # The culprit ran again alone, as its task-mates did before it.
    alone = [group[0].index for group in tasks if len(group) == 1 and group[0] in first]
    assert CULPRIT in alone
    del caught  # its traceback's frames hold the run's arrays
    # The run's shared image and result are let go, once Dask's event loop has dropped the
    # failed tasks' state, whose tracebacks hold the run's frames: soon after the run.
    deadline = time.monotonic() + 10
    while not segments_held() <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert segments_held() <= before
    client.wait_for_workers(2, timeout=60)  # the nannies restart them; later tests need two


@pytest.mark.posix
def test_task_mates_of_a_tile_that_killed_its_worker_once_are_computed(
    client: Client, tmp_path: Path
) -> None:
    """A task of several tiles killed on every attempt, by a tile that kills only the first
    time: rerun one by one, every tile is computed and nothing is raised."""
    claim = tmp_path / "claimed"

    def segfault_once(block: np.ndarray, tile: Tile) -> np.ndarray:
        if tile.index == CULPRIT:
            try:  # one worker death per attempt of the task; none once rerun alone
                os.close(os.open(claim, os.O_CREAT | os.O_EXCL))
                os.kill(os.getpid(), signal.SIGSEGV)
            except FileExistsError:
                if not (tmp_path / "again").exists():
                    (tmp_path / "again").touch()
                    os.kill(os.getpid(), signal.SIGSEGV)
        return block + tile.index[0] * 10 + tile.index[1]

    image = np.zeros((64, 80))
    got = tilewise.map_tiles(segfault_once, image, tile=16, pass_tile=True, client=client)
    expected = tilewise.map_tiles(
        lambda b, t: b + t.index[0] * 10 + t.index[1], image, tile=16, pass_tile=True,
        backend="serial",
    )  # fmt: skip
    np.testing.assert_array_equal(got, expected)
    client.wait_for_workers(2, timeout=60)


# --- SIGTERM to a script running its own LocalCluster -----------------------------------------

SCRIPT = """
import os, sys, threading
import numpy as np, tilewise

def add_one(block, tile):
    if tile.index == (2, 0) and not os.path.exists("resumed"):
        with open("fifo", "w") as fifo:
            fifo.write(f"{{os.getpid()}}\\n")
        threading.Event().wait()  # until its worker is stopped
    return block + 1

if __name__ == "__main__":
    image = np.arange(64 * 64.0).reshape(64, 64)
    tilewise.map_tiles(add_one, image, tile=16, out="o.npy", backend="dask", workers=2,
                       pass_tile=True, resume={resume})
    print("done")
"""


def run_script(folder: Path, *, resume: bool) -> subprocess.Popen[str]:
    script = folder / ("resume.py" if resume else "run.py")
    script.write_text(textwrap.dedent(SCRIPT.format(resume=resume)))
    return subprocess.Popen(
        [sys.executable, str(script)], cwd=folder, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def read_line(fifo: int, timeout: float = 60) -> str:
    """A line from a FIFO opened read-write and non-blocking, as soon as it is written."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, "the tile never started"
        if select.select([fifo], [], [], left)[0]:
            data += os.read(fifo, 4096)
    return data.decode().strip()


@pytest.mark.posix
def test_sigterm_stops_a_run_on_its_own_cluster_as_ctrl_c_does(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    fifo = os.open(tmp_path / "fifo", os.O_RDWR | os.O_NONBLOCK)  # the writer never blocks
    try:
        script = run_script(tmp_path, resume=False)
        worker = int(read_line(fifo))  # the tile runs: the output, journal and lock exist
    finally:
        os.close(fifo)
    started = psutil.Process(script.pid).children(recursive=True)
    assert worker in {p.pid for p in started}
    assert (tmp_path / "o.npy.tilewise-lock").exists()
    script.send_signal(signal.SIGTERM)
    _, err = script.communicate(timeout=60)
    assert script.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err  # SystemExit(143): a clean exit, not a crash
    assert "leaked" not in err
    assert not (tmp_path / "o.npy.tilewise-lock").exists()
    assert not (tmp_path / "o.npy").exists()
    assert (tmp_path / "o.npy.tilewise-partial").exists()
    found = read_journal(tmp_path / "o.npy.tilewise-journal")
    assert found is not None
    done = found[1]
    assert 0 < len(done) < 16
    assert (2, 0) not in done
    _, alive = psutil.wait_procs(started, timeout=30)  # the cluster's processes, all gone
    assert alive == []

    (tmp_path / "resumed").touch()
    again = run_script(tmp_path, resume=True)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert out.strip() == "done"
    assert "leaked" not in err
    np.testing.assert_array_equal(
        np.load(tmp_path / "o.npy"), np.arange(64 * 64.0).reshape(64, 64) + 1
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("o.npy")) == ["o.npy"]
