"""A GeoTIFF's georeferencing, carried from the input file to a ``.tif`` output verbatim.

GeoTIFF keeps its georeferencing in a few TIFF tags: the CRS in the GeoKey
directory (with pixel-is-area or -point), the geotransform as a pixel scale
and tie point or as a full transformation matrix (rotation terms), GCPs as
several tie points, RPCs in their own tag. A result of the input's width
and height sits on the same grid, whatever ``func`` does per pixel, so
these tags are copied byte for byte: no CRS is parsed or re-encoded, and
nothing of GDAL is needed. GDAL's own metadata tag is kept only for what
stays true of a result: the band descriptions, when the band count is
unchanged (statistics, scales and offsets describe the input's values).

The output's nodata value is declared in GDAL's nodata tag, as GDAL,
rasterio and QGIS read it.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any

#: The GeoTIFF tags that place a grid on the Earth: ModelPixelScale,
#: ModelTiepoint (one, or many GCPs), ModelTransformation, the GeoKey
#: directory with its double and ASCII parameters, and RPC coefficients.
GEOREFERENCING_TAGS = (33550, 33922, 34264, 34735, 34736, 34737, 50844)
#: GDAL's XML metadata (band descriptions among it) and its nodata value.
GDAL_METADATA, GDAL_NODATA = 42112, 42113
#: The TIFF data type of an ASCII tag.
ASCII = 2

#: A tag as tifffile writes it: (code, TIFF data type, count, value, write once).
ExtraTag = tuple[int, int, int, Any, bool]


@dataclass(frozen=True, slots=True)
class Georeference:
    """What a GeoTIFF says of where its pixels are, and of which carry no value."""

    tags: tuple[ExtraTag, ...]  # the georeferencing tags, as read
    band_descriptions: str | None  # GDAL's metadata XML with only the band descriptions
    bands: int  # samples per pixel: the descriptions hold for a result with as many
    nodata: float | None  # GDAL's nodata tag, if any

    @property
    def georeferenced(self) -> bool:
        return bool(self.tags)

    def extratags(self, bands: int, nodata: float | None) -> list[ExtraTag]:
        """The tags of an output with ``bands`` samples per pixel and ``nodata`` declared."""
        tags = list(self.tags)
        if self.band_descriptions is not None and bands == self.bands:
            tags.append((GDAL_METADATA, ASCII, 0, self.band_descriptions, True))
        if nodata is not None:
            tags.append((GDAL_NODATA, ASCII, 0, nodata_text(nodata), True))
        return tags


def read_georeference(page: Any) -> Georeference:
    """The georeferencing tags and nodata of a tifffile ``TiffPage`` (all None if not a GeoTIFF)."""
    tags = tuple(
        (tag.code, int(tag.dtype), tag.count, tag.value, True)
        for code in GEOREFERENCING_TAGS
        if (tag := page.tags.get(code)) is not None
    )
    metadata = page.tags.get(GDAL_METADATA)
    nodata = page.tags.get(GDAL_NODATA)
    return Georeference(
        tags=tags,
        band_descriptions=None if metadata is None else _band_descriptions(metadata.value),
        bands=int(page.samplesperpixel),
        nodata=None if nodata is None else parse_nodata(nodata.value),
    )


#: No georeferencing, and no nodata: what a non-GeoTIFF input carries.
NO_GEOREFERENCE = Georeference(tags=(), band_descriptions=None, bands=0, nodata=None)


def parse_nodata(text: str) -> float | None:
    """GDAL's nodata tag as a number ("nan", "-9999", "1e+20"); None if unreadable."""
    try:
        return float(text.strip().rstrip("\x00"))
    except ValueError:
        return None


def nodata_text(value: float) -> str:
    """A nodata value as GDAL writes it: integers without a fraction, NaN as "nan"."""
    if math.isnan(value):
        return "nan"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _band_descriptions(xml: str) -> str | None:
    """GDAL's metadata XML reduced to its band descriptions; None if it has none."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    kept = ElementTree.Element(root.tag)
    for item in root.iter("Item"):
        if item.get("role") == "description" and item.get("sample") is not None:
            kept.append(item)
    return ElementTree.tostring(kept, encoding="unicode") if len(kept) else None
