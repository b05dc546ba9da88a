"""The attached side: segments another process owns, as a worker maps them.

One registry, by segment name, holds every segment this process has mapped
but does not own, so that the jobs and tasks it runs share one mapping per
segment, and each page is faulted in once:

- a ``processes`` worker maps a segment when its owner sends the descriptor
  (:func:`adopt`), or by name (:func:`attached_segment`), and drops it when
  the owner says so (:func:`release_attached`);
- a Dask worker on the owner's machine maps it through the owner's
  descriptor table (:func:`held_segment`), and a watcher thread drops it
  once the owner no longer holds it (the descriptor's inode has changed).
"""

from __future__ import annotations

import threading

from tilewise.sharedmem.segments import Segment, SegmentSpec

#: Seconds between a Dask worker's looks at whether owners still hold the segments it maps.
UNMAP_INTERVAL = 0.5


def attached_segment(spec: SegmentSpec) -> Segment:
    """The segment ``spec`` names, mapped once and kept until released."""
    with _lock:
        segment = _ATTACHED.get(spec.name)
        if segment is None:
            if spec.by_fd:
                raise RuntimeError(f"no descriptor received for segment {spec.name}")
            segment = _ATTACHED[spec.name] = Segment.open(spec)
        return segment


def adopt(spec: SegmentSpec, fd: int) -> None:
    """Map a memfd segment from the descriptor its owner sent, until released."""
    segment = Segment.adopt(spec, fd)
    with _lock:
        _ATTACHED[spec.name] = segment


def release_attached(keep: frozenset[str] = frozenset()) -> None:
    """Drop the segments mapped here, but those in ``keep`` (the owner still holds them)."""
    with _lock:
        dropped = [_ATTACHED.pop(name) for name in list(_ATTACHED) if name not in keep]
    for segment in dropped:
        segment.close()


def held_segment(spec: SegmentSpec) -> Segment:
    """A segment mapped through its owner's descriptor table, until the owner lets go of it.

    Pages are mapped as they are touched, not all at once: a Dask worker
    touches only its tiles' rows.
    """
    with _lock:
        segment = _ATTACHED.get(spec.name)
        if segment is None:
            segment = _ATTACHED[spec.name] = Segment.open(spec, populate=False)
            _watch_held()
        return segment


def held_segments() -> list[Segment]:
    """The segments mapped through their owners' descriptors, now."""
    with _lock:
        return [segment for segment in _ATTACHED.values() if segment.spec.held is not None]


def _watch_held() -> None:
    global _watcher
    if _watcher is None or not _watcher.is_alive():
        _watcher = threading.Thread(target=_unmap_released, name="tilewise-unmap", daemon=True)
        _watcher.start()


def _unmap_released() -> None:
    """Now and then, :func:`drop_released`.

    The owner is not this process's parent, and may be gone: no pipe or
    event can tell, only its descriptor table, looked at every
    :data:`UNMAP_INTERVAL` seconds.
    """
    while not _stop.wait(UNMAP_INTERVAL):
        drop_released()


def drop_released() -> list[str]:
    """Unmap the held segments whose owners no longer hold them; their names."""
    with _lock:
        released = [
            name
            for name, segment in _ATTACHED.items()
            if segment.spec.held is not None and not segment.still_held()
        ]
        dropped = [_ATTACHED.pop(name) for name in released]
    for segment in dropped:
        segment.close()  # the memory goes once no array of a late task uses it
    return released


# The segments this process maps and does not own, by name.
_ATTACHED: dict[str, Segment] = {}
_lock = threading.Lock()
_watcher: threading.Thread | None = None
_stop = threading.Event()  # never set: the watcher lives as long as the worker
