"""SIGTERM, as a batch scheduler sends it at a job's time limit, stopping a run as Ctrl-C does.

Python's default for SIGTERM is to die at once: no ``finally`` runs, so an
output's lock, its partial file's handles and the workers (a Dask
``LocalCluster`` the run started, with its multiprocessing semaphores) are
left as they were. Raised as ``SystemExit`` instead, it unwinds the run
like ``KeyboardInterrupt``: tiles finished are kept in the journal, the
workers are stopped, and the exit status is still the shell's 128 + 15.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


def stop_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM (a batch scheduler's time limit) unwind like Ctrl-C; returns the undo.

    Only when SIGTERM would otherwise kill the process outright (the default
    handler) and in the main thread, where Python runs signal handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None  # the application has its own plan
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is _exit_on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return restore


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # 128 + signal number: the exit status a shell reports for a process killed by it.
    raise SystemExit(128 + signum)
