"""OME-Zarr (NGFF) images: read at their full resolution, level 0, by chunks.

An OME-Zarr image is a Zarr group whose ``multiscales`` metadata (under
``ome`` in NGFF 0.5, at the top in 0.4) lists its levels, finest first, and
names its axes (``t``, ``c``, ``z``, ``y``, ``x``) with their units; the
first level's ``scale`` is the physical size of a pixel along each. tilewise
reads the first level as any Zarr array, and carries those names and sizes
(:mod:`tilewise.io.axes`). An ``.ome.zarr`` output is an OME-Zarr image
with its pyramid, its axes and scale those of the input
(:mod:`tilewise.io.ome_zarr_output`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tilewise.io.axes import Axes
from tilewise.io.base import Location
from tilewise.io.urls import StoreUrl


@dataclass(frozen=True)
class Level0:
    """Where an OME-Zarr image's full resolution is, and what its metadata says of it."""

    location: Location
    axes: Axes
    levels: int
    version: str


def level0(group: Any, location: Location) -> Level0 | None:
    """The first level of the OME-Zarr image in zarr ``group`` (at ``location``); None if none."""
    attributes = group.attrs.asdict()
    ome = attributes.get("ome", attributes)
    multiscales = ome.get("multiscales")
    if not multiscales:
        return None
    image = multiscales[0]
    datasets = image["datasets"]
    names = tuple(_axis_name(axis).lower() for axis in image.get("axes", ()))
    scale = next(
        (
            t["scale"]
            for t in datasets[0].get("coordinateTransformations", ())
            if t.get("type") == "scale"
        ),
        None,
    )
    sizes = {}
    if scale is not None and len(scale) == len(names):
        units = {
            _axis_name(axis).lower(): axis.get("unit")
            for axis in image["axes"]
            if isinstance(axis, dict)
        }
        sizes = {
            name: (float(size), units.get(name)) for name, size in zip(names, scale, strict=True)
        }
    path = datasets[0]["path"]
    where: Location = (
        StoreUrl(f"{location.url.rstrip('/')}/{path}", location.storage_options)
        if isinstance(location, StoreUrl)
        else location / path
    )
    version = str(ome.get("version", image.get("version", "0.4")))
    return Level0(where, Axes(names or None, sizes), len(datasets), version)


def _axis_name(axis: Any) -> str:
    """An axis of NGFF 0.4 and later (a dict with a name), or 0.3's (a bare name)."""
    return str(axis["name"] if isinstance(axis, dict) else axis)
