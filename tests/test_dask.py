"""The dask backend on a real LocalCluster of two worker processes, on loopback.

The oracle is the serial backend. Faults are real: a worker process is
SIGKILLed while it holds a tile, synchronised through a FIFO the tile
function writes its pid to; the command line runs in a subprocess against
the cluster started here.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import dask
import distributed
import numpy as np
import pytest
import zarr
from distributed import Client, Event, LocalCluster, WorkerPlugin
from scipy import ndimage as ndi

import tilewise
from tilewise import ArgumentError, ArgumentTypeError, Tile, TileError, WorkerDiedError
from tilewise.executors import _dask_local, _dask_strips
from tilewise.executors import dask as dask_backend
from tilewise.executors.dask import MALLOC_TRIM_SETTING
from tilewise.io.npy import NpySource
from tilewise.journal import read_journal
from tilewise.sharedmem import PREFIX, SharedArray, attached, clear_cache
from tilewise.sharedmem.segments import Segment

pytestmark = pytest.mark.timeout(120)

SHAPE = (64, 80)
TILE = 16  # 4 x 5 = 20 tiles
TOTAL = 20
#: Kept low so the test of a tile that kills every worker it runs on is quick.
ALLOWED_FAILURES = 1


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """Two single-threaded worker processes behind a scheduler on 127.0.0.1."""
    config = {
        "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
        # Else the nanny writes it into this process's os.environ, for every
        # process started after (as the LocalCluster tilewise starts, not).
        MALLOC_TRIM_SETTING: None,
    }
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
        client.register_plugin(UnmapInTurn())  # on workers restarted later too
        yield client


class UnmapInTurn(WorkerPlugin):
    """On each worker, the watcher's unmapping and the tests' own (:func:`mapped_now`) take
    turns: once ``mapped_now`` has unmapped what owners let go of, no unmapping is half done
    (the watcher between taking a segment from the registry and closing it)."""

    name = "tilewise-tests-unmap-in-turn"

    def setup(self, worker: Any) -> None:
        drop = attached.drop_released
        if getattr(drop, "in_turn", False):
            return
        turns = threading.Lock()

        def drop_in_turn() -> list[str]:
            with turns:
                return drop()

        drop_in_turn.in_turn = True  # type: ignore[attr-defined]
        attached.drop_released = drop_in_turn  # what the watcher calls, every time


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(7).standard_normal(SHAPE)


@pytest.fixture(params=["shared-memory", "strips"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How in-memory images reach the workers: shared memory, as this cluster's workers
    share the test's machine, or in strips, as for workers on other machines."""
    if request.param == "strips":
        monkeypatch.setattr(dask_backend, "workers_share_memory", lambda client: False)
    return str(request.param)


def segments_held() -> set[str]:
    """tilewise's shared-memory segments this process holds, by descriptor or by mapping."""
    if not os.path.isdir("/proc/self/fd"):
        return set()
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone
            held.add(os.readlink(f"/proc/self/fd/{fd}"))
    with open("/proc/self/maps") as maps:
        held.update(line.split(maxsplit=5)[-1].strip() for line in maps)
    memfd = f"/memfd:{PREFIX}"
    return {name.split()[0].removeprefix("/memfd:") for name in held if name.startswith(memfd)}


def mapped_now() -> set[str]:
    """On a worker: the segments it maps once it has unmapped those their owners let go of,
    as its watcher does every :data:`~tilewise.sharedmem.attached.UNMAP_INTERVAL` seconds,
    and garbage is collected: those live objects still map."""
    attached.drop_released()
    gc.collect()
    return segments_held()


async def _nothing() -> None:
    pass


def assert_released(client: Client, before: set[str]) -> None:
    """Once the run's arrays are gone, no segment made since ``before`` is held here (the reuse
    cache emptied) nor, once their tasks are over, by any worker.

    The run releases its Dask futures from the client's event loop (a failed task's
    state holds its exception, whose traceback holds the run's frames): a call on that
    loop returns once the releases queued before it are done.
    """
    gc.collect()  # futures collected queue their releases on the loop
    client.sync(_nothing)
    gc.collect()
    clear_cache()
    assert segments_held() - before == set()
    assert mapped_by_workers(client, after_tasks=True) == set()


def mapped_by_workers(client: Client, *, after_tasks: bool = False) -> set[str]:
    """The segments the workers map, once they have unmapped those owners let go of: now,
    or once the tasks they run are over."""
    held = after_their_tasks(client, mapped_now) if after_tasks else client.run(mapped_now)
    return {name for names in held.values() for name in names}


def after_their_tasks(
    client: Client, func: Callable[[], Any], timeout: float = 60
) -> dict[str, Any]:
    """``func()`` on each worker, by address, as a task of its own: on these workers of one
    thread, after the tasks there, a task still running once its run is over included.

    A worker gone meanwhile never runs it: TimeoutError.
    """
    workers = list(client.scheduler_info()["workers"])
    futures = [
        client.submit(func, workers=[worker], allow_other_workers=False, pure=False)
        for worker in workers
    ]
    distributed.wait(futures, timeout=timeout)
    return dict(zip(workers, client.gather(futures), strict=True))


def smooth(block: np.ndarray) -> np.ndarray:
    return ndi.uniform_filter(block, 3)


def serial(func: Callable[..., Any], image: Any, **options: Any) -> np.ndarray:
    result: np.ndarray = tilewise.map_tiles(func, image, backend="serial", **options)
    return result


def worker_pids(client: Client) -> set[int]:
    return set(client.run(os.getpid).values())


# --- results equal the serial backend's ------------------------------------------------------


def to_bands(block: np.ndarray) -> np.ndarray:
    return np.stack([block, -block], axis=-1)


def channel_sum(block: np.ndarray) -> np.ndarray:
    return block.sum(axis=-1, dtype=np.int64)


def where_am_i(block: np.ndarray, tile: Tile) -> np.ndarray:
    return block + tile.index[0] * 100 + tile.index[1]


CASES: list[tuple[str, Callable[..., Any], dict[str, Any]]] = [
    ("halo-reflect", smooth, {"tile": (16, 24), "halo": 1}),
    ("halo-none-pass-tile", where_am_i, {"tile": 16, "halo": 2, "boundary": "none",
                                         "pass_tile": True}),
    ("constant-dtype", smooth, {"tile": 20, "halo": 1, "boundary": "constant", "cval": 3.0,
                                "dtype": np.float32}),
    ("extra-dimension", to_bands, {"tile": 32}),
]  # fmt: skip


@pytest.mark.parametrize(("func", "options"), [pytest.param(f, o, id=name) for name, f, o in CASES])
def test_in_memory_result_equals_serial(
    client: Client,
    image: np.ndarray,
    transport: str,
    func: Callable[..., Any],
    options: dict[str, Any],
) -> None:
    before = segments_held()
    got = tilewise.map_tiles(func, image, backend="dask", client=client, **options)
    expected = serial(func, image, **options)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    del got
    assert_released(client, before)


def test_a_multichannel_image_into_a_given_array(
    client: Client, make_image: Any, transport: str
) -> None:
    image = make_image((40, 50, 3), np.uint8)
    out = np.full((40, 50), -1, np.int64)
    returned = tilewise.map_tiles(channel_sum, image, tile=16, out=out, client=client)
    assert returned is out
    np.testing.assert_array_equal(out, image.sum(axis=-1, dtype=np.int64))


def submissions(client: Client, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The (function, arguments...) of every task the client submits from now on."""
    submitted: list[tuple[Any, ...]] = []
    submit = client.submit

    def recording_submit(func: Any, *args: Any, **options: Any) -> Any:
        submitted.append((func, *args))
        return submit(func, *args, **options)

    monkeypatch.setattr(client, "submit", recording_submit)
    return submitted


@pytest.mark.linux
@pytest.mark.usefixtures("memfd")
def test_on_the_callers_machine_the_image_travels_through_shared_memory(
    client: Client, image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert dask_backend.workers_share_memory(client)
    submitted = submissions(client, monkeypatch)
    before = segments_held()
    got = tilewise.map_tiles(smooth, image, tile=TILE, halo=1, client=client)
    np.testing.assert_array_equal(got, serial(smooth, image, tile=TILE, halo=1))
    assert not [args for func, *args in submitted if func is _dask_strips._rows]
    tasks = [args for func, *args in submitted if func is dask_backend.compute_tiles]
    assert all(pieces is None for _, pieces, _ in tasks)
    assert all(len(job.payload) < 1000 for job, _, _ in tasks)  # segment names, not pixels
    assert got.flags.writeable
    got[:] = 0  # the caller's own memory, valid after the run
    del got
    assert_released(client, before)


@pytest.mark.linux
def test_a_result_given_to_the_next_run_is_not_copied(
    client: Client, image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tilewise.map_tiles(smooth, image, tile=TILE, halo=1, client=client)
    copies: list[tuple[int, ...]] = []
    copy_of = SharedArray.copy_of.__func__  # type: ignore[attr-defined]

    def counting(cls: type, array: np.ndarray) -> SharedArray:
        copies.append(array.shape)
        return copy_of(cls, array)  # type: ignore[no-any-return]

    monkeypatch.setattr(SharedArray, "copy_of", classmethod(counting))
    second = tilewise.map_tiles(smooth, first[8:, ::2], tile=TILE, halo=1, client=client)
    assert copies == []  # the workers read the first result where it is, a view of it
    np.testing.assert_array_equal(second, serial(smooth, first[8:, ::2], tile=TILE, halo=1))
    np.testing.assert_array_equal(first, serial(smooth, image, tile=TILE, halo=1))


@pytest.mark.linux
@pytest.mark.usefixtures("memfd")
def test_workers_keep_the_callers_segments_mapped_until_it_lets_go(
    client: Client, image: np.ndarray
) -> None:
    before = segments_held()
    got = tilewise.map_tiles(smooth, image, tile=TILE, halo=1, client=client)
    mapped = mapped_by_workers(client)
    assert mapped  # the image and the result
    assert mapped <= segments_held()  # the caller holds them: the result, and its cache
    del got  # its segment goes back to the cache, for the next run to take
    again = tilewise.map_tiles(smooth, image, tile=TILE, halo=1, client=client)
    assert mapped_by_workers(client) == mapped  # the same segments, mapped once
    np.testing.assert_array_equal(again, serial(smooth, image, tile=TILE, halo=1))
    del again
    assert_released(client, before)


def resident_segment_bytes() -> int:
    """The bytes of tilewise's segments this process has mapped and touched (from smaps)."""
    total, ours = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
                ours = f"/memfd:{PREFIX}" in line
            elif ours and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total


def set_mapped_share(share: float) -> None:
    _dask_local.MAPPED_SHARE = share


@pytest.mark.linux
@pytest.mark.usefixtures("memfd")
def test_workers_drop_the_callers_pages_dask_would_count_against_their_memory(
    client: Client,
) -> None:
    """Dask pauses, then kills, a worker whose RSS nears its limit: shared pages count."""
    image = np.random.default_rng(7).standard_normal((1024, 512))  # 4 MiB, 512 tiles of 32
    tilewise.map_tiles(np.negative, image, tile=32, client=client)
    kept = sum(client.run(resident_segment_bytes).values())
    client.run(set_mapped_share, 0.0)  # any page kept is too many
    try:
        got = tilewise.map_tiles(np.negative, image, tile=32, client=client)
        trimmed = sum(client.run(resident_segment_bytes).values())
    finally:
        client.run(set_mapped_share, _dask_local.MAPPED_SHARE)
    np.testing.assert_array_equal(got, -image)
    assert kept >= image.nbytes  # the image and the result: about half of each on each worker
    assert trimmed < kept / 4  # the last task's pages, at most


@pytest.mark.linux
def test_a_caller_gone_without_a_word_leaves_nothing_mapped(client: Client) -> None:
    address = client.scheduler.address
    script = textwrap.dedent(
        f"""
        import os
        import numpy as np, tilewise
        tilewise.map_tiles(np.negative, np.ones((64, 80)), tile=16, scheduler={address!r})
        print(os.getpid(), flush=True)
        os._exit(0)  # no clean-up of any kind
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=90, check=True
    )
    theirs = f"{PREFIX}{done.stdout.strip()}_"
    # Its descriptors closed with it: the workers' next look unmaps its segments.
    assert {name for name in mapped_by_workers(client) if name.startswith(theirs)} == set()


@pytest.mark.linux
@pytest.mark.usefixtures("memfd")
def test_still_held_tells_a_segment_its_owner_let_go_of() -> None:
    shared = SharedArray.create((4, 4), np.uint8)
    mapped = Segment.open(shared.segment.held_spec())
    assert mapped.still_held()
    shared.close()  # its descriptor's number is free: the next segment takes it
    other = SharedArray.create((4, 4), np.uint8)
    try:
        assert not mapped.still_held()
    finally:
        other.close()
        mapped.close()


def test_workers_that_cannot_reach_the_callers_memory_get_strips(
    client: Client, image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As workers in another container or of another user: the caller's descriptors are not
    theirs to open."""
    monkeypatch.setattr(_dask_local, "_SHARE_MEMORY", {})
    monkeypatch.setattr(Segment, "held_spec", lambda self: replace(self.spec, held=(1, 0, 0)))
    assert not dask_backend.workers_share_memory(client)
    submitted = submissions(client, monkeypatch)
    got = tilewise.map_tiles(smooth, image, tile=TILE, halo=1, client=client)
    np.testing.assert_array_equal(got, serial(smooth, image, tile=TILE, halo=1))
    assert [args for func, *args in submitted if func is _dask_strips._rows]


def test_the_image_travels_once_in_strips_and_jobs_stay_small(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = dask_backend
    monkeypatch.setattr(backend, "workers_share_memory", lambda client: False)
    image = np.random.default_rng(7).standard_normal((100, 80))  # rows of tiles: 7 of 16, one of 4
    submitted = submissions(client, monkeypatch)
    got = tilewise.map_tiles(smooth, image, tile=TILE, halo=1, client=client)
    np.testing.assert_array_equal(got, serial(smooth, image, tile=TILE, halo=1))
    strips = [args[0] for func, *args in submitted if func is _dask_strips._rows]
    # One strip per row of tiles, with one row of halo above and below (reflected at the
    # edges, so rows already there), and the first again for the rest of the run.
    expected = [(0, 17)] + [(max(0, 16 * r - 1), min(100, 16 * r + 17)) for r in range(7)]
    assert [len(s) for s in strips] == [b - a for a, b in expected]
    for strip, (a, b) in zip(strips, expected, strict=True):
        np.testing.assert_array_equal(strip, image[a:b])
    tasks = [args for func, *args in submitted if func is backend.compute_tiles]
    # The job goes with each task, small: the pixels go in the strips.
    jobs = {id(job): job for job, _, _ in tasks}.values()
    # One job for the first tile (whose result sets the output's dtype), one for the rest.
    assert len(jobs) == 2
    assert all(len(job.payload) < image.nbytes // 10 for job in jobs)
    assert sorted(t.index for _, _, group in tasks for t in group) == sorted(
        t.index for t in tilewise.Grid(image.shape, (TILE, TILE))
    )
    assert all(len({t.index[0] for t in group}) == 1 for _, _, group in tasks)


def test_a_large_job_is_a_task_of_its_own_and_tiles_still_spread(
    client: Client, image: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = np.arange(dask_backend.INLINE_JOB_BYTES, dtype=np.uint8)  # pickled with the function
    recorder = PidRecorder(tmp_path)

    def shift(block: np.ndarray) -> np.ndarray:
        # Stands for work: tiles long enough to be worth moving to the other worker, the
        # job with them (Dask rightly keeps instant tasks where their dependency is).
        time.sleep(0.02)
        return recorder(block) + table[7]

    submitted = submissions(client, monkeypatch)
    got = tilewise.map_tiles(shift, image, tile=TILE, client=client)
    np.testing.assert_array_equal(got, image * 2 + 7)
    jobs = [args[0] for func, *args in submitted if func is dask_backend._ShippedJob]
    assert len(jobs) == 2  # the first tile's run, and the rest's
    assert all(len(payload) > dask_backend.INLINE_JOB_BYTES for payload in jobs)
    assert len(recorder.pids()) == 2


def test_rows_read_follow_the_boundary() -> None:
    from tilewise.executors._dask_strips import rows_read

    grid = tilewise.Grid((100, 80), (TILE, TILE), halo=(3, 3))
    assert rows_read(grid.tile_at((0, 0)), 100, "reflect") == [(0, 19)]
    assert rows_read(grid.tile_at((3, 2)), 100, "reflect") == [(45, 67)]
    assert rows_read(grid.tile_at((0, 0)), 100, "wrap") == [(0, 19), (97, 100)]
    assert rows_read(grid.tile_at((6, 0)), 100, "constant") == [(93, 100)]


@pytest.mark.parametrize(
    ("source", "target"), [(".npy", ".npy"), (".zarr", ".zarr"), (".npy", ".zarr")]
)
def test_files_in_and_out_equal_serial(
    client: Client, image: np.ndarray, tmp_path: Path, source: str, target: str
) -> None:
    path = tmp_path / f"in{source}"
    if source == ".npy":
        np.save(path, image)
    else:
        zarr.create_array(str(path), data=image, chunks=(24, 24))
    out = tmp_path / f"out{target}"
    written = tilewise.map_tiles(smooth, path, tile=TILE, halo=1, out=out, client=client)
    assert written == out
    result = np.load(out) if target == ".npy" else zarr.open_array(str(out), mode="r")[:]
    np.testing.assert_array_equal(result, serial(smooth, image, tile=TILE, halo=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, out.name])


def test_a_file_source_travels_as_its_path(client: Client, tmp_path: Path) -> None:
    from tilewise.executors.dask import DaskExecutor

    path = tmp_path / "big.npy"
    np.save(path, np.zeros((1000, 1000)))
    source = NpySource(path)
    source.read(slice(0, 1), slice(0, 1))  # the caller's own memory map is now open
    executor = DaskExecutor(None, client=client)
    try:
        shared = executor._place_source(source)
    finally:
        executor.close()
    assert shared is source
    assert len(pickle.dumps(shared)) < 1000


def test_a_numpy_output_given_is_filled(client: Client, image: np.ndarray, transport: str) -> None:
    # Workers cannot write into the caller's array: the result comes back tile by
    # tile, or through shared memory.
    out = np.zeros(SHAPE)
    tilewise.map_tiles(smooth, image, tile=TILE, halo=1, out=out, client=client)
    np.testing.assert_array_equal(out, serial(smooth, image, tile=TILE, halo=1))


def test_a_pixelwise_kernel_runs_on_the_workers(client: Client, image: np.ndarray) -> None:
    @tilewise.pixelwise(radius=1)
    def laplace(z: np.ndarray, y: int, x: int) -> float:
        return z[y - 1, x] + z[y + 1, x] + z[y, x - 1] + z[y, x + 1] - 4 * z[y, x]

    got = tilewise.map_tiles(laplace, image, tile=32, backend="dask", client=client)
    np.testing.assert_allclose(got, ndi.laplace(image), rtol=1e-12, atol=1e-12)


def test_quick_tiles_travel_several_to_a_task(
    client: Client, image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tilewise.executors import dask as backend

    groups: list[int] = []
    submit = client.submit

    def recording_submit(func: Any, *args: Any, **options: Any) -> Any:
        if func is backend.compute_tiles:
            groups.append(len(args[2]))
        return submit(func, *args, **options)

    monkeypatch.setattr(client, "submit", recording_submit)
    got = tilewise.map_tiles(np.negative, image, tile=4, client=client)  # 320 tiles
    np.testing.assert_array_equal(got, -image)
    assert sum(groups) == 320
    assert max(groups) == backend.MAX_TILES_PER_TASK
    assert groups[-1] < groups[len(groups) // 2]  # the last tiles spread over the workers


class Exclusive:
    """Notes, in ``clashes``, every tile that started while another was running.

    ``until_a_clash``: a tile running waits for another to start (30 s at most, and
    none once one has); else it lasts 0.05 s, the work a tile allowed beside it would
    overlap.
    """

    def __init__(self, folder: Path, *, until_a_clash: bool) -> None:
        self.busy = folder / "busy"
        self.clashes = folder / "clashes"
        self.clashed = Event(f"clashed-{uuid.uuid4().hex}") if until_a_clash else None

    def __call__(self, block: np.ndarray) -> np.ndarray:
        try:
            os.close(os.open(self.busy, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            self.clashes.touch()
            if self.clashed is not None:
                self.clashed.set()
            return block
        try:
            if self.clashed is not None:
                self.clashed.wait(timeout=30)
            else:
                time.sleep(0.05)  # stands for work
            return ndi.uniform_filter(block, 9)
        finally:
            self.busy.unlink()


@pytest.mark.parametrize(("workers", "clash"), [(1, False), (None, True)])
def test_workers_limits_the_tiles_running_at_once(
    client: Client, image: np.ndarray, tmp_path: Path, workers: int | None, clash: bool
) -> None:
    func = Exclusive(tmp_path, until_a_clash=clash)
    got = tilewise.map_tiles(func, image, tile=32, halo=4, workers=workers, client=client)
    assert func.clashes.exists() == clash
    if not clash:
        np.testing.assert_array_equal(got, serial(func, image, tile=32, halo=4))


# --- which cluster ---------------------------------------------------------------------------


class PidRecorder:
    """Writes the pid of each process that runs a tile into ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, block: np.ndarray) -> np.ndarray:
        (self.folder / str(os.getpid())).touch()
        return block * 2

    def pids(self) -> set[int]:
        return {int(p.name) for p in self.folder.iterdir()}


def test_the_default_client_is_used(client: Client, image: np.ndarray, tmp_path: Path) -> None:
    func = PidRecorder(tmp_path)
    got = tilewise.map_tiles(func, image, tile=TILE, backend="dask")  # `client` is the default
    np.testing.assert_array_equal(got, image * 2)
    assert func.pids()
    assert func.pids() <= worker_pids(client)


def test_a_scheduler_address_is_connected_to(
    client: Client, image: np.ndarray, tmp_path: Path
) -> None:
    func = PidRecorder(tmp_path)
    address = client.scheduler.address
    got = tilewise.map_tiles(func, image, tile=TILE, scheduler=address)  # backend="dask" implied
    np.testing.assert_array_equal(got, image * 2)
    assert func.pids()
    assert func.pids() <= worker_pids(client)


@pytest.mark.slow
def test_without_a_cluster_a_local_one_is_started_and_closed(tmp_path: Path) -> None:
    """In a fresh interpreter, where no default client exists."""
    script = textwrap.dedent(
        """
        import os
        import numpy as np, psutil, tilewise, distributed

        def negative_untrimmed(block):
            # Dask's MALLOC_TRIM_THRESHOLD_ costs array work CPU; tilewise's cluster goes without.
            assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
            return -block

        image = np.arange(40 * 50.0).reshape(40, 50)
        got = tilewise.map_tiles(negative_untrimmed, image, tile=16, backend="dask", workers=2)
        assert np.array_equal(got, -image)
        left = [p.cmdline() for p in psutil.Process().children(recursive=True)]
        left = [c for c in left if not any("resource_tracker" in part for part in c)]
        assert not left, left
        try:
            distributed.default_client()
        except ValueError:
            print("closed")
        """
    )
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=90, cwd=tmp_path, env=environ,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "closed"


# --- the same behaviour as the local backends -------------------------------------------------


@pytest.mark.parametrize("failing", [(0, 0), (2, 3)], ids=["first-tile", "later-tile"])
def test_an_error_in_a_tile_is_a_tile_error_naming_it(
    client: Client, image: np.ndarray, failing: tuple[int, int]
) -> None:
    def func(block: np.ndarray, tile: Tile) -> np.ndarray:
        if tile.index == failing:
            raise ValueError("no good")
        return block

    before = segments_held()
    with pytest.raises(TileError) as caught:
        tilewise.map_tiles(func, image, tile=TILE, pass_tile=True, client=client)
    assert caught.value.tile.index == failing
    assert f"tile {failing}" in str(caught.value)
    assert "ValueError: no good" in str(caught.value)
    assert isinstance(caught.value.__cause__, ValueError)
    del caught  # its traceback's frames hold the run's arrays
    assert_released(client, before)


class FailWhileAnotherRuns:
    """Tile (0, 2) fails once tile (0, 3) has started, and (0, 3) ends only once the test
    opens the FIFO ``go``, adding 100: a task still running when its run has failed. Both
    come after the first wave, (0, 0) and (0, 1), which makes the output. FIFOs, not Dask
    events: Dask ends the wait of a task it cancels.
    """

    def __init__(self, folder: Path) -> None:
        self.started = folder / "started"
        self.go = folder / "go"
        os.mkfifo(self.started)
        os.mkfifo(self.go)

    def __call__(self, block: np.ndarray, tile: Tile) -> np.ndarray:
        if tile.index == (0, 2):
            with open(self.started) as fifo:  # opens once (0, 3) opens it to write
                fifo.read()
            raise ValueError("no good")
        if tile.index == (0, 3):
            with open(self.started, "w"):
                pass
            with open(self.go) as fifo:  # opens once the test opens it to write
                fifo.read()
        return block + 100


@pytest.mark.linux
@pytest.mark.usefixtures("memfd")
def test_memory_a_task_still_maps_after_a_failed_run_is_not_kept_for_reuse(
    client: Client, tmp_path: Path
) -> None:
    """Its late write must land in the failed run's output, never in a later run's, and
    its worker keeps that output mapped until the write is done, however often it looks."""
    func = FailWhileAnotherRuns(tmp_path)
    before, pids = segments_held(), worker_pids(client)
    with pytest.raises(TileError, match=r"tile \(0, 2\)"):
        tilewise.map_tiles(func, np.zeros((16, 64)), tile=16, pass_tile=True, client=client)
    try:
        late = mapped_by_workers(client)  # as the workers' watcher unmaps, now and then
        assert late  # (0, 3) is still running, the run's input and output mapped
        gc.collect()
        assert late.isdisjoint(segments_held())  # not in the reuse cache, not held at all
    finally:
        with open(func.go, "w"):  # (0, 3) goes on, and writes
            pass
        try:
            ended = set(after_their_tasks(client, os.getpid, timeout=20).values())
        except TimeoutError:
            ended = set()  # a worker died
        client.wait_for_workers(2, timeout=60)  # later tests need two
    assert ended == pids  # (0, 3) has ended, and its write did not kill its worker
    assert_released(client, before)


def test_a_wrong_shape_names_the_tile_and_the_shapes(client: Client, image: np.ndarray) -> None:
    def func(block: np.ndarray, tile: Tile) -> np.ndarray:
        return block[:3, :5] if tile.index == (3, 1) else block

    with pytest.raises(TileError, match=r"tile \(3, 1\) rows 48:64, cols 16:32: .*\(3, 5\)"):
        tilewise.map_tiles(func, image, tile=TILE, pass_tile=True, client=client)


def test_the_progress_bar_counts_every_tile(
    client: Client, image: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    tilewise.map_tiles(smooth, image, tile=TILE, halo=1, client=client, progress=True)
    assert f"{TOTAL}/{TOTAL}" in capsys.readouterr().err


class Interruptible:
    """A 3x3 mean that logs each tile it computes, and fails on one while ``stop`` exists."""

    def __init__(self, folder: Path, fail_at: tuple[int, int]) -> None:
        self.log = folder / "computed.log"
        self.stop = folder / "stop"
        self.fail_at = fail_at
        self.stop.touch()

    def __call__(self, block: np.ndarray, tile: Tile) -> np.ndarray:
        if tile.index == self.fail_at and self.stop.exists():
            raise RuntimeError("interrupted")
        with open(self.log, "a") as log:
            log.write(f"{tile.index[0]} {tile.index[1]}\n")
        return smooth(block)

    def computed(self) -> set[tuple[int, int]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        self.log.unlink(missing_ok=True)
        return {(int(r), int(c)) for r, c in (line.split() for line in lines)}


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_resume_computes_only_the_tiles_the_journal_lacks(
    client: Client, image: np.ndarray, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"out{suffix}"
    func = Interruptible(tmp_path, fail_at=(3, 4))  # the last tile
    options: dict[str, Any] = {"tile": TILE, "halo": 1, "out": out, "pass_tile": True}
    with pytest.raises(TileError, match="interrupted"):
        tilewise.map_tiles(func, image, client=client, **options)
    found = read_journal(out.with_name(out.name + ".tilewise-journal"))
    assert found is not None
    recorded = found[1]
    assert 0 < len(recorded) < TOTAL
    func.computed()
    func.stop.unlink()
    tilewise.map_tiles(func, image, client=client, resume=True, **options)
    # Tiles still running when the first run stopped may log late; none was recorded.
    assert not func.computed() & recorded
    result = np.load(out) if suffix == ".npy" else zarr.open_array(str(out), mode="r")[:]
    np.testing.assert_array_equal(result, serial(smooth, image, tile=TILE, halo=1))


class RecordingSink:
    """A file sink in memory that notes what it was asked to force to disk."""

    path = Path("recording")  # stands for the file every worker would open
    chunks = None
    process_local = False

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.array = np.zeros(shape)
        self.synced: list[tuple[slice, ...]] = []

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def write(self, window: tuple[slice, ...], data: np.ndarray) -> None:
        self.array[window] = data

    def sync(self, windows: Any) -> None:
        self.synced.extend(windows)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("elsewhere", [True, False], ids=["other-machine", "client-machine"])
def test_a_worker_on_another_machine_forces_its_tiles_to_disk(
    image: np.ndarray, elsewhere: bool
) -> None:
    from tilewise._stages import TileJob
    from tilewise.executors.dask import _ShippedJob, compute_tiles, machine_id
    from tilewise.io import ArraySource

    sink = RecordingSink(SHAPE)
    job = TileJob(np.negative, ArraySource(image), sink, "reflect", 0.0, pass_tile=False)
    machine = "another-boot-id" if elsewhere else machine_id()
    shipped = _ShippedJob(pickle.dumps(job), machine, keep=True)
    shipped._job = job  # as unpickled in the worker, but writing into `sink` here
    tiles = tuple(tilewise.Grid(SHAPE, (TILE, TILE)))[:3]
    cores, seconds = compute_tiles(shipped, None, tiles)
    assert cores == [None, None, None]
    assert seconds >= 0
    np.testing.assert_array_equal(sink.array[:TILE, : 3 * TILE], -image[:TILE, : 3 * TILE])
    # On the client's machine the journal's own fsync covers the shared page cache.
    assert sink.synced == ([(t.y, t.x) for t in tiles] if elsewhere else [])


# --- workers that die -------------------------------------------------------------------------


class DiesOnce:
    """Announces its pid through a FIFO on one tile, once, then waits to be killed."""

    def __init__(self, folder: Path, at: tuple[int, int]) -> None:
        self.started = folder / "started"
        self.claim = folder / "claimed"
        self.at = at
        os.mkfifo(self.started)

    def __call__(self, block: np.ndarray, tile: Tile) -> np.ndarray:
        if tile.index == self.at and self._first():
            with open(self.started, "w") as fifo:
                fifo.write(str(os.getpid()))
            threading.Event().wait()  # until SIGKILL
        return smooth(block)

    def _first(self) -> bool:
        try:
            os.close(os.open(self.claim, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False  # the rerun after the kill
        return True


@pytest.mark.posix
@pytest.mark.slow
def test_a_worker_killed_mid_run_has_its_tiles_rerun(
    client: Client, image: np.ndarray, tmp_path: Path
) -> None:
    func = DiesOnce(tmp_path, at=(1, 2))
    options: dict[str, Any] = {"tile": TILE, "halo": 1, "pass_tile": True}
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(tilewise.map_tiles, func, image, client=client, **options)
        with open(func.started) as fifo:  # returns once the tile has written its pid
            pid = int(fifo.read())
        assert pid in worker_pids(client)
        os.kill(pid, signal.SIGKILL)
        got = running.result(timeout=60)
    np.testing.assert_array_equal(got, serial(smooth, image, tile=TILE, halo=1))
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it; later tests need two
    assert pid not in worker_pids(client)


def exit_always(block: np.ndarray) -> np.ndarray:
    os._exit(3)


@pytest.mark.slow
def test_a_tile_that_kills_every_worker_is_a_worker_died_error(
    client: Client, image: np.ndarray
) -> None:
    # One tile: Dask counts a death against every task queued on the worker,
    # so with more tiles a bystander could run out of attempts first.
    with pytest.raises(WorkerDiedError) as caught:
        tilewise.map_tiles(exit_always, image, tile=SHAPE, client=client)
    assert caught.value.tile.index == (0, 0)
    assert f"all {ALLOWED_FAILURES + 1} attempts" in str(caught.value)
    client.wait_for_workers(2, timeout=60)


# --- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "fragment"),
    [
        ({"scheduler": "localhost:8786"}, ArgumentError, "scheduler='localhost:8786'"),
        ({"scheduler": "tcp://:8786"}, ArgumentError, "tcp://HOST:PORT"),
        ({"scheduler": "tcp://host:99999"}, ArgumentError, "scheduler='tcp://host:99999'"),
        ({"scheduler": "http://host:8786"}, ArgumentError, "'tls://HOST:PORT'"),
        ({"scheduler": 8786}, ArgumentTypeError, "scheduler=8786"),
        ({"scheduler": "tcp://h:1", "backend": "threads"}, ArgumentError, "backend='threads'"),
        ({"client": "tcp://h:1"}, ArgumentTypeError, "distributed.Client"),
        ({"client": True, "backend": "processes"}, ArgumentError, "only for backend='dask'"),
    ],
)
def test_bad_cluster_arguments_fail_before_any_work(
    image: np.ndarray, options: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error) as caught:
        tilewise.map_tiles(np.copy, image, **options)
    assert fragment in str(caught.value)


def test_a_client_and_a_scheduler_together_are_refused(client: Client, image: np.ndarray) -> None:
    with pytest.raises(ArgumentError, match="one or the other"):
        tilewise.map_tiles(np.copy, image, client=client, scheduler=client.scheduler.address)


def test_an_unreachable_scheduler_is_named(image: np.ndarray) -> None:
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}),
        pytest.raises(OSError, match=r"scheduler='tcp://127.0.0.1:1': no Dask scheduler"),
    ):
        tilewise.map_tiles(np.copy, image, scheduler="tcp://127.0.0.1:1")


# --- the command line --------------------------------------------------------------------------

FILTERS = """
from scipy import ndimage as ndi

def smooth(block):
    return ndi.uniform_filter(block, 3)
"""


def test_the_command_line_runs_on_the_scheduler_given(
    client: Client, image: np.ndarray, tmp_path: Path
) -> None:
    np.save(tmp_path / "in.npy", image)
    (tmp_path / "filters.py").write_text(FILTERS)
    address = client.scheduler.address
    done = subprocess.run(
        [sys.executable, "-m", "tilewise", "apply", "filters.py:smooth", "in.npy", "out.zarr",
         "--tile", str(TILE), "--halo", "1", "--scheduler", address],
        cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    result = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[:]
    np.testing.assert_array_equal(result, serial(smooth, image, tile=TILE, halo=1))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scheduler", "host:8786"], "argument --scheduler: expected an address like"),
        (["--scheduler", "tcp://h:1", "--backend", "threads"], "not with --backend threads"),
    ],
)
def test_the_command_line_refuses_a_bad_scheduler(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tilewise", "apply", "scipy.ndimage:median_filter", "in.npy",
         "out.npy", *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.splitlines()) == 1
