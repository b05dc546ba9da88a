"""Backends: where tiles run. They share one protocol, :class:`Executor`."""

from __future__ import annotations

from tilewise.executors.base import Completed, Executor
from tilewise.executors.serial import SerialExecutor
from tilewise.executors.threads import ThreadExecutor

__all__ = ["Completed", "Executor", "make_executor"]


def make_executor(backend: str, workers: int) -> Executor:
    """A started executor for ``backend``; the caller closes it."""
    if backend == "serial":
        return SerialExecutor()
    if backend == "threads":
        return ThreadExecutor(workers)
    raise ValueError(f"no executor for backend {backend!r}")
