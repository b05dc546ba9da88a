"""One run at a time per output file: an OS lock on a file beside it.

The lock is the operating system's (``flock``, or ``msvcrt.locking`` on
Windows), not the lock file's existence: it is released when its holder
exits, even when killed, so a crash never leaves a stale lock behind. The
file holds the holder's pid, only to name it in the error.

An output behind a URL is locked by a local file too
(:func:`tilewise.io.urls.state_file`): that stops two runs on this machine,
not two machines, writing it; nothing an object store offers to all of
fsspec's filesystems would.

Windows' locks are mandatory and cover a region of the file: nobody else
may read a locked byte. So the lock is on one byte far past the pid
(:data:`LOCKED_BYTE`), which stays readable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tilewise.errors import ArgumentError

#: Where the Windows lock is: past any pid, so that the pid can be read while locked.
LOCKED_BYTE = 2**20

if sys.platform == "win32":  # pragma: no cover - run by the Windows CI job
    import msvcrt

    def _try_lock(fd: int) -> None:
        os.lseek(fd, LOCKED_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, LOCKED_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


#: Suffix of the lock file beside an output.
LOCK = ".tilewise-lock"


class OutputLock:
    """Held while a run writes ``output``; a second run on it fails at once.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "result.npy"
    >>> with OutputLock(out):
    ...     OutputLock(out).acquire()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tilewise.errors.ArgumentError: out=...: another tilewise run (pid ...) is writing it; wait for it to end, or stop it
    """  # noqa: E501

    def __init__(self, output: Path | str, path: Path | None = None) -> None:
        """Lock ``output`` (named in errors) by the file ``path``, by default beside it."""
        self.output = output
        self.path = path if path is not None else Path(output).with_name(Path(output).name + LOCK)
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _try_lock(fd)
            except OSError:
                os.lseek(fd, 0, os.SEEK_SET)
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ArgumentError(
                    f"out={str(self.output)!r}: another tilewise run (pid {holder}) is writing "
                    "it; wait for it to end, or stop it"
                ) from None
            # A holder that was releasing may have unlinked the file we opened:
            # the lock is only ours if it is on the file at the path now.
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        if sys.platform != "win32":  # Windows cannot remove an open file; the lock file stays
            self.path.unlink(missing_ok=True)
        _unlock(self._fd)  # Windows wants a region unlocked before its file is closed
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
