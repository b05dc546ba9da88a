"""Turn what the user passed as ``image`` and ``out`` into a Source and a Sink, checked."""

from __future__ import annotations

from typing import Any

import numpy as np

from tilewise.errors import ArgumentError, ArgumentTypeError
from tilewise.io.array import ArraySink, ArraySource
from tilewise.io.base import Source


def open_source(image: Any) -> Source:
    if not isinstance(image, np.ndarray):
        raise ArgumentTypeError(
            f"image={short_repr(image)}: must be a numpy array of shape (H, W) or (H, W, C)"
        )
    if image.ndim not in (2, 3) or 0 in image.shape:
        raise ArgumentError(
            f"image with shape {image.shape}: must be a non-empty (H, W) or (H, W, C) array"
        )
    if image.dtype.hasobject:
        raise ArgumentError(f"image with dtype {image.dtype}: object arrays are not supported")
    return ArraySource(image)


def open_sink(out: Any, source: Source) -> ArraySink:
    if not isinstance(out, np.ndarray):
        raise ArgumentTypeError(f"out={short_repr(out)}: must be a numpy array or None")
    if out.ndim < 2 or out.shape[:2] != source.shape[:2]:
        raise ArgumentError(
            f"out with shape {out.shape}: its first two dimensions must be the image's "
            f"{source.shape[:2]}"
        )
    if not out.flags.writeable:
        raise ArgumentError("out: the array is read-only")
    if isinstance(source, ArraySource) and np.shares_memory(out, source.array):
        raise ArgumentError(
            "out: shares memory with image; writing a tile would change its neighbours' halos"
        )
    return ArraySink(out)


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
