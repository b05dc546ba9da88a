"""Where tiles are read from (sources) and written to (sinks).

A :class:`Source` reads any window of the image; a :class:`Sink` writes any
window of the output. Both pickle small, so a worker process or a cluster
node can open its own and read or write its tiles directly. They know
nothing of tiles, halos or processes.
"""

from tilewise.io.array import ArraySink, ArraySource
from tilewise.io.base import Sink, Source
from tilewise.io.open import open_sink, open_source

__all__ = ["ArraySink", "ArraySource", "Sink", "Source", "open_sink", "open_source"]
