"""A GeoTIFF's georeferencing on a ``.zarr`` output, in the GeoZarr conventions.

A Zarr array has no GeoKeys, so the input's CRS and geotransform are written
as the array's attributes in the GeoZarr ``spatial:`` and ``proj:`` conventions
(zarr-conventions/spatial and geo-proj), which GDAL's Zarr driver reads from
3.13: ``spatial:dimensions``, ``spatial:transform`` (rasterio's Affine
order), ``spatial:shape`` and ``spatial:registration``, and the CRS as
``proj:wkt2`` with ``proj:code`` where it has one. The array declares its
``dimension_names`` ("y", "x", then "band"), as the convention requires.

Turning GeoKeys into a CRS is GDAL's work: the carried tags are written into
a one-pixel GeoTIFF in memory, and rasterio reads its CRS and transform back.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from tilewise._optional import import_optional
from tilewise.io.geo import Georeference

SPATIAL_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v0.1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/spatial/blob/v0.1/README.md",
    "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
    "name": "spatial",
    "description": "Spatial coordinate information",
}
PROJ_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/geo-proj/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/geo-proj/blob/v1/README.md",
    "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
    "name": "proj",
    "description": "Coordinate reference system information for geospatial data",
}
#: GeoKey 1025, GTRasterTypeGeoKey: 2 is pixel-is-point.
RASTER_TYPE_KEY, PIXEL_IS_POINT = 1025, 2
#: GeoKeyDirectoryTag.
GEOKEY_DIRECTORY = 34735


def dimension_names(shape: tuple[int, ...]) -> tuple[str, ...]:
    """The names of a raster's axes: rows, columns, then bands."""
    return ("y", "x", "band")[: len(shape)]


def geozarr_attributes(georeference: Georeference, shape: tuple[int, ...]) -> dict[str, Any]:
    """The attributes placing an array of ``shape`` where ``georeference`` says; {} if nowhere."""
    if not georeference.georeferenced:
        return {}
    crs, transform = _crs_and_transform(georeference)
    attributes: dict[str, Any] = {"zarr_conventions": [SPATIAL_CONVENTION]}
    attributes["spatial:dimensions"] = ["y", "x"]
    attributes["spatial:shape"] = list(shape[:2])
    point = _pixel_is_point(georeference)
    if not transform.is_identity:  # GCPs or RPCs only: no affine transform
        # GDAL gives the transform of the pixels' corners; a pixel-is-point
        # raster's own places (0, 0) at the first pixel's centre.
        placed = transform @ transform.translation(0.5, 0.5) if point else transform
        attributes["spatial:transform"] = list(placed)[:6]
    attributes["spatial:registration"] = "node" if point else "pixel"
    if crs is not None:
        attributes["zarr_conventions"].append(PROJ_CONVENTION)
        attributes["proj:wkt2"] = crs.to_wkt(version="WKT2_2019")
        epsg = crs.to_epsg()
        if epsg is not None:
            attributes["proj:code"] = f"EPSG:{epsg}"
    return attributes


def _crs_and_transform(georeference: Georeference) -> tuple[Any, Any]:
    """The CRS (or None) and affine transform GDAL reads from the carried tags."""
    tifffile = import_optional("tifffile", "carrying a GeoTIFF's georeferencing")
    memory = import_optional("rasterio.io", "carrying a GeoTIFF's CRS to a .zarr output")
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((1, 1), np.uint8), extratags=georeference.tags)
    with memory.MemoryFile(buffer.getvalue()) as file, file.open() as dataset:
        return dataset.crs, dataset.transform


def _pixel_is_point(georeference: Georeference) -> bool:
    for code, _, _, value, _ in georeference.tags:
        if code == GEOKEY_DIRECTORY:
            keys = np.asarray(value).reshape(-1, 4)[1:]  # after the header row
            return any(key == RASTER_TYPE_KEY and raw == PIXEL_IS_POINT for key, _, _, raw in keys)
    return False
