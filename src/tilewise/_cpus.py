"""How many CPUs this process may use: the one count every layer sizes its work by."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    if hasattr(os, "process_cpu_count"):  # Python 3.13+, honours affinity on Windows too
        return os.process_cpu_count() or 1
    return os.cpu_count() or 1
