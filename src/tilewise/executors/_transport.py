"""How a run travels to worker processes: arrays by shared-memory name, functions by pickle.

Pixel data never goes through a pipe: in-memory inputs and outputs are
:class:`~tilewise.sharedmem.SharedArray` segments that pickle as their name.
Functions go by reference when a fresh interpreter can import them, and by
value (cloudpickle) otherwise: lambdas, closures, functions of ``__main__`` or
a notebook, or of a module imported from outside ``sys.path``.
"""

from __future__ import annotations

import functools
import pickle
import sys
from collections.abc import Callable
from typing import Any

import cloudpickle
import numpy as np

from tilewise._importable import importable_module
from tilewise._stages import TileJob
from tilewise.errors import ArgumentError
from tilewise.io import ArraySink, ArraySource
from tilewise.sharedmem import SharedArray


class SharedSource(ArraySource):
    """An in-memory source in shared memory; pickles as the segment's name."""

    process_local = False

    def __init__(self, shared: SharedArray) -> None:
        super().__init__(shared.array)
        self.shared = shared

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (SharedSource, (self.shared,))


class SharedSink(ArraySink):
    """An in-memory output in shared memory; workers write into it directly."""

    process_local = False

    def __init__(self, shared: SharedArray) -> None:
        super().__init__(shared.array)
        self.shared = shared

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (SharedSink, (self.shared,))


def shared_copy(array: np.ndarray) -> SharedArray:
    """``array`` itself when it already lives in a tilewise segment, else a shared copy."""
    found = SharedArray.find(array)
    if found is not None:
        return found
    return SharedArray.copy_of(array)


def pickle_job(job: TileJob) -> bytes:
    """The job as workers receive it; an unpicklable ``func`` is an ArgumentError."""
    modules = _by_value_modules(job.func)
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        try:
            cloudpickle.dumps(job.func)
        except Exception:
            raise ArgumentError(
                f"func={job.func!r}: cannot be sent to worker processes "
                f"({type(exc).__name__}: {exc}); make it picklable (e.g. do not capture "
                "locks, open files or generators), or use backend='threads'"
            ) from exc
        raise
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)


def _by_value_modules(func: Callable[..., Any]) -> list[Any]:
    """Modules of ``func`` that a fresh interpreter could not import by name.

    cloudpickle sends a function by reference whenever its module is in
    ``sys.modules``; a module loaded from a path outside ``sys.path`` (pytest's
    importlib mode, ``runpy``, an IDE's runner) is there in this process only,
    so spawned workers would fail to import it.
    """
    modules = []
    for function in _unwrapped(func):
        name = getattr(function, "__module__", None)
        module = sys.modules.get(name) if isinstance(name, str) else None
        if module is not None and name != "__main__" and not importable_module(str(name)):
            modules.append(module)
    return modules


def _unwrapped(func: Callable[..., Any]) -> list[Callable[..., Any]]:
    """``func`` and the functions a ``functools.partial`` wraps, each pickled on its own."""
    functions = [func]
    while isinstance(func, functools.partial):
        func = func.func
        functions.append(func)
    return functions
