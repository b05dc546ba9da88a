"""PNG and JPEG files (Pillow): for images small enough to hold in memory.

These formats compress the image as one stream, so no window can be read
or written on its own. An input is decoded whole, once in each process that
reads it (a worker process decodes its own copy). An output is computed
tile by tile into a memory-mapped ``.npy`` beside it, like any file output,
and encoded in one go when every tile is done. Use ``.tif``, ``.npy`` or
``.zarr`` for images larger than memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tilewise._optional import import_optional
from tilewise.errors import ArgumentError
from tilewise.io._files import OutputFile, Reopening, fsync_dir, fsync_file, temporary_path
from tilewise.io.npy import NpySink

#: Pillow image mode -> (dtype, trailing dimensions) of ``numpy.asarray(image)``,
#: so the shape is known without decoding the file.
MODES: dict[str, tuple[str, tuple[int, ...]]] = {
    "1": ("bool", ()),
    "L": ("uint8", ()),
    "P": ("uint8", ()),
    "LA": ("uint8", (2,)),
    "RGB": ("uint8", (3,)),
    "RGBA": ("uint8", (4,)),
    "CMYK": ("uint8", (4,)),
    "I;16": ("<u2", ()),
    "I": ("int32", ()),
    "F": ("float32", ()),
}

#: What each output format stores: dtype -> number of channels allowed (0: none).
STORABLE: dict[str, dict[str, tuple[int, ...]]] = {
    "PNG": {"uint8": (0, 1, 2, 3, 4), "uint16": (0, 1), "bool": (0, 1)},
    "JPEG": {"uint8": (0, 1, 3)},
}
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}

#: JPEG quality of outputs: high, since the result is data, not a thumbnail.
JPEG_QUALITY = 95


def _pillow(needed_for: str) -> Any:
    return import_optional("PIL.Image", needed_for)


class ImageSource(Reopening):
    """A PNG or JPEG file, decoded whole on the first read in each process."""

    _handles = ("_array",)

    def __init__(self, path: Path) -> None:
        self.path = path
        image_module = _pillow("reading .png and .jpg files")
        try:
            with image_module.open(path) as image:
                mode, (cols, rows) = image.mode, image.size
        except (OSError, image_module.UnidentifiedImageError) as exc:
            raise ArgumentError(f"image={str(path)!r}: not a readable image ({exc})") from exc
        self.layout = f"{path.suffix.lstrip('.').upper()} (mode {mode}), decoded whole"
        self._array: np.ndarray | None = None
        if mode in MODES:
            dtype, trailing = MODES[mode]
            self.shape: tuple[int, ...] = (rows, cols, *trailing)
            self.dtype: np.dtype = np.dtype(dtype).newbyteorder("=")
        else:
            self._array = self._decode()
            self.shape, self.dtype = self._array.shape, self._array.dtype

    def read(self, *window: slice) -> np.ndarray:
        array = self._array  # one read of the handle: another thread may close it
        if array is None:
            array = self._decode()
            if array.shape != self.shape or array.dtype != self.dtype:
                raise ArgumentError(
                    f"image={str(self.path)!r}: decoded to {array.dtype} {array.shape}, "
                    f"not the {self.dtype} {self.shape} its header announced"
                )
            self._array = array
        return array[window]

    def _decode(self) -> np.ndarray:
        with _pillow("reading .png and .jpg files").open(self.path) as image:
            array = np.asarray(image)
        return array.astype(array.dtype.newbyteorder("="), copy=False)


class ImageOutput(OutputFile):
    """An output ``.png`` or ``.jpg``: tiles go to a ``.npy``, encoded at the end."""

    def __init__(self, path: Path) -> None:
        _pillow("writing .png and .jpg files")
        super().__init__(path)
        self.format = FORMATS[path.suffix.lower()]

    def create(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> NpySink:
        self._check_storable(shape, dtype)
        return NpySink.create(self.partial, shape, dtype)

    def reopen(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> NpySink:
        return NpySink.reopen(self.partial, shape, dtype)

    def publish(self) -> None:
        """Encode the finished result to a temporary file, then rename it into place."""
        # Read, not mapped: Windows cannot delete a file this process still maps.
        pixels = np.load(self.partial)
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        image = _pillow("writing .png and .jpg files").fromarray(pixels)
        temporary = temporary_path(self.path)
        options = {"quality": JPEG_QUALITY} if self.format == "JPEG" else {}
        image.save(temporary, format=self.format, **options)
        fsync_file(temporary)
        os.replace(temporary, self.path)
        fsync_dir(self.path.parent)
        self.partial.unlink()

    def _check_storable(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        channels = shape[2] if len(shape) == 3 else 0
        allowed = STORABLE[self.format].get(dtype.name, ())
        if len(shape) > 3 or channels not in allowed:
            kinds = "; ".join(
                f"{name} with {', '.join(map(str, counts))} channels"
                for name, counts in STORABLE[self.format].items()
            )
            raise ArgumentError(
                f"out={str(self.path)!r}: {self.format} stores {kinds} (0: a 2-D image); "
                f"the result is {dtype} with shape {shape}; pass dtype='uint8' (values are "
                "cast, not scaled) or write to .tif, .npy or .zarr"
            )
