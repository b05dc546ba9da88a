"""In-memory images for Dask workers on the caller's machine: through shared memory.

The caller copies the image once into a memfd segment of the processes
backend's reuse cache, and allocates the result in another; workers write
their tiles into it, and nothing travels through Dask but the segments'
specs. Dask's workers are not the caller's children, so no descriptor can
be sent them: they open the caller's own, as ``/proc/<pid>/fd/<n>`` (see
:meth:`tilewise.sharedmem.segments.Segment.held_spec`), which the kernel allows a
process of the same user. Whether every worker can is asked of the
workers themselves (:func:`workers_share_memory`).
"""

from __future__ import annotations

import mmap
import sys
from typing import Any

import numpy as np

from tilewise.executors._transport import SharedSink, SharedSource
from tilewise.sharedmem import ArraySpec, SharedArray, segments
from tilewise.sharedmem.attached import held_segment, held_segments
from tilewise.sharedmem.segments import Segment, SegmentSpec

__all__ = ["LocalSink", "LocalSource", "workers_share_memory"]

#: The share of a Dask worker's memory limit that the caller's pages it keeps
#: mapped may take: Dask counts them in the worker's memory (its RSS), and
#: pauses the worker at 80% of the limit, and has its nanny kill it at 95%.
MAPPED_SHARE = 0.25


class LocalSource(SharedSource):
    """An in-memory image in shared memory, for Dask workers on the caller's machine.

    Dask's workers are not the caller's children: no descriptor can be sent
    them. The image pickles as the way to the caller's own descriptor of the
    segment (see :meth:`~tilewise.sharedmem.SharedArray.held_spec`). A worker
    maps it at its first task that needs it, and keeps it mapped for as long
    as the caller holds the segment (see :func:`_mapped`).
    """

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_map_source, (self.shared.held_spec(),))


class LocalSink(SharedSink):
    """An in-memory output in shared memory: Dask workers write their tiles into it."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_map_sink, (self.shared.held_spec(),))


def _map_source(spec: ArraySpec) -> LocalSource:
    return LocalSource(_mapped(spec))


def _map_sink(spec: ArraySpec) -> LocalSink:
    return LocalSink(_mapped(spec))


def _mapped(spec: ArraySpec) -> SharedArray:
    """On a worker: the array in a caller's segment, mapped by the first task that needs it.

    The segment stays mapped for the next tasks, and the next runs, as the
    caller reuses its segments: mapping it again would fault in again every
    page they touch. Only the pages the worker's tiles touch are mapped, as
    they are touched, and no more of them than :data:`MAPPED_SHARE` of the
    worker's memory limit stay mapped (see :func:`_keep_within_limit`). Once
    the caller has let go of the segment, or is gone, the attached side's
    watcher unmaps it (:func:`tilewise.sharedmem.attached.held_segment`).
    """
    segment = held_segment(spec.segment)
    _keep_within_limit()
    return SharedArray(segment, spec, owner=False, holds=False)


def _keep_within_limit() -> None:
    """Drop the pages this worker has mapped (not the mappings) when Dask would count too many.

    Dropped, the pages stay in the segment: a tile touching them maps them again.
    """
    limit = _memory_limit()
    if limit is None:
        return
    allowed = MAPPED_SHARE * limit
    held = held_segments()
    if sum(segment.spec.nbytes for segment in held) <= allowed:
        return  # even every page mapped stays within it
    if _resident_shared_bytes() > allowed:
        for segment in held:
            segment.mapping.madvise(mmap.MADV_DONTNEED)


def _memory_limit() -> int | None:
    """The memory limit of the Dask worker this runs in, if it has one."""
    from distributed import get_worker

    try:
        limit = get_worker().memory_manager.memory_limit
    except (ValueError, AttributeError):  # not in a worker; a Dask without the attribute
        return None
    return int(limit) if limit else None


def _resident_shared_bytes() -> int:
    """The shared memory this process has mapped and touched (Linux's RssShmem)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssShmem:"):
                return int(line.split()[1]) * 1024
    return 0


def _can_map(spec: SegmentSpec) -> bool:
    """On a worker: whether it can map a segment the caller made (it shares its memory)."""
    try:
        Segment.open(spec).close()
    except OSError:
        return False
    return True


def workers_share_memory(client: Any) -> bool:
    """Whether every worker of the cluster can map shared memory the caller makes.

    Asked of the workers themselves: on the caller's machine, but in another
    container or as another user, they cannot. The answer is kept for as
    long as the same workers are there. Linux only (memfd segments).
    """
    if not (sys.platform.startswith("linux") and segments.USE_MEMFD):
        return False
    workers = frozenset(client.scheduler_info().get("workers", ()))
    key = (id(client), workers)
    if key not in _SHARE_MEMORY:
        with SharedArray.create((1,), np.uint8) as probe:
            answers = client.run(_can_map, probe.held_spec().segment)
        _SHARE_MEMORY.clear()  # one client's answer at a time: few clients live long
        _SHARE_MEMORY[key] = bool(answers) and set(answers) >= workers and all(answers.values())
    return _SHARE_MEMORY[key]


_SHARE_MEMORY: dict[tuple[int, frozenset[str]], bool] = {}
