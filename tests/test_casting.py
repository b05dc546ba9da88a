"""numpy's casting rule on every tile's result: ``casting=``, ``dtype=``, and the first wave.

The oracle is numpy itself: a result goes into the output exactly as
``numpy.copyto(output, result, casting=casting)`` takes it, and is refused
(a TileError naming the tile) exactly when ``numpy.can_cast`` says no.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tilewise

#: Every numeric dtype numpy has: the results and outputs drawn from.
NUMERIC = [
    np.dtype(name)
    for name in (
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64", "complex64", "complex128",
    )
]  # fmt: skip
CASTINGS = ("no", "equiv", "safe", "same_kind", "unsafe")
SHAPE = (7, 10)
#: Tiles of 4 x 4: six of them, edge tiles smaller.
TILE = 4


def values(dtype: np.dtype, out: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """Pixels of ``dtype`` whose cast to ``out`` numpy defines on every platform.

    Floats to unsigned integers stay non-negative (C leaves a negative one's
    cast undefined); everything stays within int8, so no float overflows an
    integer. Integer-to-integer casts wrap, which is defined, so negatives stay.
    """
    if dtype.kind == "b":
        return rng.random(SHAPE) < 0.5
    low = 0 if dtype.kind == "u" or (dtype.kind in "fc" and out.kind in "ub") else -100
    if dtype.kind in "iu":
        return rng.integers(low, 100, SHAPE, endpoint=True).astype(dtype)
    real = rng.integers(4 * low, 400, SHAPE, endpoint=True) / 4  # quarters: exact in float16
    if dtype.kind == "c":
        return (real + 1j * rng.integers(-400, 400, SHAPE) / 4).astype(dtype)
    return real.astype(dtype)


def returning(result: np.ndarray) -> Any:
    """``func(block, tile)`` giving the tile's window of ``result``."""
    return lambda block, tile: result[tile.y, tile.x]


@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")
@settings(max_examples=300)
@given(
    result_dtype=st.sampled_from(NUMERIC),
    out_dtype=st.sampled_from(NUMERIC),
    casting=st.sampled_from(CASTINGS),
    backend=st.sampled_from(["serial", "threads"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_result_goes_into_out_as_numpy_copyto_takes_it(
    result_dtype: np.dtype, out_dtype: np.dtype, casting: str, backend: str, seed: int
) -> None:
    result = values(result_dtype, out_dtype, np.random.default_rng(seed))
    out = np.zeros(SHAPE, out_dtype)
    run = {"tile": TILE, "pass_tile": True, "out": out, "casting": casting, "backend": backend}
    if np.can_cast(result_dtype, out_dtype, casting):
        expected = np.zeros(SHAPE, out_dtype)
        np.copyto(expected, result, casting=casting)
        got = tilewise.map_tiles(returning(result), np.zeros(SHAPE), **run)
        assert got is out
        np.testing.assert_array_equal(out, expected, strict=True)
    else:
        with pytest.raises(tilewise.TileError) as info:
            tilewise.map_tiles(returning(result), np.zeros(SHAPE), **run)
        message = str(info.value)
        assert f"func returned {result_dtype}," in message
        assert f"the output's {out_dtype}" in message
        assert f"casting={casting!r}" in message
        assert message.startswith(info.value.tile.describe())


# --- one example of each rule, on every backend --------------------------------------------


def test_float_results_into_an_int_out_are_refused(backend: str) -> None:
    image = np.arange(64.0).reshape(8, 8) / 2
    out = np.zeros((8, 8), np.int32)
    with pytest.raises(tilewise.TileError) as info:
        tilewise.map_tiles(np.copy, image, tile=4, out=out, backend=backend)
    assert info.value.reason == (
        "func returned float64, which casting='same_kind' does not cast to the output's "
        "int32; pass dtype='int32' to convert every result to int32, or casting='unsafe' to "
        "truncate; or write into an output of float64"
    )
    assert not out.any()  # refused before it was written: no tile is truncated


def int_then_float(block: np.ndarray, tile: tilewise.Tile) -> np.ndarray:
    """int64 on the first row of tiles, float64 below."""
    return block.astype(np.int64) if tile.index[0] == 0 else block * 0.5


def test_a_later_tile_that_does_not_fit_the_first_waves_dtype_is_refused(backend: str) -> None:
    image = np.arange(64.0).reshape(8, 8)
    # Two workers: the first wave is the first row of tiles, at most; its results make int64.
    with pytest.raises(tilewise.TileError) as info:
        tilewise.map_tiles(
            int_then_float, image, tile=4, pass_tile=True, workers=2, backend=backend
        )
    assert info.value.tile.index[0] == 1
    assert info.value.reason == (
        "func returned float64, which casting='same_kind' does not cast to the output's "
        "int64, the dtype of the first wave's results; pass dtype='float64' for a float64 "
        "output, or dtype='int64' to convert every result to int64, or casting='unsafe' to "
        "truncate"
    )
    fixed = tilewise.map_tiles(
        int_then_float, image, tile=4, pass_tile=True, workers=2, backend=backend, dtype="float64"
    )
    np.testing.assert_array_equal(fixed, np.vstack([image[:4], image[4:] * 0.5]), strict=True)


@pytest.mark.parametrize("backend", ["threads", "processes"])  # serial's first wave is one tile
def test_results_of_the_first_wave_are_promoted_together(backend: str) -> None:
    image = np.arange(64.0).reshape(8, 8)
    got = tilewise.map_tiles(
        int_then_float, image, tile=4, pass_tile=True, workers=4, backend=backend
    )
    np.testing.assert_array_equal(got, np.vstack([image[:4], image[4:] * 0.5]), strict=True)


def test_the_first_wave_is_held_to_casting_no_too() -> None:
    def int32_then_int64(block: np.ndarray, tile: tilewise.Tile) -> np.ndarray:
        return block.astype(np.int32 if tile.index == (0, 0) else np.int64)

    image = np.arange(64).reshape(8, 8)
    run = {"tile": 4, "pass_tile": True, "workers": 4, "backend": "threads"}
    assert tilewise.map_tiles(int32_then_int64, image, **run).dtype == np.int64
    with pytest.raises(tilewise.TileError, match=r"^tile \(0, 0\).*func returned int32, which "
                       r"casting='no' does not cast to the output's int64") as info:  # fmt: skip
        tilewise.map_tiles(int32_then_int64, image, casting="no", **run)
    assert info.value.reason.endswith("or casting='safe'")


@pytest.mark.parametrize("out", [False, True])
def test_an_object_result_is_refused_whatever_the_casting(backend: str, out: bool) -> None:
    image = np.arange(64.0).reshape(8, 8)
    target = np.zeros((8, 8)) if out else None
    with pytest.raises(tilewise.TileError) as info:
        tilewise.map_tiles(
            lambda b: b.astype(object), image, tile=4, casting="unsafe", out=target,
            backend=backend,
        )  # fmt: skip
    assert info.value.reason.startswith(
        "func returned an array of dtype object (Python objects), which cannot be shared with "
        "workers nor written to files; return a numeric array, or pass dtype="
    )


def test_dtype_converts_every_result_whatever_casting_says(backend: str) -> None:
    image = np.arange(64.0).reshape(8, 8) * 1.25
    for casting in CASTINGS:
        got = tilewise.map_tiles(
            lambda b: b.astype(object), image, tile=4, dtype=np.int16, casting=casting,
            backend=backend,
        )  # fmt: skip
        np.testing.assert_array_equal(got, image.astype(np.int16), strict=True)
    out = np.zeros((8, 8), np.int16)
    tilewise.map_tiles(
        np.copy, image, tile=4, dtype="int16", casting="no", out=out, backend=backend
    )
    np.testing.assert_array_equal(out, image.astype(np.int16), strict=True)


def test_casting_unsafe_truncates_as_numpy_does(backend: str) -> None:
    image = np.arange(-32.0, 32.0).reshape(8, 8) * 1.75
    out = np.zeros((8, 8), np.int32)
    tilewise.map_tiles(np.copy, image, tile=4, out=out, casting="unsafe", backend=backend)
    expected = np.zeros((8, 8), np.int32)
    np.copyto(expected, image, casting="unsafe")
    np.testing.assert_array_equal(out, expected, strict=True)
    got = tilewise.map_tiles(int_then_float, image, tile=4, pass_tile=True, workers=2,
                             casting="unsafe", backend=backend)  # fmt: skip
    truncated = np.vstack([image[:4], image[4:] * 0.5]).astype(np.int64)
    np.testing.assert_array_equal(got, truncated, strict=True)


# --- refused before any tile runs ----------------------------------------------------------


class Counting:
    """A func that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, block: np.ndarray) -> np.ndarray:
        with self.lock:
            self.calls += 1
        return block


@pytest.mark.parametrize("casting", ["sometimes", "SAME_KIND", None, 3])
def test_a_bad_casting_is_refused_before_any_tile_runs(casting: Any) -> None:
    func = Counting()
    with pytest.raises(tilewise.ArgumentError) as info:
        tilewise.map_tiles(func, np.zeros((8, 8)), tile=4, casting=casting, backend="threads")
    assert str(info.value) == (
        f"casting={casting!r}: must be one of 'no', 'equiv', 'safe', 'same_kind', 'unsafe'"
    )
    assert func.calls == 0


def test_a_dtype_that_cannot_go_into_out_is_refused_before_any_tile_runs() -> None:
    func = Counting()
    out = np.zeros((8, 8), np.int32)
    with pytest.raises(tilewise.ArgumentError) as info:
        tilewise.map_tiles(func, np.zeros((8, 8)), tile=4, dtype="float64", out=out,
                           backend="threads")  # fmt: skip
    assert str(info.value) == (
        "dtype='float64': casting='same_kind' does not cast float64 to out's int32; pass "
        "dtype='int32' (or leave dtype out), or casting='unsafe' to cast as astype does"
    )
    assert func.calls == 0
    tilewise.map_tiles(func, np.ones((8, 8)), tile=4, dtype="float64", out=out, casting="unsafe",
                       backend="threads")  # fmt: skip
    np.testing.assert_array_equal(out, np.ones((8, 8), np.int32))


def test_a_new_file_output_takes_the_first_waves_dtype(tmp_path: Any) -> None:
    image = np.arange(64.0).reshape(8, 8)
    target = tmp_path / "o.npy"
    with pytest.raises(tilewise.TileError, match=r"^tile \(1, [01]\).*func returned float64"):
        tilewise.map_tiles(int_then_float, image, tile=4, pass_tile=True, workers=2,
                           backend="threads", out=target)  # fmt: skip
    assert not target.exists()
