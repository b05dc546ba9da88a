"""Check and normalise every argument of ``map_tiles`` once, before any work."""

from __future__ import annotations

import multiprocessing
import numbers
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from tilewise import _validate as check
from tilewise._cpus import available_cpus
from tilewise._optional import import_optional
from tilewise._stages import CASTINGS, Casting
from tilewise.boundary import BOUNDARIES
from tilewise.errors import ArgumentError, ArgumentTypeError

BACKENDS: tuple[str, ...] = ("processes", "threads", "serial", "dask")
#: Tries of a tile whose worker process died, beyond the first, unless ``retries=`` says.
DEFAULT_RETRIES = 2
#: How ``scheduler=`` addresses start: the Dask comms that go by host and port.
SCHEDULER_PROTOCOLS: tuple[str, ...] = ("tcp", "tls")


@dataclass(frozen=True, slots=True)
class Plan:
    """The normalised settings of one run; nothing downstream re-validates them."""

    tile: tuple[int, ...]  # one size per tiled axis: the image's first len(tile) axes
    halo: tuple[int, ...]
    boundary: str | tuple[str, ...]  # one mode, or one per tiled axis
    cval: float
    dtype: np.dtype | None
    casting: Casting  # numpy's rule for each result going into the output; dtype= casts regardless
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


def make_plan(
    *,
    tile: Any,
    halo: Any,
    boundary: Any,
    cval: Any,
    dtype: Any,
    casting: Any,
    workers: Any,
    backend: Any,
    pass_tile: Any,
    progress: Any,
    image_dtype: np.dtype,
    default_backend: str,
    start_method: Any = None,
    retries: Any = None,
    timeout: Any = None,
    resume: Any = False,
    client: Any = None,
    scheduler: Any = None,
) -> Plan:
    tile = check.sizes("tile", tile, minimum=1)
    halo = _halo(halo, tile)
    boundary = check.modes(boundary, BOUNDARIES, len(tile))
    if backend is None:  # a cluster named is a cluster to use
        backend = "dask" if client is not None or scheduler is not None else default_backend
    backend = check.choice("backend", backend, BACKENDS)
    return Plan(
        tile=tile,
        halo=halo,
        boundary=boundary,
        cval=check.cval(cval, image_dtype, boundary),
        dtype=check.dtype_or_none(dtype),
        casting=cast(Casting, check.choice("casting", casting, CASTINGS)),
        workers=_workers(workers, backend),
        backend=backend,
        pass_tile=check.flag("pass_tile", pass_tile),
        progress=check.flag("progress", progress),
        start_method=_start_method(start_method, backend),
        retries=_retries(retries, backend),
        timeout=_timeout(timeout, backend),
        resume=check.flag("resume", resume),
        client=_client(client, scheduler, backend),
        scheduler=None if scheduler is None else _dask_only("scheduler", scheduler, backend),
    )


def _halo(value: Any, tile: tuple[int, ...]) -> tuple[int, ...]:
    halo = check.sizes("halo", value, minimum=0, axes=len(tile))
    if len(halo) != len(tile):
        hint = "give one halo, or one per tiled axis"
        if len(halo) > len(tile):
            hint += f"; tile={(tile[0],) * len(halo)} tiles {len(halo)} axes"
        raise ArgumentError(
            f"halo={value!r}: {len(halo)} values, but tile={tile} tiles {len(tile)} axes; {hint}"
        )
    return halo


def tiled_axes(plan: Plan, shape: tuple[int, ...], what: str = "image") -> None:
    """Refuse a plan tiling more axes than the image has: known before any tile runs."""
    if len(plan.tile) > len(shape):
        raise ArgumentError(
            f"tile={plan.tile}: tiles {len(plan.tile)} axes, but the {what} has shape {shape}, "
            f"{len(shape)} axes"
        )


def _workers(value: Any, backend: str) -> int | None:
    if value is None:
        return None if backend == "dask" else available_cpus()
    return check.integer("workers", value, 1)


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


def _processes_only(name: str, value: Any, backend: str, what: str) -> None:
    """Refuse an option the backend would ignore: a setting silently dropped is a guess."""
    if backend != "processes":
        raise ArgumentError(
            f"{name}={value!r}: only backend='processes' {what} (backend={backend!r})"
        )


def _start_method(value: Any, backend: str) -> str | None:
    if value is None:
        return None
    _processes_only("start_method", value, backend, "starts worker processes")
    return check.choice("start_method", value, tuple(multiprocessing.get_all_start_methods()))


def _retries(value: Any, backend: str) -> int:
    if value is None:
        return DEFAULT_RETRIES
    retries = check.integer("retries", value, 0)
    if backend == "dask":
        raise ArgumentError(
            f"retries={value!r}: Dask retries a task whose worker died itself, as often as "
            "the scheduler's distributed.scheduler.allowed-failures says; set that instead"
        )
    _processes_only("retries", value, backend, "runs tiles in processes that can die")
    return retries


def _timeout(value: Any, backend: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"timeout={value!r}: must be a number of seconds or None")
    if not float(value) > 0:
        raise ArgumentError(f"timeout={value!r}: must be a positive number of seconds")
    _processes_only("timeout", value, backend, "can stop a running tile")
    return float(value)
