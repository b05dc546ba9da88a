"""TIFF stacks, ImageJ hyperstacks, OME-TIFF and named Zarr axes: tiled by name, kept in and out.

Files are written by tifffile and zarr and read back by them; the values'
oracle is scipy.ndimage on the whole array.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import dask.array
import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage as ndi

import tilewise
from tests.commands import tilewise_command
from tilewise.io.ome_zarr_output import LOWER_LEVELS

#: A (T, Z, C, Y, X) stack and its OME metadata: physical sizes along x, y and z.
STACK_SHAPE = (2, 7, 3, 40, 36)
OME = {
    "axes": "TZCYX",
    "PhysicalSizeX": 0.325,
    "PhysicalSizeXUnit": "µm",
    "PhysicalSizeY": 0.325,
    "PhysicalSizeYUnit": "µm",
    "PhysicalSizeZ": 2.0,
    "PhysicalSizeZUnit": "µm",
}


def stack(shape: tuple[int, ...] = STACK_SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(np.uint16)


def median3(block: np.ndarray) -> np.ndarray:
    """A 3x3x3 median over the block's first three axes, each further axis on its own."""
    size = (3, 3, 3, *(1,) * (block.ndim - 3))
    return ndi.median_filter(block, size=size, mode="nearest")


def median_by_zyx(
    image: Path, out: Path, tile: tuple[int, ...], **options: Any
) -> tuple[str, np.ndarray]:
    """``median3`` of ``image`` tiled by z, y and x into the OME-TIFF ``out``: its axes, pixels."""
    written = tilewise.map_tiles(
        median3, image, axes="zyx", tile=tile, halo=1, boundary="nearest", out=out, **options
    )
    assert written == out
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome
        return tif.series[0].axes, tif.asarray()


def pixels_sizes(path: Path) -> dict[str, Any]:
    """The Pixels element of an OME-TIFF, as tifffile reads it."""
    with tifffile.TiffFile(path) as tif:
        image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
    return {key: value for key, value in pixels.items() if key.startswith("PhysicalSize")}


def test_an_ome_tiff_is_tiled_by_name_and_written_back_with_its_axes_and_sizes(
    tmp_path: Path, backend: str, backend_options: dict[str, Any]
) -> None:
    data = stack()
    tifffile.imwrite(tmp_path / "cells.ome.tif", data, ome=True, metadata=OME)
    out = tmp_path / "median.ome.tif"
    axes, result = median_by_zyx(tmp_path / "cells.ome.tif", out, (3, 16, 16), **backend_options)
    assert axes == "TZCYX"
    # The oracle: each (t, c) volume's median, over z, y and x.
    zyx_first = np.moveaxis(data, (1, 3, 4), (0, 1, 2))  # (Z, Y, X, T, C)
    expected = np.moveaxis(median3(zyx_first), (0, 1, 2), (1, 3, 4))
    np.testing.assert_array_equal(result, expected)
    assert pixels_sizes(out) == pixels_sizes(tmp_path / "cells.ome.tif")
    assert pixels_sizes(out)["PhysicalSizeZ"] == 2.0


def test_func_gets_the_named_axes_first_and_the_others_whole(tmp_path: Path) -> None:
    data = stack()
    tifffile.imwrite(tmp_path / "cells.ome.tif", data, ome=True, metadata=OME)
    shapes = set()

    def record(block: np.ndarray) -> np.ndarray:
        shapes.add(block.shape[3:])
        return block

    result = tilewise.map_tiles(
        record, tmp_path / "cells.ome.tif", axes="zyx", tile=8, backend="serial"
    )
    assert shapes == {(2, 3)}  # t and c, whole, in the file's order
    np.testing.assert_array_equal(result, np.moveaxis(data, (1, 3, 4), (0, 1, 2)))


def test_an_imagej_hyperstack_keeps_its_spacing_and_unit(tmp_path: Path) -> None:
    data = stack((6, 2, 30, 32))  # (Z, C, Y, X)
    tifffile.imwrite(
        tmp_path / "hyper.tif",
        data,
        imagej=True,
        metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "um"},
        resolution=(4.0, 4.0),  # pixels per micrometre: 0.25 um pixels
    )
    out = tmp_path / "median.ome.tif"
    axes, result = median_by_zyx(tmp_path / "hyper.tif", out, (4, 16, 16), backend="threads")
    assert axes == "ZCYX"
    expected = np.moveaxis(median3(np.moveaxis(data, 1, -1)), -1, 1)
    np.testing.assert_array_equal(result, expected)
    sizes = pixels_sizes(out)
    assert sizes["PhysicalSizeZ"] == 1.5
    assert sizes["PhysicalSizeX"] == pytest.approx(0.25)
    assert sizes["PhysicalSizeZUnit"] == "µm"


def test_a_multi_page_tiff_is_a_stack_of_planes(tmp_path: Path) -> None:
    """Pages one after another (axes 'QYX'), each plane filtered on its own."""
    data = stack((5, 33, 27))
    tifffile.imwrite(tmp_path / "pages.tif", data, photometric="minisblack")
    func = functools.partial(ndi.median_filter, size=(1, 3, 3), mode="reflect")
    result = tilewise.map_tiles(
        func, tmp_path / "pages.tif", tile=(1, 16, 16), halo=(0, 1, 1), backend="threads"
    )
    np.testing.assert_array_equal(result, func(data))


def test_a_zarr_array_is_tiled_by_its_dimension_names(tmp_path: Path) -> None:
    data = stack((3, 8, 20, 24)).astype(np.float32)
    zarr.create_array(
        tmp_path / "in.zarr", data=data, chunks=(1, 4, 10, 12), dimension_names=("t", "z", "y", "x")
    )
    func = functools.partial(ndi.gaussian_filter, sigma=(1, 1, 1, 0), truncate=2.0)
    out = tilewise.map_tiles(
        func,
        tmp_path / "in.zarr",
        axes="zyx",
        tile=(4, 10, 12),
        halo=2,
        out=tmp_path / "out.zarr",
        backend="threads",
    )
    written = zarr.open_array(out, mode="r")
    assert written.metadata.dimension_names == ("z", "y", "x", "t")
    np.testing.assert_array_equal(written[:], func(np.moveaxis(data, 0, -1)))


def test_info_shows_a_stacks_axes_by_name_and_how_they_are_tiled(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "cells.ome.tif", stack(), ome=True, metadata=OME)
    done = tilewise_command(
        "info", "cells.ome.tif", "--axes", "zyx", "--tile", "4,16,16", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    fields = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert fields["format"].startswith("OME-TIFF stack, axes TZCYX, 42 pages")
    assert fields["axes"] == "z 7, y 40, x 36 tiled; t 2, c 3 whole"
    assert fields["tiles"].startswith("2 x 3 x 3 = 18 tiles of 4 x 16 x 16")


def test_apply_tiles_by_name_from_the_command_line(tmp_path: Path) -> None:
    data = stack()
    tifffile.imwrite(tmp_path / "cells.ome.tif", data, ome=True, metadata=OME)
    (tmp_path / "filters.py").write_text(
        "from scipy import ndimage as ndi\n\n"
        "def median3(block):\n"
        "    return ndi.median_filter(block, size=(3, 3, 3, 1, 1), mode='nearest')\n"
    )
    done = tilewise_command(
        "apply", "filters.py:median3", "cells.ome.tif", "median.ome.tif",
        "--axes", "zyx", "--tile", "4,16,16", "--halo", "1", "--boundary", "nearest",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    zyx_first = np.moveaxis(data, (1, 3, 4), (0, 1, 2))
    expected = np.moveaxis(median3(zyx_first), (0, 1, 2), (1, 3, 4))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "median.ome.tif"), expected)


@pytest.mark.parametrize(
    ("image", "arguments", "fragments"),
    [
        (np.zeros((4, 8, 8)), {"axes": "zyx"}, ["axes='zyx'", "does not name its axes"]),
        ("cells.ome.tif", {"axes": "zyw"}, ["axes='zyw'", "'w' is not an axis", "'tzcyx'"]),
        ("cells.ome.tif", {"axes": "zz"}, ["axes='zz'", "'z' is repeated"]),
        ("cells.ome.tif", {"axes": "zyx", "tile": (4, 4)}, ["tile=(4, 4)", "names 3 axes"]),
        ("cells.ome.tif", {"axes": 3}, ["axes=3", "must name 2 or more axes"]),
    ],
)
def test_axes_that_do_not_fit_are_refused_before_any_tile(
    tmp_path: Path, image: Any, arguments: dict[str, Any], fragments: list[str]
) -> None:
    tifffile.imwrite(tmp_path / "cells.ome.tif", stack(), ome=True, metadata=OME)
    calls = []

    def func(block: np.ndarray) -> np.ndarray:
        calls.append(1)
        return block

    if isinstance(image, str):
        image = tmp_path / image
    with pytest.raises((tilewise.ArgumentError, tilewise.ArgumentTypeError)) as caught:
        tilewise.map_tiles(func, image, backend="serial", **arguments)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert calls == []


def test_an_ome_tiff_output_of_unnamed_volume_axes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(tilewise.TileError, match=r"OME-TIFF names every axis"):
        tilewise.map_tiles(
            np.negative,
            np.zeros((4, 8, 8)),
            tile=(2, 4, 4),
            out=tmp_path / "out.ome.tif",
            backend="serial",
        )
    assert not (tmp_path / "out.ome.tif").exists()


# --- OME-Zarr: read at level 0, written with its multiscales metadata, by ome-zarr ---------------


def write_ome_zarr(path: Path, data: np.ndarray) -> None:
    """An OME-Zarr image of (C, Z, Y, X) with a pyramid, as ome-zarr writes one."""
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    group = zarr.group(store=parse_url(str(path), mode="w").store)
    write_image(
        image=data,
        group=group,
        scale_factors=(2, 4),  # three levels: 1, 1/2 and 1/4 in y and x
        axes="czyx",
        scale={"c": 1.0, "z": 2.0, "y": 0.5, "x": 0.5},
        axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"},
        storage_options={"chunks": (1, 4, 16, 16)},
    )


def test_an_ome_zarr_image_is_read_at_level_0_and_written_back_as_one(tmp_path: Path) -> None:
    data = stack((2, 8, 64, 48)).astype(np.float32)  # (C, Z, Y, X)
    write_ome_zarr(tmp_path / "in.ome.zarr", data)
    func = functools.partial(ndi.gaussian_filter, sigma=(1, 1, 1, 0), truncate=2.0)
    out = tilewise.map_tiles(
        func,
        tmp_path / "in.ome.zarr",
        axes="zyx",
        tile=(4, 32, 24),
        halo=2,
        out=tmp_path / "out.ome.zarr",
        backend="threads",
    )
    # The image's own order, its axes and scale, as ome-zarr reads them.
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    (node, *_) = Reader(parse_url(str(out)))()
    assert [a["name"] for a in node.metadata["axes"]] == ["c", "z", "y", "x"]
    assert node.metadata["axes"][1]["unit"] == "micrometer"
    transforms = node.metadata["coordinateTransformations"]
    assert len(node.data) == len(transforms) == 1 + LOWER_LEVELS
    for i, (scale, shift) in enumerate(transforms):  # each level halves y and x again
        factor = 2**i  # 64 and 48 pixels: halved exactly, four times
        assert scale == {"type": "scale", "scale": [1.0, 2.0, 0.5 * factor, 0.5 * factor]}
        centre = 0.5 * (factor - 1) / 2
        assert shift == {"type": "translation", "translation": [0.0, 0.0, centre, centre]}
    zyx_first = np.moveaxis(data, 0, -1)  # (Z, Y, X, C)
    np.testing.assert_array_equal(np.asarray(node.data[0]), np.moveaxis(func(zyx_first), -1, 0))


def test_the_lower_levels_are_the_ones_ome_zarr_makes_from_level_0(tmp_path: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    source = zarr.create_array(
        str(tmp_path / "in.zarr"), data=stack((2, 8, 70, 52)).astype(np.uint16),
        chunks=(1, 4, 32, 32), dimension_names=("c", "z", "y", "x"),
    )  # fmt: skip
    chunks = (1, 4, 32, 24)
    out = tilewise.map_tiles(
        np.negative, tmp_path / "in.zarr", tile=chunks, out=tmp_path / "out.ome.zarr"
    )
    top = zarr.open_array(str(out / "0"), mode="r")
    np.testing.assert_array_equal(top[...], np.negative(source[...]))
    # ome-zarr's own pyramid of the same level 0, in the same chunks.
    reference = zarr.group(store=parse_url(str(tmp_path / "ref.ome.zarr"), mode="w").store)
    write_image(
        image=dask.array.from_array(top[...], chunks=chunks), group=reference,
        scale_factors=(2, 4, 8, 16), axes="czyx", storage_options={"chunks": chunks},
    )  # fmt: skip
    ours = zarr.open_group(str(out), mode="r")
    levels = [
        (group, group.attrs["ome"]["multiscales"][0]["datasets"]) for group in (ours, reference)
    ]
    (_, our_levels), (_, their_levels) = levels
    assert len(our_levels) == len(their_levels) == 1 + LOWER_LEVELS
    for mine, theirs in zip(our_levels, their_levels, strict=True):
        assert mine["coordinateTransformations"] == theirs["coordinateTransformations"]
        got, expected = ours[mine["path"]], reference[theirs["path"]]
        assert got.shape == expected.shape
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got[...], expected[...])


def test_info_shows_an_ome_zarr_images_levels_and_axes(tmp_path: Path) -> None:
    write_ome_zarr(tmp_path / "in.ome.zarr", stack((2, 8, 64, 48)).astype(np.float32))
    done = tilewise_command(
        "info", "in.ome.zarr", "--axes", "zyx", "--tile", "4,32,32", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    fields = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert fields["format"].startswith("OME-Zarr 0.5, level 0 of 3: Zarr v3, chunks (1, 4, 16, 16)")
    assert fields["axes"] == "z 8, y 64, x 48 tiled; c 2 whole"
