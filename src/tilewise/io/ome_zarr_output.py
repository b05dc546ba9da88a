"""An ``.ome.zarr`` output: an OME-Zarr (NGFF) image of one level, in the image's order of axes.

ome-zarr, the reference implementation of NGFF, writes and checks the
multiscales metadata (axes, their types and units, each level's scale);
tilewise writes the level's chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tilewise._optional import import_optional
from tilewise.errors import ArgumentError
from tilewise.io._files import fsync_dir
from tilewise.io.axes import NO_AXES, UNIT_NAMES, Axes
from tilewise.io.base import FileSink
from tilewise.io.reordered import ReorderedSink, inverse
from tilewise.io.zarr import OUTPUT_CONFIG, StoreOutput, ZarrSink

#: NGFF's axis types, by name.
AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


class OmeZarrOutput(StoreOutput):
    """An output ``.ome.zarr``: an OME-Zarr image of one level, in the image's order of axes.

    Tiles are written into the level's array, ``0``, chunked by the tile,
    each moved back to the image's order (the run took its dimensions in
    ``order``). The multiscales metadata, its axes and their scale, is
    ome-zarr's own writer's, made with the array; no lower levels are built.
    """

    def __init__(self, path: Path, axes: Axes = NO_AXES, order: tuple[int, ...] | None = None):
        import_optional("ome_zarr", "writing .ome.zarr images")
        if path.exists() and not (path / "zarr.json").is_file():
            raise ArgumentError(
                f"out={str(path)!r}: exists and is not a Zarr v3 store; refusing to replace it "
                "(remove it first)"
            )
        super().__init__(path)
        self.axes = axes  # of the image, in its own order
        self.order = order

    def create(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> FileSink:
        order = self._order(len(shape))
        names = self._names(len(shape))
        chunks = (*tile, *shape[len(tile) :])
        zarr = import_optional("zarr", "writing .ome.zarr images")
        group = zarr.open_group(str(self.partial), mode="w")
        group.create_array(
            "0",
            shape=tuple(shape[i] for i in inverse(order)),
            chunks=tuple(chunks[i] for i in inverse(order)),
            dtype=dtype,
            dimension_names=names,
            config=OUTPUT_CONFIG,
        )
        self._write_metadata(group, names)
        fsync_dir(self.partial)
        return self._sink(order)

    def reopen(self, shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, ...]) -> FileSink:
        sink = self._sink(self._order(len(shape)))
        if sink.shape != shape or sink.dtype != dtype:
            raise ArgumentError(
                f"out: {str(self.partial)!r} holds a {sink.dtype} image of shape {sink.shape}, "
                f"not the {dtype} {shape} the journal recorded; it was changed since"
            )
        return sink

    def _order(self, ndim: int) -> tuple[int, ...]:
        return self.order if self.order is not None else tuple(range(ndim))

    def _sink(self, order: tuple[int, ...]) -> FileSink:
        level = ZarrSink(path=self.partial / "0")
        return level if order == tuple(range(len(order))) else ReorderedSink(level, order)

    def _names(self, ndim: int) -> tuple[str, ...]:
        kept = self.axes.of_result(ndim)
        if kept.names is None:
            raise ArgumentError(
                f"out={str(self.path)!r}: an OME-Zarr image names every axis, but the result "
                f"has {ndim} dimensions and the image's axes do not match them; write it to "
                ".npy or .zarr"
            )
        return kept.names

    def _write_metadata(self, group: Any, names: tuple[str, ...]) -> None:
        from ome_zarr.writer import write_multiscales_metadata

        axes = []
        for name in names:
            axis: dict[str, str] = {"name": name}
            if name in AXIS_TYPES:
                axis["type"] = AXIS_TYPES[name]
            size = self.axes.sizes.get(name)
            if size is not None and size[1] is not None:
                axis["unit"] = UNIT_NAMES.get(size[1], size[1])
            axes.append(axis)
        scale = [self.axes.sizes.get(name, (1.0, None))[0] for name in names]
        datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]
        write_multiscales_metadata(group, datasets, axes=axes, name=self.path.stem)
