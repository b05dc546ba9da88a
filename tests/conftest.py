"""Shared fixtures: the backends every behaviour test runs on, and test images."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import settings

#: Every backend the behaviour tests run on; a new backend joins by its name here.
BACKENDS = ["serial", "threads", "processes"]

# Tile timings depend on thread scheduling and on a shared machine's load:
# a per-example deadline would only produce flaky failures.
settings.register_profile("tilewise", deadline=None, print_blob=True)
settings.load_profile("tilewise")

ImageMaker = Callable[..., np.ndarray]


@pytest.fixture(params=BACKENDS, scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn; tests that take it must hold on all of them."""
    return str(request.param)


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
