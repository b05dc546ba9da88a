"""Backends: where tiles run. They share one protocol, :class:`Executor`."""

from __future__ import annotations

from typing import Any

from tilewise.executors.base import Completed, Executor
from tilewise.executors.dask import DaskExecutor
from tilewise.executors.processes import ProcessExecutor
from tilewise.executors.serial import SerialExecutor
from tilewise.executors.threads import ThreadExecutor

__all__ = ["Completed", "Executor", "make_executor"]


def make_executor(
    backend: str,
    workers: int | None,
    *,
    start_method: str | None = None,
    retries: int = 2,
    timeout: float | None = None,
    client: Any = None,
    scheduler: str | None = None,
) -> Executor:
    """A started executor for ``backend``; the caller closes it.

    ``start_method``, ``retries`` and ``timeout`` concern worker processes only;
    ``client`` and ``scheduler`` name the Dask cluster, and only ``"dask"``
    takes ``workers=None`` (every thread of the cluster).
    """
    if backend == "dask":
        return DaskExecutor(workers, client=client, scheduler=scheduler)
    assert workers is not None
    if backend == "processes":
        return ProcessExecutor(workers, start_method=start_method, retries=retries, timeout=timeout)
    if backend == "serial":
        return SerialExecutor()
    if backend == "threads":
        return ThreadExecutor(workers)
    raise ValueError(f"no executor for backend {backend!r}")
