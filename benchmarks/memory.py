"""Peak memory of a whole process tree, sampled from /proc in a thread.

*Pinned* memory is what a run holds: anonymous plus shared-memory pages
(``Pss_Anon + Pss_Shmem`` from ``/proc/PID/smaps_rollup``), each shared page
split between its sharers, summed over the process and all its
descendants. Plain RSS is kept beside it: it also counts the file pages a
memory map touches (page cache the kernel can drop) and counts a shared
page once per process. This is the method of ``../shared/tools/peakmem``.

Over the same window the sampler also measures how much CPU other
processes took (the machine is shared): all busy CPU time, less the tree's
and the sampler's own. Linux only: elsewhere every figure is 0 or None.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from benchmarks.machine import system_cpu

#: Seconds between samples: short enough to catch a run's peak, long enough
#: that reading /proc costs the measured run little CPU.
INTERVAL = 0.05
#: CPU seconds (summed over all CPUs) a window must last for its share of
#: CPU taken elsewhere to mean anything.
SHORTEST_WINDOW = 0.5


@dataclass(frozen=True)
class Usage:
    """Over a window: the highest pinned and RSS bytes, the most processes at once,
    and the share of all CPUs that processes outside the tree took (None if unknown)."""

    pinned: int
    rss: int
    processes: int
    elsewhere: float | None = None


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc/PID/task/*/children."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            todo.extend(_children(current, task))
    return found


def _children(pid: int, task: str) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as children:
            return [int(child) for child in children.read().split()]
    except OSError:  # the task ended meanwhile
        return []


def usage(pid: int) -> tuple[int, int]:
    """(pinned, RSS) bytes of one process; (0, 0) once it is gone."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                key, _, value = line.partition(":")
                if value.strip().endswith("kB"):
                    fields[key] = int(value.split()[0]) * 1024
    except OSError:
        return 0, 0
    return fields.get("Pss_Anon", 0) + fields.get("Pss_Shmem", 0), fields.get("Rss", 0)


def tree_usage(pid: int) -> Usage:
    """Pinned and RSS bytes of ``pid``'s whole tree right now.

    >>> now = tree_usage(os.getpid())
    >>> now.processes >= 1 and (now.pinned > 0 or not os.path.exists("/proc/self/smaps_rollup"))
    True
    """
    pids = descendants(pid)
    pinned = rss = 0
    for member in pids:
        member_pinned, member_rss = usage(member)
        pinned += member_pinned
        rss += member_rss
    return Usage(pinned, rss, len(pids))


def tree_cpu(pid: int) -> float:
    """CPU seconds used by ``pid``'s tree: each live member's, and the children it reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for member in descendants(pid):
        try:
            with open(f"/proc/{member}/stat", encoding="ascii") as stat:
                # Fields after the command (which may hold spaces), from field 3 on.
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / tick


class TreeSampler:
    """Samples a process tree in a thread; reports the peaks of a window of it.

    The window opens at :meth:`open` and closes at :meth:`close`, so the
    peaks cover the runs being measured and not the set-up around them.

    >>> sampler = TreeSampler(os.getpid())
    >>> with sampler:
    ...     sampler.open()
    ...     block = bytearray(50 * 2**20)
    ...     usage = sampler.close()
    >>> supported = os.path.exists("/proc/self/smaps_rollup")
    >>> usage.pinned >= 50 * 2**20 if supported else usage.pinned == 0
    True
    """

    def __init__(self, pid: int, interval: float = INTERVAL) -> None:
        self.pid = pid
        self.interval = interval
        self._lock = threading.Lock()
        self._open = False
        self._peak = Usage(0, 0, 0)
        self._cpu_at_open: tuple[float, float, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def open(self) -> None:
        """Start a window: forget earlier peaks, and take a first sample now."""
        with self._lock:
            self._open = True
            self._peak = Usage(0, 0, 0)
        self._cpu_at_open = self._cpu()
        self._sample()

    def close(self) -> Usage:
        """End the window with a last sample; the peaks seen within it."""
        self._sample()
        with self._lock:
            self._open = False
            peak = self._peak
        end = self._cpu()
        start, elsewhere = self._cpu_at_open, None
        # /proc/stat counts in ticks of 10 ms: a shorter window says nothing.
        if start is not None and end is not None and end[0] - start[0] >= SHORTEST_WINDOW:
            busy_elsewhere = (end[1] - start[1]) - (end[2] - start[2])
            elsewhere = min(1.0, max(0.0, busy_elsewhere / (end[0] - start[0])))
        return Usage(peak.pinned, peak.rss, peak.processes, elsewhere)

    def _cpu(self) -> tuple[float, float, float] | None:
        """(machine's CPU seconds, busy ones, the tree's and this process's own)."""
        machine = system_cpu()
        if machine is None:
            return None
        own = os.times()
        return (*machine, tree_cpu(self.pid) + own.user + own.system)

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        with self._lock:
            if not self._open:
                return
        now = tree_usage(self.pid)
        with self._lock:
            if self._open:
                self._peak = Usage(
                    max(self._peak.pinned, now.pinned),
                    max(self._peak.rss, now.rss),
                    max(self._peak.processes, now.processes),
                )
