"""An ``.ome.zarr`` output: an OME-Zarr (NGFF) image and its pyramid, in the image's order of axes.

ome-zarr, the reference implementation of NGFF, writes and checks the
multiscales metadata (axes, their types and units, each level's scale) and
makes the lower levels, as its own ``write_image`` does; tilewise writes
the full-resolution level's chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tilewise._cpus import available_cpus
from tilewise._optional import import_optional
from tilewise.errors import ArgumentError
from tilewise.io._files import fsync_dir, fsync_file
from tilewise.io.axes import NO_AXES, UNIT_NAMES, Axes
from tilewise.io.base import FileSink
from tilewise.io.reordered import ReorderedSink, inverse
from tilewise.io.zarr import OUTPUT_CONFIG, StoreOutput, ZarrSink

#: NGFF's axis types, by name.
AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


#: The lower levels of the pyramid, as ome-zarr's ``write_image`` makes them by
#: default: each halves ``y`` and ``x`` again (``z`` is kept), four times.
LOWER_LEVELS = 4
#: The axes each lower level halves.
HALVED = ("y", "x")


class OmeZarrOutput(StoreOutput):
    """An output ``.ome.zarr``: an OME-Zarr image and its pyramid, in the image's order of axes.

    Tiles are written into the full-resolution level's array, ``0``, chunked
    by the tile, each moved back to the image's order (the run took its
    dimensions in ``order``). Once every tile is written, the lower levels
    ``1`` to ``4`` are made from it, each from the one above, by ome-zarr's
    downsampling (skimage's bilinear, anti-aliased resize, chunk by chunk
    on dask's threads), as ome-zarr's ``write_image`` makes them; the
    multiscales metadata, its axes and each level's scale, is ome-zarr's
    own writer's.
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

    def publish(self) -> None:
        self._write_lower_levels()
        super().publish()

    def _write_lower_levels(self) -> None:
        """Levels 1 to :data:`LOWER_LEVELS` from level 0, then the metadata naming them all."""
        import dask
        import dask.array as da
        from ome_zarr.scale import Methods, method_dispatch

        zarr = import_optional("zarr", "writing .ome.zarr images")
        group = zarr.open_group(str(self.partial), mode="r+")
        top = group["0"]
        names = tuple(top.metadata.dimension_names)
        halved = [i for i, name in enumerate(names) if name in HALVED]
        downsample = method_dispatch[Methods.RESIZE]
        level = da.from_zarr(top)
        paths = ["0"]
        for number in range(1, LOWER_LEVELS + 1 if halved else 1):
            shape = tuple(max(n // 2, 1) if i in halved else n for i, n in enumerate(level.shape))
            level = downsample["func"](level, output_shape=shape, **downsample["kwargs"])
            array = group.create_array(
                str(number),
                shape=shape,
                chunks=tuple(min(c, n) for c, n in zip(top.chunks, shape, strict=True)),
                dtype=top.dtype,
                dimension_names=names,
                config=OUTPUT_CONFIG,
                overwrite=True,  # a resumed run's, made again
            )
            level = level.rechunk(array.chunks)  # one dask chunk per chunk: no chunk shared
            with dask.config.set(scheduler="threads", num_workers=available_cpus()):
                da.store(level, array, lock=False)
            level = da.from_zarr(array)
            paths.append(str(number))
        self._write_metadata(group, names, paths)
        made = [self.partial / "zarr.json"]
        for path in paths[1:]:
            made += (file for file in (self.partial / path).rglob("*") if file.is_file())
        for file in made:
            fsync_file(file)

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

    def _write_metadata(
        self, group: Any, names: tuple[str, ...], paths: tuple[str, ...] | list[str] = ("0",)
    ) -> None:
        """The multiscales metadata of levels ``paths``, each smaller in y and x than the last."""
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
        sizes = [self.axes.sizes.get(name, (1.0, None))[0] for name in names]
        top = group[paths[0]].shape
        datasets = []
        for path in paths:
            # As ome-zarr writes a level: its pixels' size, and where its first pixel's centre is.
            factors = [n / m for n, m in zip(top, group[path].shape, strict=True)]
            scale = [s * f for s, f in zip(sizes, factors, strict=True)]
            shift = [s * (f - 1) / 2 for s, f in zip(sizes, factors, strict=True)]
            datasets.append(
                {
                    "path": path,
                    "coordinateTransformations": [
                        {"type": "scale", "scale": scale},
                        {"type": "translation", "translation": shift},
                    ],
                }
            )
        write_multiscales_metadata(group, datasets, axes=axes, name=self.path.stem)
