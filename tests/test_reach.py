"""A pixelwise kernel reading beyond its radius is refused before any tile runs.

The oracle is the kernel's own reads: a kernel reading ``z[y + dy, x + dx]``
reads within ``radius`` exactly when ``max(|dy|, |dx|) <= radius``, and a
slice ``z[y + a : y + b]`` when both ``|a|`` and ``|b - 1|`` are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tilewise
from tilewise import ArgumentError

IMAGE = np.arange(12 * 14, dtype=np.float64).reshape(12, 14)
offsets = st.integers(-6, 6)
radii = st.integers(0, 3)


def reading(dy: int, dx: int) -> Any:
    def kernel(z: np.ndarray, y: int, x: int) -> float:
        return float(z[y + dy, x + dx])

    return kernel


@given(radius=radii, dy=offsets, dx=offsets)
def test_a_read_is_flagged_exactly_when_it_is_beyond_the_radius(
    radius: int, dy: int, dx: int
) -> None:
    kernel = tilewise.pixelwise(radius=radius, compile=False)(reading(dy, dx))
    if max(abs(dy), abs(dx)) <= radius:
        expected = np.pad(IMAGE, radius, mode="symmetric")
        rows, cols = IMAGE.shape
        window = expected[radius + dy : radius + dy + rows, radius + dx : radius + dx + cols]
        np.testing.assert_array_equal(kernel(IMAGE), window)
        return
    axis, offset = (0, dy) if abs(dy) > radius else (1, dx)
    name = "yx"[axis]
    with pytest.raises(ArgumentError) as caught:
        kernel(IMAGE)
    message = str(caught.value)
    assert "kernel" in message
    assert f"radius={radius}" in message
    assert f"at {name}{offset:+d} on axis {axis} ({name})" in message


@given(radius=radii, start=offsets, length=st.integers(1, 7))
def test_a_slice_is_flagged_exactly_when_an_end_is_beyond_the_radius(
    radius: int, start: int, length: int
) -> None:
    stop = start + length

    def window_sum(z: np.ndarray, y: int, x: int) -> float:
        return float(z[y, x + start : x + stop].sum())

    kernel = tilewise.pixelwise(radius=radius, compile=False)(window_sum)
    reads = range(start, stop)
    if all(abs(offset) <= radius for offset in reads):
        padded = np.pad(IMAGE, radius, mode="symmetric")[radius : -radius or None]
        rows, cols = IMAGE.shape
        expected = sum(
            (padded[:, radius + offset : radius + offset + cols] for offset in reads),
            np.zeros((rows, cols)),
        )
        np.testing.assert_allclose(kernel(IMAGE), expected)
    else:
        with pytest.raises(ArgumentError, match=r"on axis 1 \(x\), beyond its radius"):
            kernel(IMAGE)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("z[y][x + 2]", "x+2"),  # a row, then a column of it
        ("z[y - 1 : y + 2][2 + 1, x]", "y+2"),  # a view, indexed in its own rows
        ("z[y, x - 2]", "x-2"),  # negative at the block's first column: no wraparound
        ("z[..., y + 2, x]", "y+2"),
        ("z[y, [x - 1, x + 2]].sum()", "x+2"),  # an index array
        ("z[:, x].sum()", "slice open on axis 0"),
        ("z[y, x - 1 :].sum()", "slice open on axis 1"),
    ],
)
def test_every_way_of_indexing_is_checked(source: str, flagged: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"def reads(z, y, x):\n    return {source}", namespace)
    kernel = tilewise.pixelwise(radius=1, compile=False)(namespace["reads"])
    with pytest.raises(ArgumentError, match="reads") as caught:
        kernel(IMAGE)
    assert flagged in str(caught.value)


@pytest.mark.parametrize(
    ("source", "channels"),
    [
        ("z[y - 1 : y + 2, x - 1 : x + 2].mean()", None),
        ("z[y - 1 : y + 2][:, x].sum()", None),  # all rows of a view within the radius
        ("z[y][x - 1] + z[y][x + 1]", None),
        ("z[y, x, 2] - z[y + 1, x, 0]", 3),  # channels are read whole
        ("z[y, x, :].sum()", 3),
        ("z[y, x, -1]", 2),
    ],
)
def test_reads_within_the_radius_are_never_flagged(source: str, channels: int | None) -> None:
    namespace: dict[str, Any] = {}
    exec(f"def reads(z, y, x):\n    return {source}", namespace)
    reads = namespace["reads"]
    image = IMAGE if channels is None else np.dstack([IMAGE * (c + 1) for c in range(channels)])
    kernel = tilewise.pixelwise(radius=1, compile=False)(reads)
    padded = np.pad(image, [(1, 1), (1, 1)] + [(0, 0)] * (image.ndim - 2), mode="symmetric")
    rows, cols = image.shape[:2]
    expected = [[reads(padded, r + 1, c + 1) for c in range(cols)] for r in range(rows)]
    np.testing.assert_allclose(kernel(image), expected)


@tilewise.pixelwise(radius=1)
def reaches_too_far(z: np.ndarray, y: int, x: int) -> float:
    return z[y, x + 40] - z[y, x]


def test_a_compiled_kernel_is_refused_before_any_tile_on_every_backend(
    backend_options: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "slope.npy"
    with pytest.raises(ArgumentError) as caught:
        tilewise.map_tiles(reaches_too_far, IMAGE, tile=4, out=str(out), **backend_options)
    message = str(caught.value)
    assert "'reaches_too_far'" in message
    assert "radius=1" in message
    assert "axis 1 (x)" in message
    assert list(tmp_path.iterdir()) == []


def test_a_compiled_kernel_is_refused_on_a_whole_array_and_never_compiled() -> None:
    @tilewise.pixelwise(radius=2)
    def reads_up(z: np.ndarray, y: int, x: int) -> float:
        return z[y - 3, x]

    with pytest.raises(ArgumentError, match=r"at y-3 on axis 0 \(y\), beyond its radius=2"):
        reads_up(IMAGE)
    assert reads_up._compiler is None  # refused before numba saw it


def test_a_kernel_that_only_numba_runs_is_left_to_run() -> None:
    """Not plain Python on the probe's block: not checked, and not refused either."""

    @tilewise.pixelwise(radius=1, compile=False)
    def python_fails_on_ones(z: np.ndarray, y: int, x: int) -> float:
        if z[y, x] == 1.0:  # the probe's block is all ones
            raise RuntimeError("not on the probe")
        return z[y, x]

    np.testing.assert_array_equal(python_fails_on_ones(IMAGE + 2), IMAGE + 2)
