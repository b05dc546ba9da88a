"""Where tiles are read from (sources) and written to (sinks).

A :class:`Source` reads any window of the image; a :class:`Sink` writes any
window of the output. Both pickle small (a path and a description of the
file's layout), so a worker process or a cluster node opens its own file
and reads or writes its own tiles: nothing whole-image passes through the
parent. They know nothing of tiles, halos or processes.

Formats, by suffix: ``.npy`` (memory-mapped), ``.tif``/``.tiff``
(tifffile), ``.zarr`` (zarr-python 3), ``.png``/``.jpg`` (Pillow; small
images only, decoded whole); Zarr stores and TIFFs behind URLs too
(:mod:`tilewise.io.urls`). A file output is written to
``OUTPUT.tilewise-partial`` and renamed to ``OUTPUT`` once complete.
"""

from tilewise.io._chunks import in_decode_order
from tilewise.io.array import ArraySink, ArraySource, NewArray
from tilewise.io.base import Allocate, FileOutput, FileSink, Output, Sink, Source
from tilewise.io.open import is_path, open_output, open_sink, open_source

__all__ = [
    "Allocate",
    "ArraySink",
    "ArraySource",
    "FileOutput",
    "FileSink",
    "NewArray",
    "Output",
    "Sink",
    "Source",
    "in_decode_order",
    "is_path",
    "open_output",
    "open_sink",
    "open_source",
]
