"""Shared fixtures: the backends every behaviour test runs on, and test images."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

#: Every backend the behaviour tests run on; a new backend joins by its name here.
BACKENDS = ["serial", "threads", "processes", "dask"]

# Tile timings depend on thread scheduling and on a shared machine's load:
# a per-example deadline would only produce flaky failures.
settings.register_profile("tilewise", deadline=None, print_blob=True)
settings.load_profile("tilewise")

ImageMaker = Callable[..., np.ndarray]

#: What a test marked with each platform marker needs, for its skip reason.
PLATFORM_NEEDS = {
    "posix": "needs POSIX signals and FIFOs",
    "linux": "needs Linux's /proc, /dev/shm and memfd",
}


def platform_skip(marker: str, platform: str) -> str | None:
    """Why a test marked ``marker`` cannot run on ``platform`` (a ``sys.platform`` value),
    or None where it can: a Windows or macOS CI job skips it, saying why, not fails."""
    runs = platform.startswith("linux") if marker == "linux" else platform != "win32"
    return None if runs else f"{PLATFORM_NEEDS[marker]}: not on {platform}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests this platform lacks the facilities of, by their platform markers."""
    for item in items:
        for marker in PLATFORM_NEEDS:
            reason = (
                platform_skip(marker, sys.platform) if item.get_closest_marker(marker) else None
            )
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))
                break


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The journals and locks of URL outputs, in the test's own folder, not the user's cache."""
    from tilewise.io.urls import STATE_DIR_VARIABLE

    folder = tmp_path / "tilewise-state"
    monkeypatch.setenv(STATE_DIR_VARIABLE, str(folder))
    return folder


@pytest.fixture(params=BACKENDS, scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn; tests that take it must hold on all of them.

    Pass ``**backend_options`` to ``map_tiles`` rather than ``backend=backend``: on
    ``"dask"`` they hold the shared cluster's client.
    """
    return str(request.param)


@pytest.fixture(scope="session")
def backend_options(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The ``map_tiles`` options that run on ``backend``: ``backend=``, and on dask the
    ``client=`` of the one cluster the session's tests share."""
    if backend == "dask":
        return {"backend": "dask", "client": request.getfixturevalue("dask_client")}
    return {"backend": backend}


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """The cluster of the tests on backend "dask": two single-threaded worker processes
    behind a scheduler on 127.0.0.1, started at the first such test, for all of them."""
    import dask
    from distributed import Client, LocalCluster

    from tilewise.executors.dask import MALLOC_TRIM_SETTING

    with (
        # Else the nanny writes it into this process's os.environ, for every process after.
        dask.config.set({MALLOC_TRIM_SETTING: None}),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": ":0"},  # its health page: not on 8787
            silence_logs=logging.CRITICAL,  # tiles failing on purpose: no worker tracebacks
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(autouse=True)
def _dask_runs_on_the_shared_cluster(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on backend "dask" (from the ``backend`` fixture) that passes no ``client=``
    runs on the shared cluster too, its current client, not on a cluster of its own."""
    if _on_the_dask_backend(request):
        with request.getfixturevalue("dask_client").as_current():
            yield
    else:
        yield


def _on_the_dask_backend(request: pytest.FixtureRequest) -> bool:
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or callspec.params.get("backend") != "dask":
        return False
    for mark in request.node.iter_markers("parametrize"):  # its own "backend" values
        names = mark.args[0]
        if "backend" in (
            [n.strip() for n in names.split(",")] if isinstance(names, str) else names
        ):
            return False
    return True


def random_image(rng: np.random.Generator, shape: tuple[int, ...], dtype: object) -> np.ndarray:
    """Values spread over much of the dtype's range, so wrong pixels show up."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        # int32 stays well inside its range: filters sum many pixels in doubles.
        low, high = max(int(info.min), -100_000), min(int(info.max), 100_000)
        return rng.integers(low, high, shape, endpoint=True).astype(dtype)
    return (rng.standard_normal(shape) * 50).astype(dtype)


@pytest.fixture(scope="session")
def make_image() -> ImageMaker:
    """``make_image(shape, dtype="float64", seed=0)``: a reproducible random image."""

    def make(shape: tuple[int, ...], dtype: object = np.float64, seed: int = 0) -> np.ndarray:
        return random_image(np.random.default_rng(seed), shape, dtype)

    return make


@pytest.fixture
def memfd() -> None:
    """Skip a test of what only memfd segments do: reuse across runs, Dask workers mapping them.

    The suite runs a second time with ``TILEWISE_SEGMENTS=named``, on the
    named segments of macOS and Windows, which do neither.
    """
    from tilewise.sharedmem import segments

    if not segments.USE_MEMFD:
        pytest.skip("memfd segments only; TILEWISE_SEGMENTS=named runs the portable path")
