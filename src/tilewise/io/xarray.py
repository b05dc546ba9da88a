"""xarray DataArrays in, DataArrays out: dims, coords and attrs kept, tiles named by dim.

A DataArray is its data (a numpy or dask array) with names. tilewise tiles
the data's first axes, so the dims named in ``tile={"y": 512, "x": 512}``
are moved to the front, in the order given, and the others follow in the
order they had; ``halo`` (and ``boundary``) may name dims too, among the
tiled ones (a dim left out has no halo). The result is put back in the
image's order of dims, with its coords (rioxarray's ``spatial_ref``
included), attrs and name. A result whose dims after the tiled ones are
not the image's has those named ``dim_0``, ``dim_1``..., and keeps only
the coords they do not span. A dask-backed DataArray is read chunk by chunk,
never computed whole (see :mod:`tilewise.io.dask_array`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilewise.errors import ArgumentError, ArgumentTypeError


def is_data_array(value: Any) -> bool:
    xarray = sys.modules.get("xarray")  # a DataArray means xarray is imported already
    return xarray is not None and isinstance(value, xarray.DataArray)


@dataclass(frozen=True)
class Labelled:
    """A DataArray image, with its dims in the order tilewise tiles them."""

    image: Any  # the caller's DataArray
    dims: tuple[str, ...]  # the tiled dims first
    tile: Any
    halo: Any
    boundary: Any

    @property
    def data(self) -> Any:
        """The numpy or dask array, its dims in this order (a view, or a lazy transpose)."""
        return self.image.transpose(*self.dims).data

    def wrap(self, result: Any) -> Any:
        """``result`` of the tiled data as a DataArray named, placed and described as the image."""
        if not isinstance(result, np.ndarray):
            return result  # a file written, or the caller's out= array
        xarray = sys.modules["xarray"]
        tiled = len(self.tile) if isinstance(self.tile, (tuple, list)) else 2
        if result.shape == self.image.transpose(*self.dims).shape:
            dims = self.dims
        else:
            extra = result.ndim - tiled
            dims = (*self.dims[:tiled], *(f"dim_{i}" for i in range(extra)))
        coords = {
            name: coord
            for name, coord in self.image.coords.items()
            if all(d in dims and coord.sizes[d] == result.shape[dims.index(d)] for d in coord.dims)
        }
        wrapped = xarray.DataArray(
            result, dims=dims, coords=coords, attrs=dict(self.image.attrs), name=self.image.name
        )
        return wrapped.transpose(*(d for d in self.image.dims if d in dims), ...)


def labelled(image: Any, tile: Any, halo: Any, boundary: Any) -> Labelled:
    """``image`` with ``tile``, ``halo`` and ``boundary`` as map_tiles takes them for its data.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> scene = xr.DataArray(np.zeros((3, 40, 50)), dims=("band", "y", "x"))
    >>> plan = labelled(scene, {"y": 16, "x": 16}, {"y": 1, "x": 2}, "reflect")
    >>> plan.dims, plan.tile, plan.halo
    (('y', 'x', 'band'), (16, 16), (1, 2))
    """
    dims = tuple(str(d) for d in image.dims)
    if not isinstance(tile, Mapping):
        for name, value in (("halo", halo), ("boundary", boundary)):
            if isinstance(value, Mapping):
                raise ArgumentTypeError(
                    f"{name}={value!r}: by dim only with tile by dim too, e.g. "
                    f"tile={dict.fromkeys(dims[:2], 512)}"
                )
        return Labelled(image, dims, tile, halo, boundary)
    tiled = tuple(tile)
    for name in tiled:
        if name not in dims:
            raise ArgumentError(f"tile={tile!r}: {name!r} is not a dim of the image, {dims}")
    order = (*tiled, *(d for d in dims if d not in tiled))
    return Labelled(
        image,
        order,
        tuple(tile.values()),
        _by_dim("halo", halo, tiled, 0),
        _by_dim("boundary", boundary, tiled, "reflect"),
    )


def _by_dim(name: str, value: Any, tiled: tuple[str, ...], default: Any) -> Any:
    """A mapping of tiled dims to values as a tuple in their order; anything else as it is."""
    if not isinstance(value, Mapping):
        return value
    for dim in value:
        if dim not in tiled:
            raise ArgumentError(f"{name}={value!r}: {dim!r} is not a tiled dim, {tiled}")
    return tuple(value.get(dim, default) for dim in tiled)
