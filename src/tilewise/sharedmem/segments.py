"""Shared-memory segments, the platform layer under :mod:`tilewise.sharedmem`.

A :class:`Segment` is one block of shared memory as this process sees it:
its mapping and what makes it reachable from other processes.

- Linux: a memfd (``memfd_create``), shared memory that no file system shows.
  Workers receive its descriptor over their pipe, so it needs no name, is
  not limited by the size of ``/dev/shm`` (64 MB in Docker) and, as the
  kernel frees it with the last descriptor or mapping, cannot outlive its
  processes, even when they are SIGKILLed. Other processes of the same user
  on the machine (Dask workers beside the caller) open it through the
  owner's descriptor table, ``/proc/<pid>/fd/<fd>`` (see :meth:`Segment.held_spec`).
- Otherwise (macOS, Windows, where memfd is not allowed): a named segment
  that workers open by name: a file in
  ``/dev/shm`` (or, when that is too small, in the temporary directory,
  with a warning), a POSIX shared-memory object, or a Windows named mapping.
  Its name carries the owner's pid (``tilewise_<pid>_<random>``), so
  :func:`remove_stale_segments` can remove what a SIGKILLed run left behind.

Every page is allocated when a segment is created (written or reserved with
``fallocate``): memory that is not there is an error at that moment, never a
SIGBUS halfway through a run. No ``resource_tracker`` is involved: before
Python 3.13, :class:`multiprocessing.shared_memory.SharedMemory` registers a
segment in every process that attaches, which then unlinks it (with a
"leaked" warning) when that process exits.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import secrets
import sys
import tempfile
import warnings
from dataclasses import dataclass, replace

import numpy as np

from tilewise.errors import OutOfSpaceError

PREFIX = "tilewise_"
_NAME = re.compile(rf"^{PREFIX}(\d+)_[0-9a-f]+$")
_SHM_DIR = "/dev/shm"
#: Space left free in /dev/shm for everything else on the machine.
SHM_HEADROOM = 32 * 2**20
#: The environment variable that chooses the segments: ``named`` makes Linux use
#: the named segments of macOS and Windows (to test that path, or where a
#: sandbox refuses ``memfd_create``); ``memfd``, or nothing, Linux's own.
SEGMENTS_VARIABLE = "TILEWISE_SEGMENTS"


def _use_memfd() -> bool:
    chosen = os.environ.get(SEGMENTS_VARIABLE, "")
    if chosen not in ("", "memfd", "named"):
        warnings.warn(
            f"tilewise: {SEGMENTS_VARIABLE}={chosen!r}: expected 'memfd' or 'named'; "
            "using this system's default",
            RuntimeWarning,
            stacklevel=2,
        )
    return hasattr(os, "memfd_create") and chosen != "named"


#: memfd segments (Linux); False: named segments, as on other systems. Worker
#: processes inherit the environment, and so the same choice.
USE_MEMFD = _use_memfd()


@dataclass(frozen=True, slots=True)
class SegmentSpec:
    """What another process needs to reach a segment (with its descriptor, if ``by_fd``)."""

    name: str
    nbytes: int
    directory: str | None  # a named file in this directory; None: no file
    by_fd: bool = False  # a memfd: reached through a descriptor the owner sends
    #: A memfd reached through its owner's descriptor table: (pid, descriptor, inode).
    held: tuple[int, int, int] | None = None


class Segment:
    """One shared-memory segment as this process holds it: mapping, descriptor, name."""

    def __init__(self, spec: SegmentSpec, mapping: mmap.mmap, fd: int | None, named: bool) -> None:
        self.spec = spec
        self.mapping = mapping
        self.fd = fd  # kept by the owner of a memfd, to send to workers
        self.named = named

    @classmethod
    def new(cls, nbytes: int, data: np.ndarray | None = None) -> Segment:
        """A new segment of ``nbytes``, holding ``data`` (C-contiguous) if given."""
        if USE_MEMFD:
            try:
                return _new_memfd(nbytes, data)
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EACCES):
                    raise
        mapping, spec = _create_segment(nbytes, data)
        return cls(spec, mapping, None, named=True)

    @classmethod
    def open(cls, spec: SegmentSpec, *, populate: bool = True) -> Segment:
        """Map a segment another process created, by its name (or its owner's descriptor).

        ``populate``: map every page now, for a process that will touch most
        of them; else each page as it is first touched.
        """
        return cls(spec, _attach_segment(spec, populate), None, named=False)

    @classmethod
    def adopt(cls, spec: SegmentSpec, fd: int) -> Segment:
        """Map a memfd segment from a descriptor received from its owner (and close that)."""
        try:
            return cls(spec, mmap.mmap(fd, spec.nbytes, flags=_MAP_POPULATED), None, named=False)
        finally:
            os.close(fd)

    def held_spec(self) -> SegmentSpec:
        """This memfd's spec for a process this one cannot send descriptors to.

        The kernel lets a process of the same user open another's descriptor
        as ``/proc/<pid>/fd/<fd>``, for as long as that descriptor is open.
        The inode tells the segment from whatever the number holds by then.
        """
        if self.fd is None:
            raise ValueError(f"segment {self.spec.name} has no descriptor to reach it by")
        return replace(self.spec, held=(os.getpid(), self.fd, os.fstat(self.fd).st_ino))

    def still_held(self) -> bool:
        """For a segment mapped by :meth:`held_spec`: whether its owner still holds it."""
        if self.spec.held is None:
            raise ValueError(f"segment {self.spec.name} was not mapped through its owner")
        path, inode = _held_path(self.spec)
        try:
            return os.stat(path).st_ino == inode
        except OSError:
            return False

    def unlink(self) -> None:
        """Remove the name, if this process made it; the memory stays while mapped."""
        if self.named:
            self.named = False
            _unlink_segment(self.spec)

    def release(self) -> None:
        """Drop the descriptor: workers can no longer be given the segment."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        """Drop the descriptor and mapping; arrays still using the mapping keep it.

        An array over the mapping holds a reference to it, not a buffer export,
        so ``mmap.close()`` would unmap memory the array still uses (a segfault
        at its next touch): the mapping is closed only when nothing else refers
        to it, and otherwise goes with its last reference.
        """
        self.release()
        getrefcount = getattr(sys, "getrefcount", None)
        # Two references: this attribute and getrefcount's argument.
        if getrefcount is not None and getrefcount(self.mapping) > 2:
            return
        with contextlib.suppress(BufferError):
            self.mapping.close()

    def __del__(self) -> None:
        # A segment dropped without close() must not leak its descriptor.
        with contextlib.suppress(Exception):
            self.release()


# Mapping every page at once costs a fraction of faulting them in one by one.
_MAP_POPULATED = getattr(mmap, "MAP_SHARED", 0) | getattr(mmap, "MAP_POPULATE", 0)


def _new_memfd(nbytes: int, data: np.ndarray | None) -> Segment:
    name = _new_name()
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        if data is not None:
            _write_all(fd, data)
        else:
            _reserve(fd, nbytes)
        mapping = mmap.mmap(fd, nbytes)
    except BaseException:
        os.close(fd)
        raise
    return Segment(SegmentSpec(name, nbytes, None, by_fd=True), mapping, fd, named=False)


def remove_stale_segments() -> list[str]:
    """Remove segments whose owner process is dead (left by a SIGKILLed run); Linux only.

    Returns the paths removed.
    """
    removed = []
    for directory in _segment_directories():
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            match = _NAME.match(name)
            if match and not _pid_alive(int(match.group(1))):
                path = os.path.join(directory, name)
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue  # another process cleaned it first
                removed.append(path)
    return removed


def free_bytes(directory: str) -> int:
    """Space an unprivileged process may still use in ``directory``'s file system."""
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def _new_name() -> str:
    return f"{PREFIX}{os.getpid()}_{secrets.token_hex(6)}"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (POSIX only: on Windows, ``os.kill`` terminates it)."""
    if sys.platform == "win32":
        raise NotImplementedError("no signal 0 on Windows; named mappings need no cleanup")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _segment_directories() -> list[str]:
    if not sys.platform.startswith("linux"):
        return []  # elsewhere POSIX shared memory cannot be listed
    return [_SHM_DIR, tempfile.gettempdir()]


def _create_segment(nbytes: int, data: np.ndarray | None = None) -> tuple[mmap.mmap, SegmentSpec]:
    """A new segment of ``nbytes``, holding ``data`` (C-contiguous) if given."""
    if sys.platform == "win32":  # pragma: no cover - a named mapping lives while mapped
        name = _new_name()
        mapping = mmap.mmap(-1, nbytes, tagname=name)
        _fill(mapping, data)
        return mapping, SegmentSpec(name, nbytes, None)
    if not sys.platform.startswith("linux"):  # pragma: no cover - macOS, BSD
        mapping, segment = _create_posix_shm(nbytes)
        _fill(mapping, data)
        return mapping, segment
    shm_free = free_bytes(_SHM_DIR) if os.path.isdir(_SHM_DIR) else 0
    if nbytes + SHM_HEADROOM <= shm_free:
        try:
            return _create_file(_SHM_DIR, nbytes, data)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            shm_free = free_bytes(_SHM_DIR)  # filled up by someone else meanwhile
    directory = tempfile.gettempdir()
    warnings.warn(
        f"tilewise: {_SHM_DIR} has {shm_free / 2**20:.0f} MiB free, less than the "
        f"{nbytes / 2**20:.0f} MiB array needs; using a memory-mapped file in {directory} "
        "instead (slower; give the container more shared memory, e.g. docker --shm-size)",
        RuntimeWarning,
        stacklevel=3,
    )
    try:
        return _create_file(directory, nbytes, data)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise OutOfSpaceError(
            errno.ENOSPC,
            f"tilewise: no room for a {nbytes / 2**20:.0f} MiB shared array: {_SHM_DIR} has "
            f"{shm_free / 2**20:.0f} MiB free and {directory} "
            f"{free_bytes(directory) / 2**20:.0f} MiB; free some space or use backend='threads'",
        ) from exc


def _fill(mapping: mmap.mmap, data: np.ndarray | None) -> None:  # pragma: no cover
    if data is not None:
        np.copyto(np.ndarray(data.shape, data.dtype, buffer=mapping), data)


def _create_file(
    directory: str, nbytes: int, data: np.ndarray | None = None
) -> tuple[mmap.mmap, SegmentSpec]:
    name = _new_name()
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        # Every page is allocated here, before any mapping exists: tmpfs otherwise
        # allocates on first touch, and a full /dev/shm then kills the process
        # with SIGBUS in the middle of a run. Writing the data (ENOSPC is an
        # OSError) or reserving the pages does it.
        if data is not None:
            _write_all(fd, data)
        else:
            _reserve(fd, nbytes)
        mapping = mmap.mmap(fd, nbytes)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return mapping, SegmentSpec(name, nbytes, directory)


def _reserve(fd: int, nbytes: int) -> None:
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.ftruncate(fd, nbytes)  # a file system without fallocate: no tmpfs


def _write_all(fd: int, data: np.ndarray) -> None:
    view = data.reshape(-1).view(np.uint8).data
    offset = 0
    while offset < len(view):
        offset += os.pwrite(fd, view[offset : offset + 2**30], offset)


def _create_posix_shm(nbytes: int) -> tuple[mmap.mmap, SegmentSpec]:  # pragma: no cover
    import _posixshmem

    name = _new_name()
    fd = _posixshmem.shm_open("/" + name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, nbytes)
        mapping = mmap.mmap(fd, nbytes)
    except BaseException:
        _posixshmem.shm_unlink("/" + name)
        raise
    finally:
        os.close(fd)
    return mapping, SegmentSpec(name, nbytes, None)


def _attach_segment(segment: SegmentSpec, populate: bool = True) -> mmap.mmap:
    flags = _MAP_POPULATED if populate else getattr(mmap, "MAP_SHARED", 0)
    if segment.held is not None:
        return _map_held(segment, flags)
    if sys.platform == "win32":  # pragma: no cover
        return mmap.mmap(-1, segment.nbytes, tagname=segment.name)
    if segment.directory is None:  # pragma: no cover - macOS, BSD
        import _posixshmem

        fd = _posixshmem.shm_open("/" + segment.name, os.O_RDWR, 0o600)
    else:
        fd = os.open(os.path.join(segment.directory, segment.name), os.O_RDWR)
    try:
        return mmap.mmap(fd, segment.nbytes, flags=flags)
    finally:
        os.close(fd)


def _map_held(segment: SegmentSpec, flags: int) -> mmap.mmap:
    """Map a memfd through its owner's descriptor (see :meth:`Segment.held_spec`)."""
    path, inode = _held_path(segment)
    fd = os.open(path, os.O_RDWR)
    try:
        if os.fstat(fd).st_ino != inode:
            raise FileNotFoundError(errno.ENOENT, "shared-memory segment gone", segment.name)
        return mmap.mmap(fd, segment.nbytes, flags=flags)
    finally:
        os.close(fd)


def _held_path(segment: SegmentSpec) -> tuple[str, int]:
    """Where another process opens a memfd through its owner, and the inode it must have."""
    assert segment.held is not None
    pid, number, inode = segment.held
    return f"/proc/{pid}/fd/{number}", inode


def _unlink_segment(segment: SegmentSpec) -> None:
    if sys.platform == "win32":  # pragma: no cover - freed with its last mapping
        return
    try:
        if segment.directory is None:  # pragma: no cover - macOS, BSD
            import _posixshmem

            _posixshmem.shm_unlink("/" + segment.name)
        else:
            os.unlink(os.path.join(segment.directory, segment.name))
    except FileNotFoundError:
        pass  # removed already, e.g. by remove_stale_segments in a confused fork
