"""The strips or tiles of a TIFF image, each read and decoded by tifffile alone.

A window of a compressed TIFF is assembled from whole strips or tiles
(:class:`~tilewise.io._chunks.ChunkCache`). tifffile's Zarr interface can
give them, but through zarr's machinery: an event loop, a codec pipeline,
a chunk key per read, about a fifth of a serial run's time on a GeoTIFF
slope. :class:`TiffChunks` reads a chunk's bytes at its offset, under the
file's lock (threads share the file, and so does tifffile's Zarr
interface), and decodes them with the page's own decoder outside it (the
codecs release the GIL). What it cannot read directly (a window that is
not one chunk, a chunk absent from a sparse file) it asks of the Zarr
interface of the same file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tilewise._optional import import_optional

#: TIFF's PlanarConfiguration of samples stored pixel by pixel.
CONTIGUOUS = 1


def decodes_directly(page: Any) -> bool:
    """Whether :class:`TiffChunks` can read ``page``: 2-D chunks, samples pixel by pixel."""
    contiguous = page.samplesperpixel == 1 or page.planarconfig == CONTIGUOUS
    return contiguous and page.imagedepth == 1 and all(n == 1 for n in page.chunked[2:])


class TiffChunks:
    """The image of ``tif``'s first series, as an array that reads one chunk at a time.

    Any other selection is read through tifffile's Zarr interface of the same
    file. Threads may share it if ``tif``'s file handle has a lock
    (``tif.filehandle.set_lock(True)``): every seek and read, tifffile's
    Zarr interface's included, takes it.
    """

    def __init__(self, tif: Any, dtype: np.dtype) -> None:
        page = tif.series[0].keyframe
        self._tif = tif
        self._page = page
        self._file = tif.filehandle
        self._zarr: Any = None
        self.shape: tuple[int, ...] = tuple(page.shape)
        self.dtype = dtype
        self.chunks: tuple[int, int] = (int(page.chunks[0]), int(page.chunks[1]))
        self._across = int(page.chunked[1])

    def __getitem__(self, selection: tuple[slice, slice]) -> np.ndarray:
        rows, cols = selection
        height, width = self.chunks
        top, left = rows.start, cols.start
        if top % height or left % width or rows.stop - top != height or cols.stop - left != width:
            return np.asarray(self._fallback()[selection])
        index = (top // height) * self._across + left // width
        offset, count = self._page.dataoffsets[index], self._page.databytecounts[index]
        if not count:  # a sparse file's missing chunk: tifffile knows what fills it
            return np.asarray(self._fallback()[selection])
        with self._file.lock:
            self._file.seek(offset)
            data = self._file.read(count)
        segment, _, _ = self._page.decode(data, index)  # (1, rows, cols, samples)
        chunk = segment[0] if len(self.shape) == 3 else segment[0, ..., 0]
        return chunk[: self.shape[0] - top, : self.shape[1] - left]

    def _fallback(self) -> Any:
        if self._zarr is None:
            zarr = import_optional("zarr", "reading compressed or tiled .tif files by window")
            self._zarr = zarr.open_array(store=self._tif.aszarr(series=0, level=0), mode="r")
        return self._zarr
