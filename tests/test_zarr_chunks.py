"""Zarr chunks read and written as files: the bytes and values zarr's own are, or zarr's path."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

zarr = pytest.importorskip("zarr")
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec  # noqa: E402

from tilewise import map_tiles  # noqa: E402
from tilewise.io.zarr_chunks import ZarrChunks  # noqa: E402

CODECS: dict[str, Any] = {
    "zstd": [ZstdCodec(level=3)],
    "zstd-checksum": [ZstdCodec(level=0, checksum=True)],
    "gzip": [GzipCodec(level=5)],
    "none": [],
}
DTYPES = ("uint8", "int16", "float32", "float64", "bool", "complex64")


def create(path: Path, values: np.ndarray, chunks: tuple[int, ...], codec: str, endian: str) -> Any:
    return zarr.create_array(
        store=str(path),
        shape=values.shape,
        chunks=chunks,
        dtype=values.dtype,
        compressors=CODECS[codec],
        serializer=BytesCodec(endian=None if values.dtype.itemsize == 1 else endian),
        fill_value=7,
        config={"write_empty_chunks": True},
    )


def chunk_files(root: Path, codec: str) -> dict[str, bytes]:
    """The chunk files under ``root``; gzip's timestamp (bytes 4-7, RFC 1952) set to zero."""
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "zarr.json":
            data = p.read_bytes()
            files[str(p.relative_to(root))] = (
                data[:4] + bytes(4) + data[8:] if codec == "gzip" else data
            )
    return files


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.lists(st.integers(1, 13), min_size=1, max_size=3).map(tuple),
    data=st.data(),
    dtype=st.sampled_from(DTYPES),
    codec=st.sampled_from(sorted(CODECS)),
    endian=st.sampled_from(["little", "big"]),
)
def test_chunks_written_as_files_are_zarrs_bytes_and_read_back(
    tmp_path_factory: pytest.TempPathFactory,
    shape: tuple[int, ...],
    data: st.DataObject,
    dtype: str,
    codec: str,
    endian: str,
) -> None:
    chunks = tuple(data.draw(st.integers(1, n + 2), label="chunk") for n in shape)
    values = (np.random.default_rng(len(shape)).random(shape) * 100).astype(dtype)
    folder = tmp_path_factory.mktemp("chunks")
    by_zarr = create(folder / "zarr.zarr", values, chunks, codec, endian)
    by_zarr[...] = values
    ours = create(folder / "ours.zarr", values, chunks, codec, endian)
    direct = ZarrChunks.of(ours)
    assert direct is not None
    # Window by window of whole chunks (the last of each axis reaching the edge).
    ranges = [range(0, n, c) for n, c in zip(shape, chunks, strict=True)]
    for origin in itertools.product(*ranges):
        window = tuple(
            slice(o, min(o + c, n)) for o, c, n in zip(origin, chunks, shape, strict=True)
        )
        direct.write(window, values[window])
    assert chunk_files(folder / "ours.zarr", codec) == chunk_files(folder / "zarr.zarr", codec)
    assert np.array_equal(zarr.open_array(str(folder / "ours.zarr"))[...], values)
    reader = ZarrChunks.of(zarr.open_array(str(folder / "zarr.zarr"), mode="r"))
    assert reader is not None
    for origin in itertools.product(*ranges):
        window = tuple(slice(o, o + c) for o, c in zip(origin, chunks, strict=True))
        got = reader[window]
        assert got.dtype == values.dtype
        assert np.array_equal(got, values[window])
    # A window that is not one chunk is zarr's to read.
    middle = tuple(slice(n // 3, n) for n in shape)
    assert np.array_equal(reader[middle], values[middle])


def test_a_chunk_never_written_reads_as_the_fill_value(tmp_path: Path) -> None:
    array = create(tmp_path / "a.zarr", np.zeros((6, 4), "int16"), (3, 4), "zstd", "little")
    direct = ZarrChunks.of(array)
    assert direct is not None
    direct.write((slice(0, 3), slice(0, 4)), np.ones((3, 4), "int16"))
    assert np.array_equal(direct[slice(3, 6), slice(0, 4)], np.full((3, 4), 7, "int16"))
    assert np.array_equal(array[...], np.r_[np.ones((3, 4)), np.full((3, 4), 7)])


def test_a_window_across_chunks_is_written_by_zarr(tmp_path: Path) -> None:
    array = create(tmp_path / "a.zarr", np.zeros((6, 6), "float32"), (3, 3), "zstd", "little")
    direct = ZarrChunks.of(array)
    assert direct is not None
    direct.write((slice(1, 5), slice(2, 6)), np.full((4, 4), 2, "float32"))
    expected = np.full((6, 6), 7, "float32")
    expected[1:5, 2:6] = 2
    assert np.array_equal(array[...], expected)


@pytest.mark.parametrize(
    "layout",
    [
        {"shards": (4, 4), "chunks": (2, 2)},
        {"compressors": [BloscCodec(cname="zstd", clevel=3)]},
        {"zarr_format": 2},
        {"dtype": "<U4"},
    ],
    ids=["sharded", "blosc", "v2", "strings"],
)
def test_other_layouts_are_left_to_zarr(tmp_path: Path, layout: dict[str, Any]) -> None:
    settings = {"shape": (4, 4), "chunks": (2, 2), "dtype": "float32", **layout}
    array = zarr.create_array(store=str(tmp_path / "a.zarr"), **settings)
    assert ZarrChunks.of(array) is None


def test_a_store_in_memory_is_left_to_zarr() -> None:
    array = zarr.create_array(store=zarr.storage.MemoryStore(), shape=(4, 4), dtype="float32")
    assert ZarrChunks.of(array) is None


@pytest.mark.parametrize("backend", ["serial", "threads", "processes"])
def test_zarr_to_zarr_by_files_equals_the_whole_array_call(tmp_path: Path, backend: str) -> None:
    from scipy import ndimage as ndi

    values = np.random.default_rng(0).random((300, 260), dtype=np.float32)
    source = zarr.create_array(
        store=str(tmp_path / "in.zarr"), shape=values.shape, chunks=(64, 64), dtype="float32"
    )
    source[...] = values
    assert ZarrChunks.of(source) is not None
    out = tmp_path / "out.zarr"
    map_tiles(
        lambda b: ndi.uniform_filter(b, 3),
        tmp_path / "in.zarr",
        out=out,
        tile=64,
        halo=1,
        backend=backend,
    )
    written = zarr.open_array(str(out), mode="r")
    assert ZarrChunks.of(written) is not None  # the output was written as files too
    assert np.array_equal(written[...], ndi.uniform_filter(values, 3))
