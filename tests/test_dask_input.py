"""Dask arrays as the image: computed window by window where each tile runs, never whole.

The oracle is the same tiles over the computed numpy array (bit for bit),
and the whole-image scipy filter. Which chunks each tile computes is
recorded by the chunks themselves, as ``da.map_blocks`` calls them, in a
file every process appends to; dask runs on a real LocalCluster of two
worker processes on loopback.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from scipy import ndimage as ndi

import tilewise
from tilewise import ArgumentError, Tile
from tilewise.executors.dask import MALLOC_TRIM_SETTING
from tilewise.io import open_source
from tilewise.io.dask_array import DaskArraySource

pytestmark = pytest.mark.timeout(120)

BACKENDS = ["serial", "threads", "processes", "dask"]
SHAPE = (150, 170)
CHUNKS = (32, 40)


@pytest.fixture(scope="module")
def cluster_client() -> Iterator[Client]:
    """Two single-threaded worker processes behind a scheduler on 127.0.0.1."""
    with (
        dask.config.set({MALLOC_TRIM_SETTING: None}),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": ":0"},  # not 8787, another cluster's
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(params=BACKENDS)
def on(request: pytest.FixtureRequest, cluster_client: Client) -> dict[str, Any]:
    """The options that run map_tiles on each backend in turn."""
    if request.param == "dask":
        return {"client": cluster_client}
    return {"backend": request.param}


def smooth(block: np.ndarray) -> np.ndarray:
    """A 3x3 mean over rows and columns: needs halo 1."""
    return ndi.uniform_filter(block, (3, 3) + (1,) * (block.ndim - 2))


CASES = {
    "aligned": {"shape": SHAPE, "chunks": CHUNKS, "tile": CHUNKS},
    "unaligned": {"shape": SHAPE, "chunks": CHUNKS, "tile": (25, 60)},
    "channels": {"shape": (*SHAPE, 3), "chunks": (*CHUNKS, 3), "tile": 48},
    "chunked-channels": {"shape": (*SHAPE, 3), "chunks": (*CHUNKS, 2), "tile": 48},
    "irregular": {"shape": SHAPE, "chunks": ((50, 20, 80), (100, 70)), "tile": 40},
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_dask_array_gives_what_its_computed_array_gives(
    on: dict[str, Any], case: dict[str, Any]
) -> None:
    array = da.random.default_rng(3).standard_normal(case["shape"], chunks=case["chunks"])
    computed = array.compute()
    options = {"tile": case["tile"], "halo": 1, "boundary": "reflect"}
    got = tilewise.map_tiles(smooth, array, **on, **options)
    np.testing.assert_array_equal(got, tilewise.map_tiles(smooth, computed, **on, **options))
    # And the whole-image filter, to the last digits its running sums differ by along a row.
    np.testing.assert_allclose(got, smooth(computed), rtol=1e-12, atol=1e-12)


def test_a_dask_array_of_a_zarr_store_equals_the_store_read_as_a_path(
    on: dict[str, Any], tmp_path: Path
) -> None:
    store = tmp_path / "image.zarr"
    da.random.default_rng(5).random(SHAPE, chunks=CHUNKS).astype(np.float32).to_zarr(str(store))
    options = {"tile": CHUNKS, "halo": 1, "boundary": "nearest"}
    got = tilewise.map_tiles(smooth, da.from_zarr(str(store)), **on, **options)
    np.testing.assert_array_equal(got, tilewise.map_tiles(smooth, store, **on, **options))
    assert got.dtype == np.float32


class FailsWhileFlagged:
    """The 3x3 mean, but tile (3, 2) fails while ``flag`` exists: an interrupted run."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __call__(self, block: np.ndarray, tile: Tile) -> np.ndarray:
        if tile.index == (3, 2) and self.flag.exists():
            raise RuntimeError("interrupted")
        return smooth(block)


def test_a_dask_array_into_a_file_output_and_resumed(tmp_path: Path) -> None:
    array = da.random.default_rng(1).random(SHAPE, chunks=CHUNKS)
    out, flag = tmp_path / "out.npy", tmp_path / "flag"
    flag.touch()
    func = FailsWhileFlagged(flag)
    options: dict[str, Any] = {"tile": CHUNKS, "halo": 1, "out": out, "pass_tile": True}
    with pytest.raises(tilewise.TileError, match="interrupted"):
        tilewise.map_tiles(func, array, backend="threads", **options)
    flag.unlink()
    returned = tilewise.map_tiles(func, array, backend="threads", resume=True, **options)
    assert returned == out
    np.testing.assert_array_equal(np.load(out), smooth_tiled(array.compute()))


def smooth_tiled(image: np.ndarray) -> np.ndarray:
    result: np.ndarray = tilewise.map_tiles(smooth, image, tile=CHUNKS, halo=1, backend="serial")
    return result


# --- which chunks each tile computes ------------------------------------------------------------


def log_line(log: str, text: str) -> None:
    """One line appended by one write: lines of several processes never interleave."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{os.getpid()} {threading.get_ident()} {text}\n".encode())
    finally:
        os.close(fd)


def recorded(block: np.ndarray, block_info: Any = None, log: str = "") -> np.ndarray:
    """A chunk of the image, noting that it was computed: by which process and thread."""
    i, j = block_info[None]["chunk-location"]
    log_line(log, f"chunk {i} {j}")
    return block


class TileLog:
    """The tile function: notes each tile it is called on, after its block was read."""

    def __init__(self, log: Path) -> None:
        self.log = str(log)

    def __call__(self, block: np.ndarray, tile: Tile) -> np.ndarray:
        log_line(self.log, f"tile {tile.index[0]} {tile.index[1]}")
        return smooth(block)


def chunks_read_by_each_tile(log: Path) -> tuple[dict[tuple[int, int], list], list]:
    """From the log: the chunks computed before each tile's call, in the same process and
    thread (its block's read, which computes them there), and every chunk computed."""
    streams: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    by_tile: dict[tuple[int, int], list[tuple[int, int]]] = {}
    every = []
    for line in log.read_text().splitlines():
        pid, thread, kind, i, j = line.split()
        index = (int(i), int(j))
        if kind == "chunk":
            streams[pid, thread].append(index)
            every.append(index)
        else:
            by_tile[index] = streams.pop((pid, thread), [])
    assert not any(streams.values()), f"chunks computed for no tile: {dict(streams)}"
    return by_tile, every


def overlapped(tile: Tile, chunks: tuple[int, int], shape: tuple[int, int]) -> set:
    """The chunks under the tile's block (its halo clipped to the image: reflected pixels
    of a halo of 1 lie in the block's own rows and columns)."""
    h = tile.halo
    spans = [
        (max(tile.y.start - h.top, 0), min(tile.y.stop + h.bottom, shape[0])),
        (max(tile.x.start - h.left, 0), min(tile.x.stop + h.right, shape[1])),
    ]
    rows, cols = (range(a // c, -(-b // c)) for (a, b), c in zip(spans, chunks, strict=True))
    return {(i, j) for i in rows for j in cols}


@pytest.mark.parametrize("tile", [CHUNKS, (20, 24)], ids=["tiles-are-chunks", "smaller-tiles"])
def test_each_tile_computes_only_the_chunks_its_block_overlaps(
    on: dict[str, Any], tmp_path: Path, tile: tuple[int, int]
) -> None:
    log = tmp_path / "computed.log"
    base = da.random.default_rng(9).random(SHAPE, chunks=CHUNKS)
    array = base.map_blocks(recorded, log=str(log), dtype=base.dtype, meta=np.empty((0, 0)))
    got = tilewise.map_tiles(TileLog(log), array, tile=tile, halo=1, pass_tile=True, **on)
    np.testing.assert_array_equal(
        got, tilewise.map_tiles(smooth, base.compute(), tile=tile, halo=1, backend="serial")
    )
    grid = {t.index: t for t in tilewise.Grid(SHAPE, tile, halo=(1, 1))}
    by_tile, every = chunks_read_by_each_tile(log)
    assert by_tile.keys() == grid.keys()
    for index, chunks in by_tile.items():
        assert set(chunks) <= overlapped(grid[index], CHUNKS, SHAPE), index
        assert len(chunks) == len(set(chunks)), index  # each at most once per block
    n_chunks = base.npartitions
    assert len(set(every)) == n_chunks  # every chunk, by some tile
    if "client" in on:  # computed on the cluster's workers, never on the client
        computed_by = {line.split()[0] for line in log.read_text().splitlines()}
        assert str(os.getpid()) not in computed_by
    if on.get("backend") == "serial":
        # One reader, and its cache holds the whole small image: each chunk once in all.
        assert sorted(every) == sorted(set(every))


# --- what is refused, and how it travels ------------------------------------------------------


def test_a_dask_source_pickles_as_its_graph_without_its_cache() -> None:
    array = da.random.default_rng(2).random(SHAPE, chunks=CHUNKS)
    source = open_source(array)
    assert isinstance(source, DaskArraySource)
    assert source.chunks == CHUNKS
    assert not source.process_local
    np.testing.assert_array_equal(source.read(slice(0, 40), slice(30, 90)), array[:40, 30:90])
    assert source._cache is not None
    copy = pickle.loads(pickle.dumps(source))
    assert copy._cache is None
    assert len(pickle.dumps(source)) < 20_000  # the graph, not the pixels (170 kB)
    np.testing.assert_array_equal(copy.read(slice(140, 150), slice(0, 170)), array[140:, :])
    assert "dask array, chunks (32, 40)" in source.layout


def test_irregular_chunks_are_read_window_by_window() -> None:
    source = open_source(da.ones(SHAPE, chunks=((50, 20, 80), (100, 70))))
    assert source.chunks is None
    assert "irregular" in source.layout
    np.testing.assert_array_equal(source.read(slice(45, 75), slice(90, 110)), np.ones((30, 20)))


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: da.ma.masked_less(da.ones(SHAPE, chunks=CHUNKS), 0), "ma.filled"),
        (lambda: da.ones(SHAPE, chunks=CHUNKS)[da.ones(SHAPE[0], chunks=32) > 0], "compute_chunk"),
    ],
    ids=["masked", "unknown-shape"],
)
def test_dask_arrays_that_cannot_be_read_by_window_are_refused(make: Any, fragment: str) -> None:
    calls: list[Tile] = []
    with pytest.raises(ArgumentError, match=fragment):
        tilewise.map_tiles(lambda b: calls.append(b) or b, make(), backend="serial")
    assert calls == []


def test_a_persisted_dask_array_is_refused_saying_what_to_pass(cluster_client: Client) -> None:
    persisted = cluster_client.persist(da.ones(SHAPE, chunks=CHUNKS))
    with pytest.raises(ArgumentError, match=r"persisted on a cluster.*before \.persist\(\)"):
        tilewise.map_tiles(np.copy, persisted, client=cluster_client)
