"""Named axes and physical pixel sizes: what microscopy files say of their dimensions.

A TIFF stack's axes come from tifffile, which reads them from the OME-XML of
an OME-TIFF, the description of an ImageJ hyperstack, or the page count
(``q``: one plane after another). Physical sizes come from OME-XML's
``PhysicalSizeX/Y/Z`` (and their units, micrometres unless said) and an
ImageJ hyperstack's ``spacing``, ``unit`` and resolution tags. A Zarr array
names its axes by its ``dimension_names``; an OME-Zarr image by its
multiscales ``axes``.

Names are lower-case: ``t``, ``c``, ``z``, ``y``, ``x``, ``s`` (samples of a
pixel), ``q`` (unknown). ``axes="zyx"`` picks the tiled axes by name
(:func:`order`); the output keeps every name, and the physical sizes, when
its dimensions are the input's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tilewise.errors import ArgumentError, ArgumentTypeError

#: The unit OME-XML implies for a physical size given without one.
OME_DEFAULT_UNIT = "µm"
#: The axes OME-XML gives a physical size for.
PHYSICAL_AXES = ("x", "y", "z")
#: NGFF (OME-Zarr) spells units by name, OME-XML (OME-TIFF) by symbol.
UNIT_NAMES = {
    "µm": "micrometer",
    "nm": "nanometer",
    "mm": "millimeter",
    "m": "meter",
    "s": "second",
}
UNIT_SYMBOLS = {name: symbol for symbol, name in UNIT_NAMES.items()}


@dataclass(frozen=True)
class Axes:
    """The names of an array's axes, in its order, and the physical size of a pixel along some."""

    names: tuple[str, ...] | None = None
    #: Per axis name: (size of one pixel along it, its unit or None).
    sizes: Mapping[str, tuple[float, str | None]] = field(default_factory=dict)

    def reordered(self, order: tuple[int, ...]) -> Axes:
        """These axes with the array's dimensions taken in ``order``."""
        if self.names is None:
            return self
        return Axes(tuple(self.names[i] for i in order), self.sizes)

    def of_result(self, ndim: int) -> Axes:
        """What a result of ``ndim`` dimensions keeps: every name when it has them all."""
        return self if self.names is not None and len(self.names) == ndim else NO_AXES


NO_AXES = Axes()


def tiff_axes(tif: Any, series: Any) -> Axes:
    """The axes and physical sizes of ``series`` of tifffile's ``tif``."""
    names = tuple(series.axes.lower())
    sizes: dict[str, tuple[float, str | None]] = {}
    if tif.is_ome:
        sizes = _ome_sizes(tif)
    elif tif.is_imagej:
        sizes = _imagej_sizes(tif.imagej_metadata or {}, series.keyframe)
    return Axes(names, {axis: size for axis, size in sizes.items() if axis in names})


def _ome_sizes(tif: Any) -> dict[str, tuple[float, str | None]]:
    import tifffile

    image = tifffile.xml2dict(tif.ome_metadata).get("OME", {}).get("Image", {})
    pixels = (image[0] if isinstance(image, list) else image).get("Pixels", {})
    sizes: dict[str, tuple[float, str | None]] = {}
    for axis in PHYSICAL_AXES:
        value = pixels.get(f"PhysicalSize{axis.upper()}")
        if value is not None:
            unit = pixels.get(f"PhysicalSize{axis.upper()}Unit", OME_DEFAULT_UNIT)
            sizes[axis] = (float(value), str(unit))
    return sizes


#: How ImageJ spells the units OME-XML knows by their symbol.
IMAGEJ_UNITS = {"um": "µm", "micron": "µm", "microns": "µm", "\\u00B5m": "µm"}


def _imagej_sizes(metadata: Mapping[str, Any], page: Any) -> dict[str, tuple[float, str | None]]:
    unit = metadata.get("unit")
    unit = None if unit is None else IMAGEJ_UNITS.get(str(unit), str(unit))
    sizes = {}
    if "spacing" in metadata:
        sizes["z"] = (float(metadata["spacing"]), unit)
    for axis, tag in (("x", "XResolution"), ("y", "YResolution")):
        resolution = page.tags.get(tag)
        if resolution is not None:
            pixels, per = resolution.value
            if pixels:
                sizes[axis] = (per / pixels, unit)
    return sizes


def ome_metadata(axes: Axes) -> dict[str, Any]:
    """tifffile's ``metadata=`` for an OME-TIFF with these axes and physical sizes."""
    assert axes.names is not None
    metadata: dict[str, Any] = {"axes": "".join(axes.names).upper()}
    for axis, (size, unit) in axes.sizes.items():
        if axis in PHYSICAL_AXES:
            metadata[f"PhysicalSize{axis.upper()}"] = size
            if unit is not None:
                metadata[f"PhysicalSize{axis.upper()}Unit"] = UNIT_SYMBOLS.get(unit, unit)
    return metadata


def order(axes: Any, names: tuple[str, ...] | None, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The image's dimensions, ``axes`` (names, in the order to tile them) first, then the rest.

    ``axes`` is a string of one-letter names (``"zyx"``) or a sequence of names.

    >>> order("zyx", ("t", "z", "c", "y", "x"), (3, 40, 2, 512, 512))
    (1, 3, 4, 0, 2)
    """
    named = isinstance(axes, (tuple, list)) and all(isinstance(a, str) for a in axes)
    if not (isinstance(axes, str) or named) or len(axes) < 2:
        raise ArgumentTypeError(
            f"axes={axes!r}: must name 2 or more axes, e.g. 'zyx' or ('z', 'y', 'x')"
        )
    if names is None:
        raise ArgumentError(
            f"axes={axes!r}: the image does not name its axes (an array of shape {shape}); "
            "give tile= one size per axis to tile, the first ones"
        )
    wanted = tuple(name.lower() for name in axes)
    for name in wanted:
        if name not in names or wanted.count(name) > 1:
            raise ArgumentError(
                f"axes={axes!r}: {name!r} is {'repeated' if name in names else 'not an axis'}; "
                f"the image's axes are {''.join(names)!r}"
            )
    tiled = tuple(names.index(name) for name in wanted)
    return (*tiled, *(i for i in range(len(names)) if i not in tiled))
