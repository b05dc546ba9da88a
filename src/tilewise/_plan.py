"""Check and normalise every argument of ``map_tiles`` once, before any work."""

from __future__ import annotations

import math
import multiprocessing
import numbers
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilewise._optional import import_optional
from tilewise.boundary import BOUNDARIES
from tilewise.errors import ArgumentError, ArgumentTypeError

BACKENDS: tuple[str, ...] = ("processes", "threads", "serial", "dask")
IMPLEMENTED_BACKENDS: tuple[str, ...] = ("processes", "threads", "serial", "dask")
#: How ``scheduler=`` addresses start: the Dask comms that go by host and port.
SCHEDULER_PROTOCOLS: tuple[str, ...] = ("tcp", "tls")


@dataclass(frozen=True, slots=True)
class Plan:
    """The normalised settings of one run; nothing downstream re-validates them."""

    tile: tuple[int, int]
    halo: tuple[int, int]
    boundary: str
    cval: float
    dtype: np.dtype | None
    workers: int | None  # None only with "dask": every thread of the cluster
    backend: str
    pass_tile: bool
    progress: bool
    start_method: str | None = None  # processes: None is the process-wide default
    retries: int = 2  # processes: new attempts for a tile whose worker died
    timeout: float | None = None  # processes: seconds a tile may run before it fails
    resume: bool = False  # file outputs: skip the tiles a journalled run completed
    client: Any = None  # dask: the distributed.Client to run on
    scheduler: str | None = None  # dask: the address of the scheduler to connect to


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    if hasattr(os, "process_cpu_count"):  # Python 3.13+, honours affinity on Windows too
        return os.process_cpu_count() or 1
    return os.cpu_count() or 1


def make_plan(
    *,
    tile: Any,
    halo: Any,
    boundary: Any,
    cval: Any,
    dtype: Any,
    workers: Any,
    backend: Any,
    pass_tile: Any,
    progress: Any,
    image_dtype: np.dtype,
    default_backend: str,
    start_method: Any = None,
    retries: Any = 2,
    timeout: Any = None,
    resume: Any = False,
    client: Any = None,
    scheduler: Any = None,
) -> Plan:
    boundary = _choice("boundary", boundary, BOUNDARIES)
    if backend is None:  # a cluster named is a cluster to use
        backend = "dask" if client is not None or scheduler is not None else default_backend
    backend = _backend(backend)
    return Plan(
        tile=_pair("tile", tile, minimum=1),
        halo=_pair("halo", halo, minimum=0),
        boundary=boundary,
        cval=_cval(cval, image_dtype, boundary),
        dtype=_dtype(dtype),
        workers=_workers(workers, backend),
        backend=backend,
        pass_tile=_flag("pass_tile", pass_tile),
        progress=_flag("progress", progress),
        start_method=_start_method(start_method),
        retries=_integer("retries", retries, 0),
        timeout=_timeout(timeout, backend),
        resume=_flag("resume", resume),
        client=_client(client, scheduler, backend),
        scheduler=None if scheduler is None else _dask_only("scheduler", scheduler, backend),
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _integer(name: str, value: Any, minimum: int) -> int:
    if not _is_int(value):
        raise ArgumentTypeError(f"{name}={value!r}: must be an integer >= {minimum}")
    if value < minimum:
        raise ArgumentError(f"{name}={value!r}: must be an integer >= {minimum}")
    return int(value)


def _pair(name: str, value: Any, minimum: int) -> tuple[int, int]:
    """An int or a (rows, cols) pair of ints, each >= minimum."""
    what = "positive" if minimum == 1 else "non-negative"
    hint = f"{name}={value!r}: must be a {what} integer or a (rows, cols) pair of them"
    pair = (value, value) if _is_int(value) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(map(_is_int, pair)):
        raise ArgumentTypeError(hint)
    if min(pair) < minimum:
        raise ArgumentError(f"{name}={value!r}: each {name} dimension must be a {what} integer")
    return (int(pair[0]), int(pair[1]))


def _choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ArgumentError(f"{name}={value!r}: must be one of {', '.join(map(repr, options))}")
    return str(value)


def _backend(value: Any) -> str:
    backend = _choice("backend", value, BACKENDS)
    if backend not in IMPLEMENTED_BACKENDS:
        raise ArgumentError(
            f"backend={value!r}: not available in this version; "
            f"use one of {', '.join(map(repr, IMPLEMENTED_BACKENDS))}"
        )
    return backend


def _workers(value: Any, backend: str) -> int | None:
    if value is None:
        return None if backend == "dask" else available_cpus()
    return _integer("workers", value, 1)


def _dask_only(name: str, value: Any, backend: str) -> Any:
    if backend != "dask":
        raise ArgumentError(f"{name}={value!r}: only for backend='dask' (backend={backend!r})")
    return scheduler_address(value) if name == "scheduler" else value


def scheduler_address(value: Any) -> str:
    """A Dask scheduler's address, ``tcp://HOST:PORT`` or ``tls://HOST:PORT``.

    >>> scheduler_address("tcp://10.0.0.5:8786")
    'tcp://10.0.0.5:8786'
    >>> scheduler_address("10.0.0.5:8786")
    Traceback (most recent call last):
    ...
    tilewise.errors.ArgumentError: scheduler='10.0.0.5:8786': expected an address like 'tcp://HOST:PORT' or 'tls://HOST:PORT'
    """  # noqa: E501
    if not isinstance(value, str):
        raise ArgumentTypeError(f"scheduler={value!r}: must be an address like 'tcp://HOST:PORT'")
    protocol, sep, location = value.partition("://")
    host, colon, port = location.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # IPv6
    if (
        not sep
        or protocol not in SCHEDULER_PROTOCOLS
        or not colon
        or not host
        or any(c in host for c in "/ ")
        or not port.isdigit()
        or not 0 < int(port) < 65536
    ):
        options = " or ".join(f"'{p}://HOST:PORT'" for p in SCHEDULER_PROTOCOLS)
        raise ArgumentError(f"scheduler={value!r}: expected an address like {options}")
    return value


def _client(client: Any, scheduler: Any, backend: str) -> Any:
    if client is None:
        return None
    _dask_only("client", client, backend)
    if scheduler is not None:
        raise ArgumentError(
            f"client={client!r}, scheduler={scheduler!r}: give one or the other; the client "
            "already names its scheduler"
        )
    distributed = import_optional("distributed", "client=")
    if not isinstance(client, distributed.Client):
        raise ArgumentTypeError(f"client={client!r}: must be a distributed.Client")
    if client.status != "running":
        raise ArgumentError(f"client={client!r}: is {client.status}; pass a running client")
    return client


def _start_method(value: Any) -> str | None:
    if value is None:
        return None
    return _choice("start_method", value, tuple(multiprocessing.get_all_start_methods()))


def _timeout(value: Any, backend: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"timeout={value!r}: must be a number of seconds or None")
    if not float(value) > 0:
        raise ArgumentError(f"timeout={value!r}: must be a positive number of seconds")
    if backend != "processes":
        raise ArgumentError(
            f"timeout={value!r}: only backend='processes' can stop a running tile "
            f"(backend={backend!r})"
        )
    return float(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{name}={value!r}: must be True or False")
    return bool(value)


def _dtype(value: Any) -> np.dtype | None:
    if value is None:
        return None
    try:
        dtype = np.dtype(value)
    except TypeError as exc:
        raise ArgumentTypeError(f"dtype={value!r}: not a numpy dtype ({exc})") from exc
    if dtype.hasobject:
        raise ArgumentError(f"dtype={value!r}: object arrays cannot be shared with workers")
    return dtype


def _cval(value: Any, image_dtype: np.dtype, boundary: str) -> float:
    """cval as the padding stores it, in the image's dtype: rounded at most, never changed.

    A float image rounds cval to its precision (as ``numpy.pad`` does) but must
    not overflow to inf; any other dtype must hold cval exactly.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"cval={value!r}: must be a real number")
    if boundary == "constant":
        # A Python number, so that np.float64(0.1) and 0.1 are judged alike.
        number: Any = value.item() if isinstance(value, np.generic) else value
        with np.errstate(invalid="ignore", over="ignore"):
            stored = np.array(number).astype(image_dtype)
        if image_dtype.kind in "fc":
            same = bool(np.isfinite(stored)) or not math.isfinite(number)
        else:
            same = bool(stored.item() == number)
        if not same:
            raise ArgumentError(
                f"cval={value!r}: cannot be stored in the image's dtype {image_dtype} "
                f"(it would become {stored.item()!r}); convert the image first"
            )
        if image_dtype.kind not in "fc":
            return int(number)  # exact: a float would round integers beyond 2**53
    return float(value)
