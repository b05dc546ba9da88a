"""Arrays in shared memory, for worker processes to read and write in place.

Three modules, one job each:

- :mod:`~tilewise.sharedmem.segments`: what a segment is on each system (a
  memfd on Linux, a named segment elsewhere), created, opened and removed;
- :mod:`~tilewise.sharedmem.owner`: the side that makes segments,
  :class:`SharedArray`, and the registry of the segments this process owns,
  with their reuse cache;
- :mod:`~tilewise.sharedmem.attached`: the side that maps another process's
  segments (a worker), and its registry of them.

A segment's life, on the owner's side::

     SharedArray.create / copy_of
                |
                v
           [ created ] ------ pickled into a job, its descriptor sent ----> [ shared ]
                                                                          workers map it,
                                                                  each once (attached side)
                |                                                              |
      an input, the run over:                               an output, the run over:
          recycle()                                               hand_over()
                |                                                              |
                v                                                              v
          [ recycled ] <------- the array handed to the caller is garbage -- [ handed over ]
         in the reuse cache,                                                the caller's
         taken by the next run                                              result array
         of the same size
                |
     cache full, clear_cache(), tilewise.shutdown(), or the owner exits
                v
           [ unlinked ]   name removed and descriptor closed; the memory goes with
                          the last mapping (a memfd cannot outlive its processes)

Workers drop their mappings when the owner says which segments it still
holds (``processes``), or when they see it no longer holds them (Dask).
"""

from tilewise.sharedmem.owner import (
    CACHE_BYTES,
    CACHE_SEGMENTS,
    ArraySpec,
    SharedArray,
    clear_cache,
    live_segment_names,
)
from tilewise.sharedmem.segments import PREFIX, SegmentSpec, remove_stale_segments

__all__ = [
    "CACHE_BYTES",
    "CACHE_SEGMENTS",
    "PREFIX",
    "ArraySpec",
    "SegmentSpec",
    "SharedArray",
    "clear_cache",
    "live_segment_names",
    "remove_stale_segments",
]
