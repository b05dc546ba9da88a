"""File inputs and outputs: every format read by window and written by tile, against oracles.

The oracle is always the whole-image computation on the array the format's
own library reads (numpy, tifffile, zarr, Pillow), written back by that
library where the format is lossy.
"""

from __future__ import annotations

import collections
import importlib.abc
import io
import pickle
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage as ndi

import tilewise
from tilewise.io import open_source
from tilewise.io._chunks import ChunkCache, in_strips, strip_width
from tilewise.io.image import ImageSource
from tilewise.io.npy import NpySink, NpySource
from tilewise.io.tiff import TIFF_TILE, TiffSink, TiffSource
from tilewise.io.tiff_chunks import TiffChunks
from tilewise.io.zarr import ZarrSource

SHAPE = (203, 157)  # not a multiple of any tile or chunk used below


def smooth(block: np.ndarray) -> np.ndarray:
    """A 3x3 mean over rows and columns (not across channels): needs halo 1."""
    size = (3, 3) if block.ndim == 2 else (3, 3, 1)
    return ndi.uniform_filter(block, size)


def expected_smooth(image: np.ndarray) -> np.ndarray:
    return smooth(image)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(7).standard_normal(SHAPE).astype(np.float32)


def write_input(kind: str, image: np.ndarray, folder: Path) -> Path:
    """``image`` written in one of the input layouts under test."""
    writers: dict[str, Callable[[Path], None]] = {
        "npy": lambda p: np.save(p, image),
        "npy-fortran": lambda p: np.save(p, np.asfortranarray(image)),
        "tif-tiled": lambda p: tifffile.imwrite(p, image, tile=(32, 48), compression="zlib"),
        "tif-striped": lambda p: tifffile.imwrite(p, image, rowsperstrip=13, compression="zlib"),
        "tif-contiguous": lambda p: tifffile.imwrite(p, image),
        "tif-bigtiff": lambda p: tifffile.imwrite(p, image, bigtiff=True, tile=(64, 64)),
        "tif-bigendian": lambda p: tifffile.imwrite(p, image, byteorder=">"),
        "zarr": lambda p: zarr.create_array(
            store=str(p), shape=image.shape, chunks=(50, 40), dtype=image.dtype
        ).__setitem__(Ellipsis, image),
    }
    suffix = {"npy": ".npy", "tif": ".tif", "zarr": ".zarr"}[kind.split("-")[0]]
    path = folder / f"{kind}{suffix}"
    writers[kind](path)
    return path


INPUTS = [
    "npy",
    "npy-fortran",
    "tif-tiled",
    "tif-striped",
    "tif-contiguous",
    "tif-bigtiff",
    "tif-bigendian",
    "zarr",
]


@pytest.mark.parametrize("kind", INPUTS)
def test_every_input_layout_equals_the_whole_image_filter(
    kind: str, image: np.ndarray, tmp_path: Path
) -> None:
    path = write_input(kind, image, tmp_path)
    result = tilewise.map_tiles(smooth, path, tile=(40, 64), halo=1, backend="threads")
    np.testing.assert_array_equal(result, expected_smooth(image))


@pytest.mark.parametrize("kind", ["npy", "tif-tiled", "zarr"])
def test_file_inputs_and_outputs_on_worker_processes(
    kind: str, image: np.ndarray, tmp_path: Path
) -> None:
    """Workers open the files themselves: the source and sink travel as paths."""
    path = write_input(kind, image, tmp_path)
    out = tmp_path / f"out-{kind}.npy"
    written = tilewise.map_tiles(
        smooth, path, tile=48, halo=1, out=out, backend="processes", workers=2
    )
    assert written == out
    np.testing.assert_array_equal(np.load(out), expected_smooth(image))


def test_a_tiff_tile_source_reads_only_the_tiles_a_window_overlaps(
    image: np.ndarray, tmp_path: Path
) -> None:
    path = write_input("tif-tiled", image, tmp_path)
    source = TiffSource(path)
    assert source.chunks == (32, 48)
    assert "decoded per window" in source.layout
    np.testing.assert_array_equal(source.read(slice(31, 97), slice(5, 150)), image[31:97, 5:150])


def test_a_contiguous_tiff_is_memory_mapped(image: np.ndarray, tmp_path: Path) -> None:
    source = TiffSource(write_input("tif-contiguous", image, tmp_path))
    assert source.chunks is None
    assert "memory-mapped" in source.layout


def test_rgb_tiffs_contiguous_and_planar(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "contig.tif", rgb, photometric="rgb", tile=(32, 32))
    planes = np.moveaxis(rgb, -1, 0)  # (3, rows, cols), as a planar file stores them
    tifffile.imwrite(tmp_path / "planar.tif", planes, photometric="rgb", planarconfig="separate")
    for name in ("contig.tif", "planar.tif"):
        result = tilewise.map_tiles(smooth, tmp_path / name, tile=25, halo=1, backend="serial")
        np.testing.assert_array_equal(result, smooth(rgb))


def test_a_zarr_array_object_as_input_and_output(image: np.ndarray, tmp_path: Path) -> None:
    source = zarr.create_array(
        store=str(tmp_path / "in.zarr"), shape=SHAPE, chunks=(30, 70), dtype=image.dtype
    )
    source[:] = image
    out = zarr.create_array(
        store=str(tmp_path / "out.zarr"), shape=SHAPE, chunks=(20, 16), dtype=np.float64
    )
    returned = tilewise.map_tiles(smooth, source, tile=(40, 64), halo=1, out=out, backend="threads")
    assert returned is out
    np.testing.assert_allclose(out[:], expected_smooth(image))


def test_png_and_jpeg_inputs_are_decoded_whole(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    gray16 = np.random.default_rng(3).integers(0, 65535, (60, 80), dtype=np.uint16)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=90)
    decoded_jpeg = np.asarray(Image.open(tmp_path / "rgb.jpg"))
    for name, pixels in (("rgb.png", rgb), ("gray16.png", gray16), ("rgb.jpg", decoded_jpeg)):
        source = open_source(tmp_path / name)
        assert isinstance(source, ImageSource)
        assert (source.shape, source.dtype) == (pixels.shape, pixels.dtype)
        result = tilewise.map_tiles(smooth, tmp_path / name, tile=16, halo=1, backend="threads")
        np.testing.assert_array_equal(result, smooth(pixels))


# --- outputs ---------------------------------------------------------------------------


def read_output(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".tif":
        return tifffile.imread(path)
    if path.suffix == ".zarr":
        return zarr.open_array(str(path), mode="r")[:]
    return np.asarray(Image.open(path))


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".zarr"])
@pytest.mark.parametrize("channels", [None, 3])
def test_every_output_format_equals_the_in_memory_result(
    suffix: str, channels: int | None, tmp_path: Path, backend: str
) -> None:
    rng = np.random.default_rng(4)
    shape = SHAPE if channels is None else (*SHAPE, channels)
    image = rng.standard_normal(shape)
    expected = tilewise.map_tiles(smooth, image, tile=(50, 30), halo=1, backend="serial")
    out = tmp_path / f"result{suffix}"
    written = tilewise.map_tiles(
        smooth, image, tile=(50, 30), halo=1, out=out, backend=backend, workers=2
    )
    assert written == out
    np.testing.assert_array_equal(read_output(out), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # nothing left beside it


def test_the_tiff_output_is_a_tiled_uncompressed_bigtiff(tmp_path: Path) -> None:
    image = np.arange(300 * 500, dtype=np.uint16).reshape(300, 500)
    out = tilewise.map_tiles(np.negative, image, tile=128, out=tmp_path / "o.tif", backend="serial")
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff
        assert page.is_tiled
        assert (page.tilelength, page.tilewidth) == TIFF_TILE
        assert page.compression == 1
        np.testing.assert_array_equal(page.asarray(), np.negative(image))


def test_the_zarr_output_has_one_chunk_per_tile(tmp_path: Path) -> None:
    image = np.random.default_rng(5).random((100, 70, 2))
    out = tilewise.map_tiles(smooth, image, tile=(32, 24), halo=1, out=tmp_path / "o.zarr")
    stored = zarr.open_array(str(out), mode="r")
    assert stored.chunks == (32, 24, 2)
    np.testing.assert_allclose(stored[:], smooth(image), rtol=1e-12)


def test_png_outputs_in_every_storable_kind(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    for name, pixels in (
        ("gray.png", rng.integers(0, 255, (40, 50), dtype=np.uint8)),
        ("rgba.png", rng.integers(0, 255, (40, 50, 4), dtype=np.uint8)),
        ("gray16.png", rng.integers(0, 65535, (40, 50), dtype=np.uint16)),
        ("mask.png", rng.random((40, 50)) < 0.5),
    ):
        out = tilewise.map_tiles(np.copy, pixels, tile=16, out=tmp_path / name, backend="threads")
        np.testing.assert_array_equal(read_output(out), pixels)


def test_a_jpeg_output_is_the_in_memory_result_encoded_by_pillow(tmp_path: Path) -> None:
    image = np.random.default_rng(8).integers(0, 255, (64, 48, 3), dtype=np.uint8)
    out = tilewise.map_tiles(smooth, image, tile=20, halo=1, out=tmp_path / "o.jpg")
    encoded = io.BytesIO()
    Image.fromarray(smooth(image)).save(encoded, format="JPEG", quality=95)
    np.testing.assert_array_equal(read_output(out), np.asarray(Image.open(encoded)))


def test_dtype_converts_a_result_a_png_cannot_store(tmp_path: Path) -> None:
    image = np.random.default_rng(9).random((30, 30)) * 200
    with pytest.raises(tilewise.TileError, match=r"PNG stores uint8.*the result is float64"):
        tilewise.map_tiles(smooth, image, tile=10, halo=1, out=tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()
    out = tilewise.map_tiles(smooth, image, tile=10, halo=1, out=tmp_path / "o.png", dtype="uint8")
    np.testing.assert_array_equal(read_output(out), smooth(image).astype(np.uint8))


def test_a_finished_output_replaces_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "o.npy"
    np.save(out, np.zeros(3))
    tilewise.map_tiles(np.negative, np.ones((10, 10)), tile=4, out=out, backend="serial")
    np.testing.assert_array_equal(np.load(out), -np.ones((10, 10)))


def test_the_output_appears_only_once_complete(tmp_path: Path) -> None:
    def fail_late(block: np.ndarray, tile: tilewise.Tile) -> np.ndarray:
        if tile.index == (1, 1):
            raise RuntimeError("boom")
        return block

    out = tmp_path / "o.tif"
    with pytest.raises(tilewise.TileError, match="boom"):
        tilewise.map_tiles(
            fail_late, np.ones((20, 20)), tile=10, out=out, pass_tile=True, backend="serial"
        )
    assert not out.exists()
    assert {p.name for p in tmp_path.iterdir()} == {
        "o.tif.tilewise-partial",
        "o.tif.tilewise-journal",
    }


# --- sources and sinks travel small ------------------------------------------------------


def test_file_sources_and_sinks_pickle_as_a_path_and_reopen(
    image: np.ndarray, tmp_path: Path
) -> None:
    sources = [
        NpySource(write_input("npy", image, tmp_path)),
        TiffSource(write_input("tif-tiled", image, tmp_path)),
        TiffSource(write_input("tif-contiguous", image, tmp_path)),
        ZarrSource(path=write_input("zarr", image, tmp_path)),
    ]
    for source in sources:
        source.read(slice(0, 5), slice(0, 5))  # opens its handles in this process
        data = pickle.dumps(source)
        assert len(data) < 2000, type(source)
        window = pickle.loads(data).read(slice(10, 60), slice(20, 90))
        np.testing.assert_array_equal(window, image[10:60, 20:90])
    sinks = [
        NpySink.create(tmp_path / "s.npy", (50, 40), np.dtype(np.int16)),
        TiffSink.create(tmp_path / "s.tif", (50, 40), np.dtype(np.int16)),
    ]
    for sink in sinks:
        sink.write((slice(0, 10), slice(0, 10)), np.ones((10, 10)))
        data = pickle.dumps(sink)
        assert len(data) < 2000, type(sink)
        pickle.loads(data).write((slice(10, 50), slice(0, 40)), np.full((40, 40), 2))
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), tifffile.imread(tmp_path / "s.tif"))
    assert np.load(tmp_path / "s.npy")[45, 5] == 2


def test_a_big_tiff_output_is_created_without_writing_its_size(tmp_path: Path) -> None:
    """The empty tiles become holes; the blocks are then reserved, not written."""
    sink = TiffSink.create(tmp_path / "big.tif", (20_000, 20_000), np.dtype(np.float32))
    assert (tmp_path / "big.tif").stat().st_size >= 20_000 * 20_000 * 4
    sink.write((slice(19_990, 20_000), slice(0, 10)), np.full((10, 10), 3.0))
    corner = TiffSource(tmp_path / "big.tif").read(slice(19_980, 20_000), slice(0, 20))
    assert corner.sum() == 3.0 * 100


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: np.save(p / "x.npy", np.zeros(5)), r"shape \(5,\)"),
        (lambda p: np.save(p / "x.npy", np.zeros((0, 5))), r"non-empty"),
        (lambda p: np.save(p / "x.npy", np.array([[None]]), allow_pickle=True), "memory-mapped"),
        (lambda p: (p / "x.npy").write_text("not numpy"), r"x.npy': not a readable .npy file"),
        (lambda p: (p / "x.tif").write_text("not a tiff"), "not a readable TIFF"),
        (lambda p: (p / "x.png").write_text("not a png"), "not a readable image"),
        (lambda p: (p / "x.bmp").write_text(""), r"unknown image format '.bmp'"),
        (lambda p: (p / "x").mkdir(), "not a Zarr array store"),
        (lambda p: zarr.open_group(str(p / "x.zarr"), mode="w"), "not a Zarr array"),
    ],
)
def test_unreadable_inputs_are_refused_with_the_reason(
    make: Callable[[Path], object], message: str, tmp_path: Path
) -> None:
    make(tmp_path)
    path = next(tmp_path.iterdir())
    with pytest.raises(tilewise.ArgumentError, match=message):
        tilewise.map_tiles(np.copy, path)


def test_a_missing_input_is_a_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"image='.*nope.tif': no such file"):
        tilewise.map_tiles(np.copy, tmp_path / "nope.tif")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("o.h5", r"unknown output format '.h5'"),
        ("no-such-folder/o.npy", "does not exist"),
    ],
)
def test_unwritable_outputs_are_refused_before_any_tile(
    name: str, message: str, tmp_path: Path
) -> None:
    def never(block: np.ndarray) -> np.ndarray:
        raise AssertionError("no tile may run")

    with pytest.raises(tilewise.ArgumentError, match=message):
        tilewise.map_tiles(never, np.zeros((4, 4)), out=tmp_path / name)


def test_results_a_format_cannot_hold_are_refused(tmp_path: Path) -> None:
    image = np.zeros((8, 8))
    # Found once the first results are in: a TileError naming the tile, the cause chained.
    with pytest.raises(tilewise.TileError, match=r"storing its result raised ArgumentError: .*"
                       r"a TIFF cannot hold bool") as info:  # fmt: skip
        tilewise.map_tiles(lambda b: b > 0, image, tile=4, out=tmp_path / "o.tif")
    assert isinstance(info.value.__cause__, tilewise.ArgumentError)
    with pytest.raises(tilewise.TileError, match=r"the result has shape \(8, 8, 2, 2\)"):
        tilewise.map_tiles(
            lambda b: np.zeros((*b.shape, 2, 2)), image, tile=4, out=tmp_path / "o.tif"
        )
    with pytest.raises(tilewise.TileError, match="JPEG stores uint8"):
        tilewise.map_tiles(np.copy, image, tile=4, out=tmp_path / "o.jpg", dtype="uint16")


def test_a_folder_that_is_not_a_zarr_store_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "o.zarr").mkdir()
    (tmp_path / "o.zarr" / "precious.txt").write_text("keep me")
    with pytest.raises(tilewise.ArgumentError, match="not a Zarr v3 store; refusing"):
        tilewise.map_tiles(np.copy, np.zeros((4, 4)), out=tmp_path / "o.zarr")
    assert (tmp_path / "o.zarr" / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("chunks", "shards", "message"),
    [
        ((30, 32), None, r"zarr chunks \(30, 32\) do not align with tile \(64, 64\) \(rows\)"),
        ((32, 32), (32, 96), r"zarr shards \(32, 96\) do not align with tile \(64, 64\) \(cols\)"),
    ],
)
def test_a_zarr_out_whose_chunks_two_tiles_would_share_is_refused(
    chunks: tuple[int, int], shards: tuple[int, int] | None, message: str
) -> None:
    out = zarr.create_array(store={}, shape=(200, 200), chunks=chunks, shards=shards, dtype="f8")
    with pytest.raises(tilewise.ArgumentError, match=message):
        tilewise.map_tiles(np.copy, np.zeros((200, 200)), tile=64, out=out)


def test_a_zarr_out_with_smaller_aligned_chunks_is_written_concurrently() -> None:
    image = np.random.default_rng(10).random((200, 130))
    out = zarr.create_array(store={}, shape=image.shape, chunks=(16, 16), dtype="f8")
    tilewise.map_tiles(smooth, image, tile=64, halo=1, out=out, backend="threads", workers=4)
    np.testing.assert_allclose(out[:], smooth(image), rtol=1e-12)


@pytest.mark.parametrize("backend", ["processes", "dask"])
def test_a_zarr_out_in_memory_is_written_back_from_worker_processes(backend: str) -> None:
    """Workers cannot write a store of this process: they fill a copy, written back at the end."""
    image = np.random.default_rng(11).random((40, 24))
    out = zarr.create_array(store={}, shape=image.shape, chunks=(8, 8), dtype="f8")
    options = {"workers": 2} if backend == "processes" else {"workers": 1}
    got = tilewise.map_tiles(np.negative, image, tile=8, out=out, backend=backend, **options)
    assert got is out
    np.testing.assert_array_equal(out[:], -image)


def test_a_read_only_zarr_out_is_refused(tmp_path: Path) -> None:
    zarr.create_array(store=str(tmp_path / "o.zarr"), shape=(4, 4), chunks=(4, 4), dtype="f8")
    with pytest.raises(tilewise.ArgumentError, match="read-only"):
        tilewise.map_tiles(
            np.copy, np.zeros((4, 4)), out=zarr.open_array(str(tmp_path / "o.zarr"), mode="r")
        )


class NotInstalled(importlib.abc.MetaPathFinder):
    """Makes a package unimportable, as when it is not installed."""

    def __init__(self, package: str) -> None:
        self.package = package

    def find_spec(self, name: str, *args: object) -> None:
        if name.split(".")[0] == self.package:
            raise ModuleNotFoundError(f"No module named {self.package!r}", name=self.package)
        return


@pytest.mark.parametrize(
    ("module", "image", "out"),
    [
        ("tifffile", "x.tif", None),
        ("zarr", "x.npy", "o.zarr"),
        ("PIL", "x.npy", "o.png"),
    ],
)
def test_a_missing_format_library_names_the_extra_to_install(
    module: str, image: str, out: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    np.save(tmp_path / "x.npy", np.zeros((4, 4)))
    tifffile.imwrite(tmp_path / "x.tif", np.zeros((4, 4)))
    for name in list(sys.modules):
        if name == module or name.startswith(f"{module}."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [NotInstalled(module), *sys.meta_path])
    with pytest.raises(ModuleNotFoundError, match=r'pip install "tilewise\[io\]"'):
        tilewise.map_tiles(np.copy, tmp_path / image, out=None if out is None else tmp_path / out)


# --- windows assembled from cached chunks ------------------------------------------------


@settings(max_examples=60)
@given(
    chunks=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    start=st.tuples(st.integers(0, 59), st.integers(0, 44)),
    size=st.tuples(st.integers(1, 60), st.integers(1, 45)),
    channels=st.sampled_from([(), (2,)]),
    budget_chunks=st.integers(1, 12),
)
def test_a_chunk_cache_reads_what_zarr_reads(
    chunks: tuple[int, int],
    start: tuple[int, int],
    size: tuple[int, int],
    channels: tuple[int, ...],
    budget_chunks: int,
) -> None:
    shape = (60, 45)
    array = zarr.create_array(
        store={}, shape=(*shape, *channels), chunks=(*chunks, *channels), dtype="i4"
    )
    array[:] = np.arange(array.size).reshape(array.shape)
    cache = ChunkCache(array, chunks)
    budget = budget_chunks * cache.chunk_bytes
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tilewise.io._chunks.CACHE_BYTES", budget)
        for shift in (0, 0, 3):  # the same window from the cache, then a neighbouring one
            y, x = min(start[0] + shift, shape[0] - 1), min(start[1] + shift, shape[1] - 1)
            window = (slice(y, min(y + size[0], shape[0])), slice(x, min(x + size[1], shape[1])))
            np.testing.assert_array_equal(cache.read(*window), array[window])
            assert len(cache._decoded) * cache.chunk_bytes <= max(budget, cache.chunk_bytes)


def test_a_truncated_npy_names_the_file_and_what_is_missing(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((40, 30)))
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(tilewise.ArgumentError, match=r"x.npy': .*cut short"):
        tilewise.map_tiles(np.negative, tmp_path / "x.npy", backend="serial")
    (tmp_path / "x.npy").write_bytes(b"")
    with pytest.raises(tilewise.ArgumentError, match=r"x.npy': not a readable .npy file"):
        tilewise.map_tiles(np.negative, tmp_path / "x.npy", backend="serial")


class CountingStore(zarr.storage.WrapperStore):  # type: ignore[type-arg]
    """A store that counts the reads of each key: one per chunk decoded."""

    counts: collections.Counter[str]

    async def get(self, key: str, *args: Any, **kwargs: Any) -> Any:
        self.counts[key] += 1
        return await self._store.get(key, *args, **kwargs)


@pytest.mark.parametrize("backend", ["serial", "threads"])
def test_tiles_of_a_chunked_image_run_in_strips_that_decode_fewer_chunks(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk, side = 16, 8  # 8 x 8 chunks of 16 x 16: tiles are chunks, with a halo of 1
    image = np.random.default_rng(4).random((chunk * side, chunk * side)).astype(np.float32)
    store = CountingStore(zarr.storage.MemoryStore())
    store.counts = collections.Counter()
    array = zarr.create_array(store, shape=image.shape, chunks=(chunk, chunk), dtype=image.dtype)
    array[:] = image
    monkeypatch.setattr("tilewise.io._chunks.CACHE_BYTES", 20 * chunk * chunk * image.itemsize)

    def decodes() -> int:
        store.counts.clear()
        got = tilewise.map_tiles(smooth, array, tile=chunk, halo=1, backend=backend, workers=2)
        np.testing.assert_array_equal(got, ndi.uniform_filter(image, 3, mode="reflect"))
        assert len(store.counts) == side * side  # every chunk, and nothing else
        return sum(store.counts.values())

    strips = decodes()
    with monkeypatch.context() as rows:
        rows.setattr("tilewise.io._chunks.in_strips", lambda tiles, width: list(tiles))
        row_by_row = decodes()
    # Row by row, the chunks below each row of tiles are decoded again for the next: ~3x.
    assert strips < row_by_row
    if backend == "serial":
        assert strips <= 2 * side * side


@pytest.mark.parametrize("cached_chunks", [9, 12, 20, 40])
def test_strips_decode_fewer_chunks_than_rows_whatever_the_cache_holds(
    cached_chunks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CountingStore(zarr.storage.MemoryStore())
    store.counts = collections.Counter()
    array = zarr.create_array(store, shape=(160, 200), chunks=(10, 10), dtype="u1")
    array[:] = 1
    monkeypatch.setattr("tilewise.io._chunks.CACHE_BYTES", cached_chunks * 100)
    tiles = list(tilewise.Grid((160, 200), (10, 10), halo=(1, 1)))

    def decodes(order: list[tilewise.Tile]) -> int:
        store.counts.clear()
        cache = ChunkCache(array, (10, 10))
        for tile in order:
            rows = slice(max(tile.y.start - 1, 0), min(tile.y.stop + 1, 160))
            cols = slice(max(tile.x.start - 1, 0), min(tile.x.stop + 1, 200))
            cache.read(rows, cols)
        return sum(store.counts.values())

    width = strip_width((10, 10), (1, 1), (10, 10), 100)
    if width is None:  # too few chunks cached for strips: the order is kept
        assert in_strips(tiles, width) == tiles
    else:
        assert decodes(in_strips(tiles, width)) < decodes(tiles)


@settings(max_examples=40)
@given(
    shape=st.tuples(st.integers(1, 140), st.integers(1, 140)),
    samples=st.sampled_from([0, 3]),
    layout=st.sampled_from(["tiles", "strips"]),
    compression=st.sampled_from(["zstd", "deflate", "lzw", "packbits", None]),
    byteorder=st.sampled_from(["<", ">"]),
    window=st.tuples(st.integers(0, 139), st.integers(0, 139), st.integers(1, 90)),
)
def test_a_compressed_tiff_is_read_chunk_by_chunk_as_tifffile_reads_it(
    shape: tuple[int, int],
    samples: int,
    layout: str,
    compression: str | None,
    byteorder: str,
    window: tuple[int, int, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path = tmp_path_factory.mktemp("tiff") / "image.tif"
    full = (*shape, samples) if samples else shape
    data = np.random.default_rng(sum(shape)).integers(0, 60000, full).astype(np.uint16)
    chunking = {"tile": (32, 48)} if layout == "tiles" else {"rowsperstrip": 7}
    tifffile.imwrite(path, data, compression=compression, byteorder=byteorder, **chunking)
    source = TiffSource(path)
    if source.chunks is None:  # uncompressed strips: memory-mapped, not read by chunks
        return
    top, left, size = min(window[0], shape[0] - 1), min(window[1], shape[1] - 1), window[2]
    rows, cols = slice(top, min(top + size, shape[0])), slice(left, min(left + size, shape[1]))
    np.testing.assert_array_equal(source.read(rows, cols), data[rows, cols])
    np.testing.assert_array_equal(source.read(slice(0, shape[0]), slice(0, shape[1])), data)
    assert isinstance(source._cache.array, TiffChunks)  # decoded by tifffile alone


def test_a_window_over_many_tiff_tiles_is_read_through_tifffiles_zarr_interface(
    tmp_path: Path,
) -> None:
    data = np.random.default_rng(8).random((200, 230)).astype(np.float32)
    tifffile.imwrite(tmp_path / "many.tif", data, tile=(16, 16), compression="zstd")
    source = TiffSource(tmp_path / "many.tif")
    np.testing.assert_array_equal(source.read(slice(0, 200), slice(0, 230)), data)  # 195 tiles
    np.testing.assert_array_equal(source.read(slice(3, 40), slice(17, 50)), data[3:40, 17:50])
    assert isinstance(source._cache.array, TiffChunks)
    assert source._cache.array._zarr is not None  # the wide window went through zarr
    pickle.loads(pickle.dumps(source)).read(slice(0, 5), slice(0, 5))  # reopened elsewhere


def test_threads_read_chunks_and_wide_windows_of_one_tiff_at_once(tmp_path: Path) -> None:
    """Direct chunk reads and tifffile's Zarr interface share the file: one lock for both."""
    data = np.random.default_rng(12).random((300, 257)).astype(np.float32)
    tifffile.imwrite(tmp_path / "strips.tif", data, rowsperstrip=1, compression="deflate")
    source = TiffSource(tmp_path / "strips.tif")
    windows = [(slice(y, y + h), slice(0, 257)) for y in range(0, 300, 7) for h in (2, 90)]
    windows = [(rows, cols) for rows, cols in windows if rows.stop <= 300]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda w: source.read(*w), windows * 3))
    for (rows, cols), window in zip(windows * 3, got, strict=True):
        np.testing.assert_array_equal(window, data[rows, cols])
