"""Bounded retries with backoff for reads and writes of object storage.

A store that drops a connection, throttles (HTTP 503 ``SlowDown``) or times
out usually answers a moment later; the filesystem libraries retry some of
this themselves (s3fs, gcsfs), but give up after seconds. A read or write of
a tile's window is retried :data:`ATTEMPTS` times in all, waiting
:data:`FIRST_WAIT` seconds, then twice as long each time, and each retry is
logged on the ``tilewise`` logger. What still fails is raised, and becomes
the tile's :class:`~tilewise.TileError`, which names the URL.

A write that failed is written again whole: an object store stores a
chunk whole or not at all (an S3 ``PUT`` is atomic), so no torn chunk is
ever left for a reader, and the journal records a tile only after its
write returned, which is after the store acknowledged it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from tilewise.io.urls import redact_text

T = TypeVar("T")

#: Tries of one read or write, the first included.
ATTEMPTS = 5
#: Seconds before the first retry; doubled for each one after.
FIRST_WAIT = 0.5

#: Errors no retry can mend: a missing object, a refused credential, a wrong path.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
#: Packages whose errors are transient ones of the network (their permanent ones raise OSErrors).
_NETWORK_PACKAGES = ("aiohttp", "botocore", "aiobotocore", "requests", "urllib3", "azure")

log = logging.getLogger("tilewise")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may go away if the call is made again (a dropped connection, a timeout)."""
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return True
    return type(exc).__module__.split(".")[0] in _NETWORK_PACKAGES


def with_retries(call: Callable[[], T], what: str) -> T:
    """``call()``, tried again after transient errors, :data:`ATTEMPTS` times in all.

    ``what`` says in the log what was tried ("writing to 's3://b/out.zarr'").
    """
    attempts, wait = ATTEMPTS, FIRST_WAIT
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:  # noqa: PERF203 - a retry loop is a try in a loop
            if attempt == attempts or not is_transient(exc):
                raise
            log.warning(
                "%s failed (%s: %s); retrying in %.1f s (attempt %d of %d)",
                what, type(exc).__name__, redact_text(str(exc)), wait, attempt + 1, attempts,
            )  # fmt: skip
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")  # pragma: no cover
