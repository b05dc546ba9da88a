"""Whole chunks of a Zarr v3 array in a local folder, read and written as files, coded by numcodecs.

zarr-python takes each chunk's read, decode, encode and write through its
event loop and codec pipeline, and hands each codec call to a thread of its
own: on two threads a Zarr-to-Zarr run made 1.3x one thread's speed, though
the codecs release the GIL. For the layout of most stores, zarr's default
(the ``bytes`` codec, then zstd, gzip or nothing; no sharding),
:class:`ZarrChunks` reads a chunk's file and decodes it with numcodecs, as
zarr's own codec does, and writes an encoded chunk as zarr's local store
does: to a temporary file renamed over the chunk's. The files are the ones
zarr reads and writes, byte for byte (but for the time a gzip stream
records). Any other selection, layout or store goes through zarr.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tilewise.io.base import Window

#: The dtype kinds whose chunks are their values' bytes: bool, integers, floats, complex.
BYTE_KINDS = "biufc"


class _Codec(Protocol):
    def encode(self, buf: Any) -> Any: ...
    def decode(self, buf: Any) -> Any: ...


def _bytes_codec(codecs: tuple[Any, ...]) -> tuple[str | None, _Codec | None] | None:
    """The stored byte order (``<``, ``>``) and numcodecs codec of ``codecs``; None: another."""
    import numcodecs
    from zarr.codecs import BytesCodec, GzipCodec, ZstdCodec

    if not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
        return None
    endian = codecs[0].endian
    order = None if endian is None else {"little": "<", "big": ">"}[endian.value]
    if len(codecs) == 1:
        return (order, None)
    codec = codecs[1]
    if isinstance(codec, ZstdCodec):
        return (order, numcodecs.Zstd(level=codec.level, checksum=codec.checksum))
    if isinstance(codec, GzipCodec):
        return (order, numcodecs.GZip(level=codec.level))
    return None


class ZarrChunks:
    """The chunks of one zarr array in a local folder, as files; see the module docstring.

    Threads may share it: each chunk is one file read, or one file written
    and renamed, and the codecs hold no state between calls.
    """

    def __init__(self, array: Any, byteorder: str | None, codec: _Codec | None) -> None:
        self.array = array
        self.root = Path(array.store.root) / array.path
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.chunks: tuple[int, ...] = tuple(array.chunks)
        self._stored = self.dtype if byteorder is None else self.dtype.newbyteorder(byteorder)
        self._codec = codec
        self._fill = array.fill_value
        self._key = array.metadata.encode_chunk_key

    @classmethod
    def of(cls, array: Any) -> ZarrChunks | None:
        """The chunks of ``array``; None if zarr must read and write them."""
        metadata = array.metadata
        if metadata.zarr_format != 3 or array.shards is not None:
            return None
        if (
            np.dtype(array.dtype).kind not in BYTE_KINDS
            or type(array.store).__name__ != "LocalStore"
        ):
            return None
        coding = _bytes_codec(tuple(metadata.codecs))
        return None if coding is None else cls(array, *coding)

    def __getitem__(self, selection: tuple[slice, ...]) -> np.ndarray:
        """The array at ``selection``: one whole chunk's file directly, anything else by zarr."""
        coords = self._chunk_of(selection)
        if coords is None:
            return np.asarray(self.array[selection])
        return self.read_chunk(coords)

    def read_chunk(self, coords: tuple[int, ...]) -> np.ndarray:
        """Chunk ``coords``, cut to the array's extent: the fill value if it was never written."""
        shape = self.chunks
        try:
            data = (self.root / self._key(coords)).read_bytes()
        except FileNotFoundError:
            chunk = np.full(shape, self._fill, self.dtype)
        else:
            decoded = data if self._codec is None else self._codec.decode(data)
            chunk = np.frombuffer(decoded, self._stored).reshape(shape)
            if self._stored != self.dtype:
                chunk = chunk.astype(self.dtype)
        inside = tuple(
            slice(0, min(c, n - i * c))
            for i, c, n in zip(coords, self.chunks, self.shape, strict=True)
        )
        return chunk[inside]

    def write(self, window: Window, data: np.ndarray) -> None:
        """Write ``data`` at ``window``: its whole chunks directly, anything else by zarr."""
        if not self._covers_chunks(window):
            self.array[window] = data
            return
        for coords in self._chunks_in(window):
            origin = [i * c for i, c in zip(coords, self.chunks, strict=True)]
            part = tuple(
                slice(o - w.start, min(o + c, n) - w.start)
                for o, c, n, w in zip(
                    origin, self.chunks, self.shape, self._full(window), strict=True
                )
            )
            self.write_chunk(coords, data[part])

    def write_chunk(self, coords: tuple[int, ...], values: np.ndarray) -> None:
        """Chunk ``coords`` from ``values``, its part inside the array; padded as zarr pads it."""
        if values.shape != self.chunks:
            chunk = np.full(self.chunks, self._fill, self._stored)
            chunk[tuple(slice(0, n) for n in values.shape)] = values
        else:
            chunk = np.ascontiguousarray(values, self._stored)
        encoded: Any = chunk if self._codec is None else self._codec.encode(chunk)
        path = self.root / self._key(coords)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{uuid.uuid4().hex}.partial")  # as zarr's store names it
        try:
            with temporary.open("wb") as file:
                file.write(memoryview(encoded).cast("B"))
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def _full(self, window: Window) -> tuple[slice, ...]:
        """``window`` with the axes it leaves out taken whole."""
        return (*window, *(slice(0, n) for n in self.shape[len(window) :]))

    def _chunks_in(self, window: Window) -> Iterator[tuple[int, ...]]:
        spans = [
            range(w.start // c, -(-w.stop // c))
            for w, c in zip(self._full(window), self.chunks, strict=True)
        ]
        return itertools.product(*spans)

    def _covers_chunks(self, window: Window) -> bool:
        return all(
            w.start % c == 0 and (w.stop % c == 0 or w.stop == n)
            for w, c, n in zip(self._full(window), self.chunks, self.shape, strict=True)
        )

    def _chunk_of(self, selection: tuple[slice, ...]) -> tuple[int, ...] | None:
        """The chunk ``selection`` is exactly (clipped to the array's extent), if it is one."""
        coords = []
        for s, c, n in zip(self._full(selection), self.chunks, self.shape, strict=True):
            start, stop = s.start or 0, n if s.stop is None else min(s.stop, n)
            if start % c or stop != min(start + c, n):
                return None
            coords.append(start // c)
        return tuple(coords)
