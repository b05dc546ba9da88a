"""The owner side: segments this process makes, hands to workers, reuses and frees.

:class:`SharedArray` is an array laid over a segment. The process that
creates it (:meth:`SharedArray.create`, :meth:`SharedArray.copy_of`) owns
the segment and is the only one to recycle, hand over or unlink it; the
state machine is drawn in :mod:`tilewise.sharedmem`. Pickling a
``SharedArray`` sends only its segment's spec and the array's layout; a
worker that unpickles it maps the segment through
:mod:`tilewise.sharedmem.attached`.

Creating shared memory is the dear part of a run: every fresh page must be
allocated and then mapped by each process, one fault at a time. So segments
are reused: an input's copy, once the run is over, and an output, once the
array returned to the caller is garbage, go to a small cache (at most
``CACHE_SEGMENTS`` segments, ``CACHE_BYTES`` in all), from which the next run
of the same size takes them, already mapped in the parent and, with memfd
segments, in the workers. :func:`clear_cache` frees it;
``tilewise.shutdown()`` does so too.

Examples
--------
>>> import numpy as np
>>> with SharedArray.create((2, 3), np.float32) as shared:
...     shared.array[:] = 1.5
...     view = SharedArray.find(shared.array[1:])  # a view of it is found, not copied
...     view.spec.shape, float(view.array.sum())
((1, 3), 4.5)
"""

from __future__ import annotations

import collections
import math
import mmap
import os
import sys
import threading
import weakref
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import numpy as np

from tilewise.sharedmem.attached import attached_segment
from tilewise.sharedmem.segments import Segment, SegmentSpec

#: The free segments kept for reuse: at most this many, and this many bytes.
CACHE_SEGMENTS = 4
CACHE_BYTES = 2**30


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """An array laid over (part of) a segment."""

    segment: SegmentSpec
    shape: tuple[int, ...]
    dtype: str
    strides: tuple[int, ...]
    offset: int


class SharedArray:
    """A numpy array in a shared-memory segment.

    Use :meth:`create` or :meth:`copy_of` (the owner); another process gets
    one by unpickling it. ``close`` drops this process's hold on the
    segment; ``unlink`` removes its name. An array taken from ``.array``
    stays valid after both: it keeps the memory mapped.
    """

    def __init__(self, segment: Segment, spec: ArraySpec, owner: bool, holds: bool) -> None:
        self.segment = segment
        self.spec = spec
        self.owner = owner  # it made the segment: it unlinks or recycles it
        self._holds = holds  # close() closes the segment
        self._array: np.ndarray | None = np.ndarray(
            spec.shape, np.dtype(spec.dtype), buffer=segment.mapping, offset=spec.offset,
            strides=spec.strides,
        )  # fmt: skip

    @classmethod
    def create(cls, shape: tuple[int, ...], dtype: Any) -> SharedArray:
        """A C-ordered array (contents undefined) in a new or recycled segment."""
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        nbytes = max(1, math.prod(shape) * dtype.itemsize)
        segment = _take(nbytes) or _own(Segment.new(nbytes))
        return cls(segment, _layout(segment, shape, dtype), owner=True, holds=True)

    @classmethod
    def copy_of(cls, array: np.ndarray) -> SharedArray:
        """A C-ordered copy of ``array`` in a new or recycled segment."""
        nbytes = max(1, array.nbytes)
        segment = _take(nbytes)
        if segment is None and array.flags.c_contiguous:
            # Written through the descriptor: mapping fresh shared pages one
            # fault at a time would cost more than the copy itself.
            segment = _own(Segment.new(nbytes, array))
            return cls(segment, _layout(segment, array.shape, array.dtype), True, True)
        segment = segment or _own(Segment.new(nbytes))
        shared = cls(segment, _layout(segment, array.shape, array.dtype), True, True)
        np.copyto(shared.array, array)
        return shared

    @classmethod
    def find(cls, array: np.ndarray) -> SharedArray | None:
        """The segment ``array`` is a view of, if this process made it, as that view; or None."""
        base: Any = array
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        segment = _LIVE.get(id(base)) if isinstance(base, mmap.mmap) else None
        if segment is None or segment.mapping is not base or base.closed:
            return None
        if segment.fd is None and not segment.named:
            return None  # unreachable for workers: its name is gone
        start = np.ndarray((0,), np.uint8, buffer=base).__array_interface__["data"][0]
        spec = ArraySpec(
            segment.spec,
            array.shape,
            array.dtype.str,
            array.strides,
            array.__array_interface__["data"][0] - start,
        )
        return cls(segment, spec, owner=False, holds=False)

    def held_spec(self) -> ArraySpec:
        """The spec by which a process of this user that is not one of our workers
        attaches the array: through this process's descriptor (see :meth:`Segment.held_spec`)."""
        return replace(self.spec, segment=self.segment.held_spec())

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            raise ValueError(f"shared array {self.name} is closed")
        return self._array

    @property
    def name(self) -> str:
        return self.spec.segment.name

    def close(self) -> None:
        """Drop this object's hold on the segment (arrays taken from it stay valid)."""
        self._array = None
        if self._holds:
            self._holds = False
            self.segment.close()

    def unlink(self) -> None:
        """Remove the segment's name (owner only); mappings stay valid."""
        if self.owner:
            self.segment.unlink()

    def recycle(self) -> None:
        """Owner, done with it: the segment goes to the cache if nothing else uses it."""
        self._array = None
        if self.owner and self._holds:
            self._holds = False
            self.segment.unlink()
            _give(self.segment)

    def hand_over(self) -> np.ndarray:
        """Owner: give the array away; the segment is recycled once that array is gone."""
        array = self.array
        self._array = None
        self.unlink()
        if self.owner and self._holds and self.segment.fd is not None:
            self._holds = False
            weakref.finalize(array, _returned, self.segment)
        return array

    def __enter__(self) -> SharedArray:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unlink()
        self.close()

    def __reduce__(self) -> tuple[Any, tuple[ArraySpec]]:
        # A module-level function: a classmethod would be pickled by value.
        return (_unpickle, (self.spec,))

    def __repr__(self) -> str:
        spec = self.spec
        return f"SharedArray({spec.segment.name!r}, shape={spec.shape}, dtype={spec.dtype!r})"


def _unpickle(spec: ArraySpec) -> SharedArray:
    """How a SharedArray arrives in a worker: over the one mapping the worker keeps of it."""
    return SharedArray(attached_segment(spec.segment), spec, owner=False, holds=False)


def live_segment_names() -> frozenset[str]:
    """The memfd segments this process still holds: those workers may keep mapped."""
    with _lock:
        return frozenset(s.spec.name for s in list(_LIVE.values()) if s.fd is not None)


def clear_cache() -> None:
    """Free the segments kept for reuse."""
    with _lock:
        _drain_returned()
        free = list(_FREE)
        _FREE.clear()
    for segment in free:
        segment.close()


def _layout(segment: Segment, shape: tuple[int, ...], dtype: np.dtype) -> ArraySpec:
    strides, step = [], dtype.itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return ArraySpec(segment.spec, tuple(shape), dtype.str, tuple(reversed(strides)), 0)


# Segments this process made, by the id of their mapping: how an array that
# already lives in shared memory is recognised and not copied again.
_LIVE: weakref.WeakValueDictionary[int, Segment] = weakref.WeakValueDictionary()
# The reuse cache. Finalizers may run in any thread, even inside a section
# that holds the lock (garbage collection): they never wait for it.
_lock = threading.Lock()
_FREE: list[Segment] = []
_RETURNED: collections.deque[Segment] = collections.deque()


def _returned(segment: Segment) -> None:
    """An array handed over is gone: its segment goes to the cache at the next use.

    Not at once: the array is still being deallocated and holds the mapping.
    Those returned before are settled now, so few wait at any time.
    """
    if _lock.acquire(blocking=False):
        try:
            _drain_returned()
        finally:
            _lock.release()
    _RETURNED.append(segment)


def _own(segment: Segment) -> Segment:
    with _lock:
        _LIVE[id(segment.mapping)] = segment
    return segment


def _take(nbytes: int) -> Segment | None:
    with _lock:
        _drain_returned()
        for i, segment in enumerate(_FREE):
            if segment.spec.nbytes == nbytes:
                return _FREE.pop(i)
    return None


def _give(segment: Segment) -> None:
    with _lock:
        _keep(segment)


def _drain_returned() -> None:
    while _RETURNED:
        _keep(_RETURNED.popleft())


def _keep(segment: Segment) -> None:
    """Cache a segment nothing uses any more, within bounds; close it otherwise."""
    if segment.fd is None or segment.mapping.closed:
        segment.close()
        return
    if not _unused(segment):
        segment.release()  # whoever holds the mapping keeps it; it is just not reused
        return
    segment.unlink()
    _FREE.append(segment)
    while len(_FREE) > CACHE_SEGMENTS or sum(s.spec.nbytes for s in _FREE) > CACHE_BYTES:
        _FREE.pop(0).close()


def _unused(segment: Segment) -> bool:
    """No array (or anything else) refers to the mapping but the segment itself.

    The arrays handed out are gone, but a caller may still hold their memory
    another way (``arr.base``, ``np.frombuffer``): then it is not reused.
    """
    getrefcount = getattr(sys, "getrefcount", None)
    # Two references: the segment's attribute and getrefcount's argument.
    return getrefcount is not None and getrefcount(segment.mapping) <= 2


def _forget_after_fork() -> None:
    # A forked child (a worker, or the caller's own) must not hold on to, or
    # reuse, its parent's segments: it drops its copies of their descriptors.
    global _lock
    _lock = threading.Lock()
    for segment in [*_LIVE.values(), *_FREE]:
        segment.release()
    _LIVE.clear()
    _FREE.clear()
    _RETURNED.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
