"""The machine a benchmark ran on, and how busy other processes kept it meanwhile.

Figures from a shared machine mean little without both: the CPUs and
versions say what was measured, the load elsewhere how far to trust it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform

from tilewise._cpus import available_cpus


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's guess elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(package: str) -> str:
    """The installed version of ``package``, or "not installed"."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine(packages: tuple[str, ...] = ("numpy",)) -> str:
    """One line naming the CPUs, Python and the versions of ``packages``.

    >>> machine(("numpy",)).startswith("nproc ")
    True
    """
    versions = ", ".join(f"{name} {version(name)}" for name in packages)
    python = platform.python_version()
    return f"nproc {available_cpus()}, {cpu_model()}; Python {python}, {versions}"


def system_cpu() -> tuple[float, float] | None:
    """(all CPU seconds, busy CPU seconds) of the machine since boot; None without /proc."""
    try:
        with open("/proc/stat", encoding="utf-8") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    total = sum(fields[:8]) / tick
    return total, total - (fields[3] + fields[4]) / tick
