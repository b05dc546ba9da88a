"""Inputs and outputs behind URLs (``s3://``, ``gs://``, ``az://``, ``https://``...), via fsspec.

A :class:`StoreUrl` is what every source and sink behind a URL holds: the
URL as the user gave it and the ``storage_options`` fsspec opens it with,
the same two values zarr, dask and pandas take. Whatever names it in text (an
error, a log line, the journal, ``tilewise info``) shows :func:`redact`'s
form: a password in the URL's user part and the values of query
parameters that carry signatures or tokens (a presigned S3 URL, an Azure
SAS) are replaced, and ``storage_options`` never appear. Workers receive
the options with the task, as fsspec's own filesystems pickle them.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tilewise._optional import import_optional
from tilewise.errors import ArgumentError, ArgumentTypeError

#: ``scheme://``, as fsspec reads it; one letter then ``:`` is a Windows drive, not a scheme.
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+)://")
#: Query parameters whose values are credentials (presigned S3, Azure SAS, GCS signed URLs).
_SECRET_QUERY = re.compile(r"signature|sig$|token|credential|secret|password|key", re.IGNORECASE)
#: A URL inside a message: a scheme, then everything up to a space or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://[^\s'\"<>]+")
#: Schemes whose data lives in this process only: a worker process sees an empty store.
PROCESS_LOCAL_SCHEMES = frozenset({"memory"})
#: Suffixes of the URLs read as one file (a TIFF); any other is a store of many objects.
FILE_SUFFIXES = (".tif", ".tiff")
#: What fsspec's filesystems call an object's version, in the order tried.
_VERSION_KEYS = ("ETag", "etag", "md5Hash", "LastModified", "last_modified", "mtime", "created")
#: Environment variable naming the folder of the journals and locks of URL outputs.
STATE_DIR_VARIABLE = "TILEWISE_STATE_DIR"


def is_url(value: Any) -> TypeGuard[str]:
    """Whether ``value`` is a URL string (``s3://bucket/x.zarr``), not a local path."""
    return isinstance(value, str) and _SCHEME.match(value) is not None


def redact(url: str) -> str:
    """``url`` with the credentials it may carry replaced by ``***``.

    Examples
    --------
    >>> redact("https://ana:hunter2@example.org/dem.tif?X-Amz-Signature=abc&v=2")
    'https://ana:***@example.org/dem.tif?X-Amz-Signature=***&v=2'
    >>> redact("s3://bucket/scene.zarr")
    's3://bucket/scene.zarr'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if ":" in user:
            user = user.split(":", 1)[0] + ":***"
        netloc = f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if _SECRET_QUERY.search(k) else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (an exception's message may quote one).

    >>> redact_text("GET https://example.org/a.tif?sig=abc failed: 403")
    'GET https://example.org/a.tif?sig=*** failed: 403'
    """
    return _URL_IN_TEXT.sub(lambda found: redact(found.group(0)), text)


@dataclass(frozen=True, repr=False)
class StoreUrl:
    """A URL and the ``storage_options`` that open it; shown only in its redacted form."""

    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme.lower()

    @property
    def suffix(self) -> str:
        """The suffix of the URL's path (``.zarr``, ``.tif``), as a path's."""
        return _last_part(self.url).suffix.lower()

    @property
    def process_local(self) -> bool:
        """Whether its data lives in this process (``memory://``), unseen by any other.

        Such a store is refused on backends of other processes (:func:`check_reachable`).
        """
        return self.scheme in PROCESS_LOCAL_SCHEMES

    def filesystem(self) -> tuple[Any, str]:
        """The fsspec filesystem and the path within it."""
        fsspec = import_optional("fsspec", f"reading and writing {self.scheme}:// URLs")
        return fsspec.core.url_to_fs(self.url, **self.storage_options)

    def fingerprint(self) -> dict[str, Any]:
        """Total size and a digest of every object's name, size and version (ETag or mtime).

        What a resumed run compares to know its input unchanged, from one
        listing of the store (or one ``HEAD`` of a file), without reading data.
        """
        fs, root = self.filesystem()
        # A file is one HEAD; asking whether it is a folder would, over HTTP, GET all of it.
        one_file = self.suffix in FILE_SUFFIXES
        listing = {root: fs.info(root)} if one_file else fs.find(root, detail=True)
        digest = hashlib.blake2b(digest_size=8)
        size = 0
        for name, info in sorted(listing.items()):
            size += int(info.get("size") or 0)
            version = next((info[k] for k in _VERSION_KEYS if info.get(k) is not None), "")
            digest.update(f"{name}\0{info.get('size')}\0{version}\n".encode())
        return {"size": size, "listing": digest.hexdigest()}

    def __str__(self) -> str:
        return redact(self.url)

    def __repr__(self) -> str:
        return f"StoreUrl({redact(self.url)!r})"


def store_url(value: str, storage_options: Mapping[str, Any] | None, what: str) -> StoreUrl:
    """The checked :class:`StoreUrl` of ``what=value``."""
    scheme = urlsplit(value).scheme.lower()
    fsspec = import_optional("fsspec", f"reading and writing {scheme}:// URLs")
    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as exc:
        raise ArgumentError(
            f"{what}={redact(value)!r}: cannot open {scheme}:// URLs ({exc})"
        ) from None
    return StoreUrl(value, dict(storage_options or {}))


def check_storage_options(storage_options: Any, image: Any, out: Any) -> None:
    """Refuse ``storage_options`` that are not a mapping, or that no URL would use."""
    if storage_options is None:
        return
    if not isinstance(storage_options, Mapping):
        raise ArgumentTypeError(
            "storage_options: must be a dict of fsspec options, not "
            f"{type(storage_options).__name__}"
        )
    if storage_options and not (is_url(image) or is_url(out)):
        raise ArgumentError(
            "storage_options: given, but neither image nor out is a URL (s3://, gs://, "
            "https://...); they are the options of the filesystem such a URL is opened with"
        )


def _last_part(url: str) -> PurePosixPath:
    """The URL's host and path (``memory://x.zarr`` has only a host), without its query."""
    parts = urlsplit(url)
    return PurePosixPath((parts.netloc.rpartition("@")[2] + parts.path).rstrip("/"))


def check_reachable(what: str, location: Any, backend: str) -> None:
    """Refuse a ``memory://`` URL on a backend whose workers are other processes."""
    if (
        isinstance(location, StoreUrl)
        and location.process_local
        and backend in ("processes", "dask")
    ):
        raise ArgumentError(
            f"{what}={str(location)!r}: a {location.scheme}:// store lives in this process only, "
            f"out of reach of the {backend} backend's workers; use backend='threads' or 'serial'"
        )


def state_dir() -> Path:
    """Where the journals and locks of URL outputs live: on this machine, as the caller's.

    ``$TILEWISE_STATE_DIR`` when set; else the user's cache folder
    (``$XDG_CACHE_HOME/tilewise``, ``~/.cache/tilewise``, or
    ``%LOCALAPPDATA%\\tilewise`` on Windows).
    """
    chosen = os.environ.get(STATE_DIR_VARIABLE)
    if chosen:
        return Path(chosen)
    if sys.platform == "win32":  # pragma: no cover - run by the Windows CI job
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tilewise"


def state_file(url: StoreUrl, suffix: str) -> Path:
    """The local file ``suffix`` of a URL output: named by the URL, redacted and hashed."""
    shown = str(url)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", _last_part(shown).name)[-60:]
    digest = hashlib.blake2b(url.url.encode(), digest_size=8).hexdigest()
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name or 'output'}-{digest}{suffix}"
