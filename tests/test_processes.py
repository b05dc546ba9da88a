"""The processes backend: every start method, shared memory in and out, worker reuse.

Faults (dying, hanging, failing tiles, signals) are in test_faults.py; the
oracle tests of test_map_tiles.py run on this backend too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import pytest
from scipy import ndimage as ndi

import tilewise
from tilewise import ArgumentError, ArgumentTypeError
from tilewise._kernel import default_backend
from tilewise.executors import _pool
from tilewise.executors._transport import SharedSource, pickle_job
from tilewise.executors.processes import ProcessExecutor, shutdown
from tilewise.sharedmem import PREFIX, SharedArray, clear_cache, remove_stale_segments
from tilewise.sharedmem.segments import Segment

SHM = Path("/dev/shm")


def my_segments() -> set[str]:
    """This process's tilewise segments (other processes on the machine may make their own)."""
    mine = f"{PREFIX}{os.getpid()}_"
    return {n for n in os.listdir(SHM) if n.startswith(mine)} if SHM.is_dir() else set()


@pytest.fixture(autouse=True)
def no_segments_left() -> object:
    before = my_segments()
    yield
    assert my_segments() == before


# --- every start method, in a fresh interpreter ------------------------------------------

FUNCS_MODULE = '''
import math
import numpy as np


def negate(block):
    return -block


def slope(block):
    """The original question: a 3x3-neighbourhood slope as a pure-Python double loop."""
    rows, cols = block.shape
    out = np.zeros((rows, cols))
    for y in range(1, rows - 1):
        for x in range(1, cols - 1):
            dzdx = (block[y, x + 1] - block[y, x - 1]) / 2
            dzdy = (block[y + 1, x] - block[y - 1, x]) / 2
            out[y, x] = math.atan(math.hypot(dzdx, dzdy))
    return out
'''

START_METHOD_SCRIPT = '''
import json, math, os, sys
import multiprocessing as mp
import numpy as np
import tilewise
from tilewise.executors import _pool
from tiles_funcs import negate, slope


def main_slope(block):
    """The same loop, defined in __main__: it must travel by value."""
    rows, cols = block.shape
    out = np.zeros((rows, cols))
    for y in range(1, rows - 1):
        for x in range(1, cols - 1):
            dzdx = (block[y, x + 1] - block[y, x - 1]) / 2
            dzdy = (block[y + 1, x] - block[y - 1, x]) / 2
            out[y, x] = math.atan(math.hypot(dzdx, dzdy))
    return out


def where(block):
    return np.full(block.shape, os.getpid())


if __name__ == "__main__":
    method = sys.argv[1]
    mp.set_start_method(method)
    image = np.random.default_rng(1).standard_normal((90, 130)) * 10
    scale = 3.0

    def closure(block):
        return block * scale

    cases = {
        "module-level": (negate, 0),
        "lambda": (lambda b: b + 1, 0),
        "closure": (closure, 0),
        "module-level loop": (slope, 1),
        "__main__ loop": (main_slope, 1),
    }
    for name, (func, halo) in cases.items():
        kwargs = dict(tile=(32, 48), halo=halo, boundary="nearest")
        want = tilewise.map_tiles(func, image, backend="serial", **kwargs)
        got = tilewise.map_tiles(func, image, workers=2, **kwargs)  # the default backend
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    pids = tilewise.map_tiles(where, image, tile=(32, 48), workers=2)
    workers = sorted(w.process.pid for w in _pool._idle[method].workers)
    assert os.getpid() not in pids and set(np.unique(pids)) <= set(workers), (pids, workers)
    print(json.dumps({"workers": workers, "pid": os.getpid()}))
'''


def run_script(
    tmp_path: Path, source: str, *args: str, wrapper: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [*wrapper, sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


@pytest.mark.linux
@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_every_kind_of_function_under_every_start_method(tmp_path: Path, method: str) -> None:
    (tmp_path / "tiles_funcs.py").write_text(FUNCS_MODULE)
    done = run_script(tmp_path, START_METHOD_SCRIPT, method)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no resource_tracker warning, no BufferError at exit
    report = json.loads(done.stdout)
    assert len(report["workers"]) == 2
    assert not any(psutil.pid_exists(pid) for pid in report["workers"])  # stopped at exit
    assert not [n for n in os.listdir(SHM) if n.startswith(f"{PREFIX}{report['pid']}_")]


# --- results: the same as serial, whatever the input --------------------------------------


def local_slope(block: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(block)
    return np.arctan(np.hypot(gx, gy))


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_any_memory_layout_and_channels(make_image: object, layout: str) -> None:
    base = make_image((70, 90, 3), np.float32)  # type: ignore[operator]
    image = {"C": base, "F": np.asfortranarray(base), "strided": base[::2, ::3]}[layout]
    want = ndi.uniform_filter(image, (5, 5, 1), mode="mirror")
    got = tilewise.map_tiles(
        lambda b: ndi.uniform_filter(b, (5, 5, 1), mode="mirror"),
        image,
        tile=(16, 24),
        halo=2,
        boundary="mirror",
        backend="processes",
    )
    np.testing.assert_array_equal(got, want)


def wait_for_the_others(
    block: np.ndarray, tile: tilewise.Tile, *, fifo: str, others: int
) -> np.ndarray:
    """Tile (0, 2) blocks until ``others`` other tiles are done; the others report on ``fifo``."""
    if tile.index != (0, 2):
        with open(fifo, "w") as pipe:
            pipe.write(f"{tile.index}\n")
        return block
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        seen, deadline = b"", time.monotonic() + 30
        while (done := seen.count(b"\n")) < others:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"only {done} other tiles ran meanwhile")
            seen += os.read(fd, 4096)
    finally:
        os.close(fd)
    return block


@pytest.mark.posix
def test_a_slow_tile_does_not_hold_up_the_others(tmp_path: Path) -> None:
    # 16 tiles on 2 workers: after the first wave ((0, 0) and (0, 1), which
    # make the output), while (0, 2) blocks, the other worker must take every
    # tile but the one queued behind (0, 2), in whatever order they come.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    keep_open = os.open(fifo, os.O_RDWR)  # writers never wait for a reader
    try:
        image = np.arange(64 * 64.0).reshape(64, 64)
        func = partial(wait_for_the_others, fifo=str(fifo), others=16 - 2)
        got = tilewise.map_tiles(func, image, tile=16, workers=2, pass_tile=True,
                                 backend="processes")  # fmt: skip
        np.testing.assert_array_equal(got, image)
    finally:
        os.close(keep_open)


def test_result_is_an_ordinary_array_that_outlives_the_run() -> None:
    image = np.arange(60.0).reshape(6, 10)
    got = tilewise.map_tiles(np.sqrt, image, tile=4, backend="processes")
    assert isinstance(got, np.ndarray)
    assert got.flags.writeable
    assert got.flags.c_contiguous
    got += 1  # its memory stays mapped after the segment's name is gone
    np.testing.assert_array_equal(got, np.sqrt(image) + 1)


def test_out_is_filled_in_place() -> None:
    image = np.arange(60.0).reshape(6, 10)
    out = np.full((6, 10), -1.0)
    got = tilewise.map_tiles(np.square, image, tile=4, out=out, backend="processes")
    assert got is out
    np.testing.assert_array_equal(out, image**2)


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the segments created from now on (not those reused)."""
    sizes: list[int] = []
    original = Segment.new.__func__  # type: ignore[attr-defined]

    def counting(cls: type, nbytes: int, data: object = None) -> Segment:
        sizes.append(nbytes)
        return original(cls, nbytes, data)  # type: ignore[no-any-return]

    clear_cache()
    monkeypatch.setattr(Segment, "new", classmethod(counting))
    return sizes


@pytest.mark.usefixtures("memfd")
def test_an_input_in_shared_memory_is_not_copied(created: list[int]) -> None:
    with SharedArray.create((40, 30), np.float64) as shared:
        shared.array[:] = np.arange(1200.0).reshape(40, 30)
        view = shared.array[5:35, ::2]  # a view of it counts too
        created.clear()
        got = tilewise.map_tiles(lambda b: b * 2, view, tile=8, backend="processes")
        np.testing.assert_array_equal(got, view * 2)
        assert created == [30 * 15 * 8]  # the output only
        created.clear()
        again = tilewise.map_tiles(lambda b: b + 1, got, tile=8, backend="processes")
        np.testing.assert_array_equal(again, view * 2 + 1)
        assert created == [30 * 15 * 8]  # a result fed back in is not copied either


@pytest.mark.usefixtures("memfd")
def test_segments_are_reused_across_calls(created: list[int]) -> None:
    image = np.arange(3000.0).reshape(50, 60)
    for k in range(4):
        got = tilewise.map_tiles(lambda b, k=k: b * k, image, tile=16, backend="processes")
        np.testing.assert_array_equal(got, image * k)
        del got  # the output's segment is recycled once its array is gone
    assert created == [image.nbytes] * 2  # the input's copy and the output, once


@pytest.mark.usefixtures("memfd")
def test_a_segment_still_referenced_is_not_reused(created: list[int]) -> None:
    image = np.arange(3000.0).reshape(50, 60)
    got = tilewise.map_tiles(np.negative, image, tile=16, backend="processes")
    base = got.base  # the caller holds the memory without the array
    del got
    again = tilewise.map_tiles(np.square, image, tile=16, backend="processes")
    np.testing.assert_array_equal(np.ndarray(image.shape, image.dtype, buffer=base), -image)
    np.testing.assert_array_equal(again, image**2)
    assert created == [image.nbytes] * 3


def test_dropped_results_are_cached_within_bounds() -> None:
    from tilewise import sharedmem

    clear_cache()
    results = [
        tilewise.map_tiles(lambda b, k=k: b + k, np.zeros((30, 40)), tile=16, backend="processes")
        for k in range(sharedmem.CACHE_SEGMENTS + 3)
    ]
    del results
    assert len(sharedmem.owner._FREE) <= sharedmem.CACHE_SEGMENTS
    assert len(sharedmem.owner._RETURNED) <= 1


def worker_mappings(pid: int) -> set[str]:
    """The tilewise memfd segments a process maps."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return set(re.findall(rf"/memfd:({PREFIX}\d+_[0-9a-f]+)", maps))


def worker_descriptors(pid: int) -> set[str]:
    """The tilewise memfd segments a process holds a descriptor of."""
    names = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            names.update(re.findall(rf"/memfd:({PREFIX}\d+_[0-9a-f]+)", os.readlink(fd)))
    return names


@pytest.mark.linux
@pytest.mark.usefixtures("memfd")
def test_workers_drop_segments_the_caller_no_longer_holds() -> None:
    method = tilewise.executors.processes.default_start_method()
    image = np.ones((64, 64))
    got = tilewise.map_tiles(np.negative, image, tile=16, workers=2, backend="processes")
    name = SharedArray.find(got).name  # type: ignore[union-attr]
    pids = worker_pids(method)
    # Workers keep what the caller still holds: the result and the cached input.
    tilewise.map_tiles(np.negative, np.ones((8, 8)), tile=4, workers=2, backend="processes")
    assert any(name in worker_mappings(pid) for pid in pids)
    del got
    clear_cache()
    tilewise.map_tiles(np.negative, np.ones((8, 8)), tile=4, workers=2, backend="processes")
    # A worker handles its messages in order: the release sent at the end of
    # that call came before anything of the next.
    tilewise.map_tiles(np.negative, np.ones((8, 8)), tile=4, workers=2, backend="processes")
    assert worker_pids(method) == pids
    for pid in pids:
        assert name not in worker_mappings(pid)
        assert name not in worker_descriptors(pid)


def test_pickled_job_carries_names_not_pixels() -> None:
    from tilewise._stages import TileJob

    executor = ProcessExecutor(1)
    try:
        already = SharedSource(SharedArray.create((1, 1), np.uint8))
        assert executor._place_source(already) is already
        source = executor._place_source(tilewise.io.ArraySource(np.zeros((2000, 2000))))  # 32 MB
        assert isinstance(source, SharedSource)
        job = TileJob(func=np.negative, source=source, sink=None, boundary="reflect", cval=0.0,
                      pass_tile=False)  # fmt: skip
        assert len(pickle_job(job)) < 2000
    finally:
        executor.close()
        already.shared.unlink()
        already.shared.close()


def test_default_backend_for_plain_functions_is_processes() -> None:
    assert default_backend(np.square) == "processes"
    assert default_backend(lambda b: b) == "processes"
    image = np.zeros((40, 40))
    pids = tilewise.map_tiles(lambda b: np.full(b.shape, os.getpid()), image, tile=20, workers=2)
    assert os.getpid() not in set(np.unique(pids))


def test_threads_inside_workers_are_limited() -> None:
    from threadpoolctl import threadpool_info

    def threads(block: np.ndarray) -> np.ndarray:
        counts = [lib["num_threads"] for lib in threadpool_info()]
        return np.full(block.shape, max(counts, default=1))

    got = tilewise.map_tiles(threads, np.zeros((20, 20)), tile=10, workers=2, backend="processes")
    cpus = tilewise._cpus.available_cpus()
    assert set(np.unique(got)) == {max(1, cpus // 2)}


# --- worker reuse --------------------------------------------------------------------------


def worker_pids(method: str) -> list[int]:
    return sorted(w.process.pid for w in _pool._idle[method].workers)  # type: ignore[misc]


def test_workers_are_reused_across_calls_and_stopped_by_shutdown() -> None:
    method = tilewise.executors.processes.default_start_method()
    image = np.zeros((64, 64))
    tilewise.map_tiles(np.negative, image, tile=16, workers=2, backend="processes")
    first = worker_pids(method)
    for _ in range(3):
        tilewise.map_tiles(np.negative, image, tile=16, workers=2, backend="processes")
    assert worker_pids(method) == first
    tilewise.map_tiles(np.negative, image, tile=16, workers=1, backend="processes")
    assert len(worker_pids(method)) == 1
    shutdown()
    assert method not in _pool._idle
    assert not any(psutil.pid_exists(pid) for pid in first)  # stopped and reaped


def test_concurrent_calls_from_threads() -> None:
    image = np.arange(900.0).reshape(30, 30)
    results: dict[int, np.ndarray] = {}

    def call(k: int) -> None:
        results[k] = tilewise.map_tiles(lambda b: b * k, image, tile=7, backend="processes")

    threads = [threading.Thread(target=call, args=(k,)) for k in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in (2, 3):
        np.testing.assert_array_equal(results[k], image * k)


def test_sigterm_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    tilewise.map_tiles(lambda b: b, np.zeros((4, 4)), tile=2, backend="processes", workers=1)
    assert signal.getsignal(signal.SIGTERM) is before


# --- arguments and errors --------------------------------------------------------------------


def test_unpicklable_function_fails_before_any_worker_starts() -> None:
    lock = threading.Lock()

    def uses_a_lock(block: np.ndarray) -> np.ndarray:
        with lock:
            return block

    shutdown()
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(ArgumentError, match=r"func=.*cannot be sent to worker processes"):
        tilewise.map_tiles(uses_a_lock, np.zeros((8, 8)), tile=4, start_method="spawn")
    assert {p.pid for p in psutil.Process().children(recursive=True)} == children


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"start_method": "thread"}, ArgumentError, "start_method='thread': must be one of"),
        ({"retries": -1}, ArgumentError, "retries=-1: must be an integer >= 0"),
        ({"retries": 1.5}, ArgumentTypeError, "retries=1.5"),
        ({"timeout": 0}, ArgumentError, "timeout=0: must be a positive number"),
        ({"timeout": "1"}, ArgumentTypeError, "timeout='1'"),
        ({"timeout": 1, "backend": "threads"}, ArgumentError, "only backend='processes'"),
        # An option the backend would ignore is refused, never silently dropped.
        ({"retries": 0, "backend": "threads"}, ArgumentError, "retries=0: only backend='proc"),
        ({"retries": 3, "backend": "serial"}, ArgumentError, "retries=3: only backend='proc"),
        ({"retries": 1, "backend": "dask"}, ArgumentError, "allowed-failures"),
        (
            {"start_method": "spawn", "backend": "threads"},
            ArgumentError,
            "start_method='spawn': only backend='processes' starts worker processes",
        ),
    ],
)
def test_bad_process_arguments(kwargs: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        tilewise.map_tiles(np.negative, np.zeros((4, 4)), **kwargs)  # type: ignore[arg-type]


# --- shared memory: stale segments, a small /dev/shm -----------------------------------------


@pytest.mark.linux
def test_segments_of_dead_owners_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = SHM / f"{PREFIX}{int(dead.stdout)}_0123456789ab"
    alive = SHM / f"{PREFIX}1_0123456789ab"  # pid 1 never dies
    stale.write_bytes(b"x")
    alive.write_bytes(b"x")
    try:
        tilewise.map_tiles(np.negative, np.zeros((4, 4)), tile=2, backend="processes")
        assert not stale.exists()
        assert alive.exists()
    finally:
        alive.unlink()
        stale.unlink(missing_ok=True)


@pytest.fixture
def named_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Named segments, as on systems without memfd."""
    from tilewise.sharedmem import segments as _segments

    clear_cache()
    monkeypatch.setattr(_segments, "USE_MEMFD", False)


@pytest.mark.usefixtures("named_segments")
def test_named_segments_give_the_same_results(make_image: object) -> None:
    image = make_image((70, 90), np.float32)  # type: ignore[operator]
    got = tilewise.map_tiles(lambda b: ndi.uniform_filter(b, 5), image, tile=16, halo=2,
                             backend="processes")  # fmt: skip
    np.testing.assert_array_equal(got, ndi.uniform_filter(image, 5))
    again = tilewise.map_tiles(np.negative, got, tile=16, backend="processes")
    np.testing.assert_array_equal(again, -got)


@pytest.mark.linux
@pytest.mark.usefixtures("named_segments")
def test_small_dev_shm_falls_back_to_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from tilewise.sharedmem import segments as _segments

    monkeypatch.setattr(_segments, "free_bytes", lambda d: 0 if d == "/dev/shm" else 2**40)
    tmp = Path(_segments.tempfile.gettempdir())
    before = {p.name for p in tmp.glob(f"{PREFIX}{os.getpid()}_*")}
    image = np.arange(2000.0).reshape(40, 50)
    with pytest.warns(RuntimeWarning, match="using a memory-mapped file"):
        got = tilewise.map_tiles(lambda b: b + 1, image, tile=16, backend="processes")
    np.testing.assert_array_equal(got, image + 1)
    assert {p.name for p in tmp.glob(f"{PREFIX}{os.getpid()}_*")} == before


SMALL_SHM_SCRIPT = """
import sys, warnings
import numpy as np
import tilewise
from tilewise.sharedmem import segments as _segments

if __name__ == "__main__":
    _segments.USE_MEMFD = sys.argv[1] == "memfd"
    image = np.ones((2000, 2000))  # 32 MB in, 32 MB out, in an 8 MB /dev/shm
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = tilewise.map_tiles(lambda b: b * 2, image, tile=500, workers=2)
    assert float(got.sum()) == 2 * image.size
    print(sum("memory-mapped file" in str(w.message) for w in caught))
"""


@pytest.mark.linux
@pytest.mark.slow
@pytest.mark.parametrize(("kind", "warnings_seen"), [("memfd", "0"), ("named", "2")])
def test_a_real_small_dev_shm_never_sigbus(tmp_path: Path, kind: str, warnings_seen: str) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to mount a small /dev/shm")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("mount namespaces are not permitted here")
    mount = 'mount -t tmpfs -o size=8m tmpfs /dev/shm && exec "$@"'
    done = run_script(
        tmp_path, SMALL_SHM_SCRIPT, kind, wrapper=("unshare", "-m", "sh", "-c", mount, "sh")
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == warnings_seen  # memfd needs no /dev/shm at all


@pytest.mark.linux
def test_remove_stale_segments_ignores_foreign_names() -> None:
    foreign = SHM / "tilewise-not-ours"
    foreign.write_bytes(b"x")
    try:
        remove_stale_segments()
        assert foreign.exists()
    finally:
        foreign.unlink()


def test_reused_workers_follow_the_callers_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "image.npy", np.full((8, 8), value))
    results = []
    for name in ("a", "b"):  # the second call reuses the first call's workers
        monkeypatch.chdir(tmp_path / name)
        results.append(
            tilewise.map_tiles(np.negative, "image.npy", tile=4, backend="processes", workers=2)
        )
    np.testing.assert_array_equal(results[0], np.full((8, 8), -1.0))
    np.testing.assert_array_equal(results[1], np.full((8, 8), -2.0))
