"""numpy masked arrays: masked pixels reach func as NaN, and the result is masked again.

The oracle is the same function on ``image.filled(np.nan)``, computed whole
with scipy.ndimage in the same boundary mode: a 3x3 correlation, which
sums each pixel's neighbourhood afresh (a running sum, as uniform_filter's,
would carry a NaN along the rest of its row).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster
from scipy import ndimage as ndi

import tilewise
from tilewise import ArgumentError
from tilewise.executors.dask import MALLOC_TRIM_SETTING

pytestmark = pytest.mark.timeout(120)

BACKENDS = ["serial", "threads", "processes", "dask"]
SHAPE = (61, 83)
WEIGHTS = np.full((3, 3), 1 / 9)


@pytest.fixture(scope="module")
def cluster_client() -> Iterator[Client]:
    """Two single-threaded worker processes behind a scheduler on 127.0.0.1."""
    with (
        dask.config.set({MALLOC_TRIM_SETTING: None}),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": ":0"},  # not 8787, another cluster's
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(params=BACKENDS)
def on(request: pytest.FixtureRequest, cluster_client: Client) -> dict[str, Any]:
    """The options that run map_tiles on each backend in turn."""
    if request.param == "dask":
        return {"client": cluster_client}
    return {"backend": request.param}


def masked_image(dtype: Any = np.float64, shape: tuple[int, ...] = SHAPE) -> np.ma.MaskedArray:
    """Random values, about 3% masked, including pixels on every edge and corner."""
    rng = np.random.default_rng(11)
    data = rng.standard_normal(shape).astype(dtype)
    mask = rng.random(shape) < 0.03
    mask[0, 0] = mask[-1, -1] = mask[0, 40] = mask[30, -1] = mask[-1, 5] = mask[20, 0] = True
    return np.ma.MaskedArray(data, mask=mask)


def mean3(block: np.ndarray) -> np.ndarray:
    return ndi.correlate(block, WEIGHTS, mode="constant")  # the halo is tilewise's to fill


def whole(image: np.ndarray, boundary: str, cval: float = 0.0) -> np.ndarray:
    return ndi.correlate(image, WEIGHTS, mode=boundary, cval=cval)


@pytest.mark.parametrize("boundary", ["reflect", "mirror", "nearest", "wrap", "constant"])
def test_masked_pixels_reach_func_as_nan_and_the_result_is_masked(
    on: dict[str, Any], boundary: str
) -> None:
    image = masked_image()
    expected = whole(image.filled(np.nan), boundary, cval=2.5)
    got = tilewise.map_tiles(mean3, image, tile=16, halo=1, boundary=boundary, cval=2.5, **on)
    assert isinstance(got, np.ma.MaskedArray)
    np.testing.assert_array_equal(got.data, expected)  # NaN where expected is NaN
    # Masked where the image was, and where the NaN spread: exactly where the oracle is NaN.
    np.testing.assert_array_equal(got.mask, image.mask | np.isnan(expected))
    assert (got.mask >= image.mask).all()
    assert np.isfinite(got.compressed()).all()


def test_a_halo_beyond_the_edge_is_padded_as_from_nan_pixels(on: dict[str, Any]) -> None:
    """A masked edge pixel reflected into the halo is the same NaN as a NaN pixel's."""
    image = masked_image()
    nan_image = image.filled(np.nan)
    for boundary in ("reflect", "wrap"):
        options = {"tile": 16, "halo": 2, "boundary": boundary}
        got = tilewise.map_tiles(mean3, image, **options, **on)
        plain = tilewise.map_tiles(mean3, nan_image, **options, **on)
        np.testing.assert_array_equal(got.data, plain)
        np.testing.assert_array_equal(got.mask, image.mask | np.isnan(plain))


def test_a_result_that_is_not_float_is_masked_where_the_image_was() -> None:
    image = masked_image()
    got = tilewise.map_tiles(lambda b: b > 0, image, tile=16, backend="threads")
    assert got.dtype == bool
    np.testing.assert_array_equal(got.mask, image.mask)
    np.testing.assert_array_equal(got.data, image.filled(np.nan) > 0)  # NaN > 0 is False


def test_a_masked_array_with_nothing_masked_is_masked_only_where_func_made_nan() -> None:
    data = np.random.default_rng(1).standard_normal(SHAPE)
    image = np.ma.MaskedArray(data)  # no mask at all
    got = tilewise.map_tiles(lambda b: np.where(b > 2, np.nan, b), image, backend="serial")
    assert isinstance(got, np.ma.MaskedArray)
    np.testing.assert_array_equal(got.mask, data > 2)


def test_channels_mask_each_value_or_each_pixel() -> None:
    image = masked_image(shape=(*SHAPE, 3))
    same = tilewise.map_tiles(np.negative, image, tile=20, backend="threads")
    np.testing.assert_array_equal(same.mask, image.mask)  # the image's shape: value by value
    gray = tilewise.map_tiles(lambda b: np.nan_to_num(b).sum(-1), image, backend="threads")
    np.testing.assert_array_equal(gray.mask, image.mask.any(axis=-1))  # any channel masked
    planes = masked_image()
    stacked = tilewise.map_tiles(lambda b: np.stack([b, -b], -1), planes, backend="threads")
    np.testing.assert_array_equal(stacked.mask, np.stack([planes.mask] * 2, -1))


def test_float32_and_complex_keep_their_dtype() -> None:
    for dtype in (np.float32, np.complex64):
        image = masked_image(dtype)
        got = tilewise.map_tiles(np.copy, image, backend="serial")
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.mask, image.mask)
        np.testing.assert_array_equal(got.compressed(), image.compressed())


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int64, bool])
def test_a_masked_array_without_nan_is_refused_before_any_tile(dtype: Any) -> None:
    image = np.ma.MaskedArray(np.ones(SHAPE, dtype), mask=np.eye(*SHAPE, dtype=bool))
    calls = []
    with pytest.raises(ArgumentError) as caught:
        tilewise.map_tiles(lambda b: calls.append(1) or b, image, backend="serial")
    assert calls == []
    message = str(caught.value)
    wide = np.result_type(dtype, np.float32).name
    assert f"image: a masked array of dtype {np.dtype(dtype)}" in message
    assert f"image.astype({wide!r})" in message
    assert "image.filled(value)" in message
    # The first way it offers works, and keeps the mask.
    got = tilewise.map_tiles(np.copy, image.astype(wide), backend="serial")
    np.testing.assert_array_equal(got.mask, image.mask)


# --- outputs given -----------------------------------------------------------------------------


def test_a_masked_out_gets_the_data_and_the_mask(on: dict[str, Any]) -> None:
    image = masked_image()
    out = np.ma.masked_all(SHAPE, np.float64)
    returned = tilewise.map_tiles(mean3, image, tile=16, halo=1, out=out, **on)
    assert returned is out
    expected = whole(image.filled(np.nan), "reflect")
    np.testing.assert_array_equal(out.data, expected)
    np.testing.assert_array_equal(out.mask, image.mask | np.isnan(expected))


def test_a_plain_float_out_gets_nan_where_the_image_was_masked(on: dict[str, Any]) -> None:
    image = masked_image()
    out = np.zeros(SHAPE, np.float32)
    returned = tilewise.map_tiles(np.nan_to_num, image, tile=16, out=out, **on)
    assert returned is out
    np.testing.assert_array_equal(np.isnan(out), image.mask)  # even where func made a number
    np.testing.assert_array_equal(out[~image.mask], image.data[~image.mask].astype(np.float32))


def test_a_plain_out_that_cannot_hold_nan_is_refused_before_any_tile() -> None:
    calls = []
    with pytest.raises(ArgumentError, match=r"out: a int32 array, which cannot hold NaN"):
        tilewise.map_tiles(
            lambda b: calls.append(1) or b, masked_image(), out=np.zeros(SHAPE, np.int32),
            dtype=np.int32, casting="unsafe", backend="serial",
        )  # fmt: skip
    assert calls == []


def test_a_file_output_holds_the_results_as_they_are(tmp_path: Path) -> None:
    image = masked_image()
    out = tilewise.map_tiles(mean3, image, tile=16, halo=1, out=tmp_path / "o.npy")
    np.testing.assert_array_equal(np.load(out), whole(image.filled(np.nan), "reflect"))
