"""The per-tile pipeline and its one failure boundary, on every backend, Dask included.

Failures are real: a Zarr chunk file whose bytes are garbage (reading the
block fails) and a store where a chunk's folder is a file (writing the
result fails). Each backend must raise the same TileError, word for word.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster

import tilewise
from tilewise import TileError
from tilewise._stages import TileJob, run_tile
from tilewise.grid import Grid
from tilewise.io import ArraySink, ArraySource

BACKENDS = ["serial", "threads", "processes", "dask"]
#: Two tiles, one above the other: (0, 0) is sound, (1, 0) is made to fail.
IMAGE_SHAPE, TILE = (32, 16), 16
FAILING = "tile (1, 0) rows 16:32, cols 0:16"


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
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


def run_on(backend: str, client: Client, image: object, **options: object) -> object:
    extra = {"client": client} if backend == "dask" else {"workers": 2}
    return tilewise.map_tiles(np.negative, image, tile=TILE, backend=backend, **extra, **options)


def image() -> np.ndarray:
    # No zeros: zarr skips writing a chunk that holds only the fill value.
    return np.random.default_rng(5).random(IMAGE_SHAPE) + 1


@pytest.fixture
def unreadable_store(tmp_path: Path) -> Path:
    """A Zarr store whose chunk (1, 0) does not decode."""
    path = tmp_path / "in.zarr"
    array = zarr.create_array(store=str(path), shape=IMAGE_SHAPE, chunks=(TILE, TILE), dtype="f8")
    array[:] = image()
    (path / "c" / "1" / "0").write_bytes(b"these bytes are no zstd frame" * 4)
    return path


@pytest.fixture
def unwritable_out(tmp_path: Path) -> zarr.Array:
    """A Zarr array on disk where chunk (1, 0) cannot be stored: its folder is a file."""
    path = tmp_path / "out.zarr"
    out = zarr.create_array(store=str(path), shape=IMAGE_SHAPE, chunks=(TILE, TILE), dtype="f8")
    (path / "c").mkdir()
    (path / "c" / "1").write_text("in the way of chunk c/1/0")
    return out


def failures(run: object) -> list[TileError]:
    errors = []
    for backend in BACKENDS:
        with pytest.raises(TileError) as info:
            run(backend)  # type: ignore[operator]
        errors.append(info.value)
    return errors


def test_a_read_failing_in_a_tile_reads_the_same_on_every_backend(
    unreadable_store: Path, client: Client
) -> None:
    errors = failures(lambda backend: run_on(backend, client, str(unreadable_store)))
    texts = {str(error) for error in errors}
    assert len(texts) == 1, texts
    # The error names the store read, as every backend sees it: by its absolute path.
    assert texts.pop().startswith(
        f"{FAILING}: reading its block from {str(unreadable_store)!r} raised "
    )
    assert all(error.tile.index == (1, 0) for error in errors)
    for error in errors[:3]:  # in this process's own exception objects: the cause is chained
        assert error.__cause__ is not None
        assert str(error).endswith(f"{type(error.__cause__).__name__}: {error.__cause__}")


def test_a_write_failing_in_a_tile_reads_the_same_on_every_backend(
    unwritable_out: zarr.Array, client: Client
) -> None:
    errors = failures(lambda backend: run_on(backend, client, image(), out=unwritable_out))
    texts = {str(error) for error in errors}
    assert len(texts) == 1, texts
    text = texts.pop()
    assert text.startswith(f"{FAILING}: writing its result raised ")
    assert os.path.join("c", "1") in text  # the OS names what was in the way
    assert all(error.tile.index == (1, 0) for error in errors)


def test_func_failing_names_the_tile_and_chains_the_cause() -> None:
    def fails_on_the_second_row(block: np.ndarray, tile: tilewise.Tile) -> np.ndarray:
        if tile.index == (1, 0):
            raise KeyError("no luck")
        return block

    with pytest.raises(TileError) as info:
        tilewise.map_tiles(
            fails_on_the_second_row, image(), tile=TILE, pass_tile=True, backend="serial"
        )
    assert str(info.value) == f"{FAILING}: func raised KeyError: 'no luck'"
    assert isinstance(info.value.__cause__, KeyError)


def test_a_result_of_the_wrong_shape_is_a_tile_error_without_a_cause() -> None:
    grid = Grid(shape=IMAGE_SHAPE, tile=(TILE, TILE), halo=(1, 1))
    source = ArraySource(image())
    job = TileJob(func=lambda b: b[:3], source=source, sink=None, boundary="reflect", cval=0.0,
                  pass_tile=False)  # fmt: skip
    with pytest.raises(TileError, match=r"func returned shape \(3, 18\), expected") as info:
        run_tile(job, grid.tile_at((1, 0)))
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_a_tile_writes_its_core_and_returns_nothing_with_a_sink() -> None:
    grid = Grid(shape=IMAGE_SHAPE, tile=(TILE, TILE), halo=(2, 2))
    data = image()
    out = np.zeros_like(data)
    job = TileJob(func=lambda b: b * 2, source=ArraySource(data), sink=ArraySink(out),
                  boundary="reflect", cval=0.0, pass_tile=False)  # fmt: skip
    assert run_tile(job, grid.tile_at((1, 0))) is None
    np.testing.assert_array_equal(out[16:], data[16:] * 2)
    assert not out[:16].any()
