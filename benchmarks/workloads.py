"""The product's benchmark workloads: what is computed, on what, at which size.

Every method of a workload computes the same thing and must give the same
result as its first method, the best plain call (the whole-array call);
the suite's ratios are to that call. The functions live here, at module
level, so every method can send them to its workers by reference.

- ``square``: ``np.square`` of a 24 MP float32 image. Memory-bound: tiling
  can at best tie the whole-array call; the question is what it costs.
- ``slope-python``: the original question: a 3x3-neighbourhood slope as a
  pure-Python double loop, on 1 MP. Compute- and GIL-bound.
- ``slope-pixelwise``: the same per-pixel function compiled by
  :func:`tilewise.pixelwise`, on 24 MP, against vectorised numpy.
- ``gaussian``: ``scipy.ndimage.gaussian_filter(sigma=3)`` with a 12-pixel
  halo on 24 MP: a neighbourhood operation, compute-bound.
- ``file``: a 3x3 mean from a ``.npy`` file to a ``.npy`` file (and Zarr to
  Zarr), memory bounded whatever the file's size.
- ``overhead``: ``np.square`` on 64 x 64 tiles: what each tile costs beyond
  its work.
- ``first-wave``: 4 tiles that each take 0.5 s (a sleep stands for the work)
  on 4 threads: the default output against ``out=`` a preallocated array.
  With ``out=`` the 4 tiles run at once, 0.5 s in all; the default output
  must not cost a wave of its own to learn the result's dtype.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from tilewise import pixelwise

#: Metres between pixels of the elevation models.
CELL = 10.0
SIGMA = 3
#: The Gaussian kernel's radius at scipy's default truncate=4: int(4 * 3 + 0.5).
GAUSSIAN_HALO = 12
#: Zarr chunks of the file workload's input, and tilewise's tiles there.
FILE_CHUNK = 1024
#: Seconds each tile of the first-wave workload takes, and the threads it runs on.
FIRST_WAVE_SECONDS = 0.5
FIRST_WAVE_WORKERS = 4


def slope_at(z, y, x):  # numba compiles it: no annotations
    """Slope at one pixel of the padded elevation ``z``, in radians: what the user writes."""
    dzdx = (z[y, x + 1] - z[y, x - 1]) / (2 * CELL)
    dzdy = (z[y + 1, x] - z[y - 1, x]) / (2 * CELL)
    return math.atan(math.sqrt(dzdx * dzdx + dzdy * dzdy))


#: ``slope_at`` compiled and looped over every pixel by tilewise.
slope = pixelwise(radius=1, dtype=np.float32)(slope_at)


def slope_loop(block: np.ndarray) -> np.ndarray:
    """``slope_at`` over a block as a pure-Python double loop: the loop people write first.

    The block's outermost pixels only serve as context: they are left at 0.
    """
    rows, cols = block.shape
    out = np.zeros((rows, cols), np.float32)
    for y in range(1, rows - 1):
        for x in range(1, cols - 1):
            out[y, x] = slope_at(block, y, x)
    return out


def whole_slope_loop(dem: np.ndarray) -> np.ndarray:
    """The pure-Python loop over the whole image, padded as scipy's "reflect" pads."""
    return slope_loop(np.pad(dem, 1, mode="symmetric"))[1:-1, 1:-1]


def numpy_slope(dem: np.ndarray) -> np.ndarray:
    """The slope in vectorised numpy, float32 throughout: the best plain call."""
    z = np.pad(dem, 1, mode="symmetric")  # numpy's "symmetric" is scipy's "reflect"
    dzdx = (z[1:-1, 2:] - z[1:-1, :-2]) / np.float32(2 * CELL)
    dzdy = (z[2:, 1:-1] - z[:-2, 1:-1]) / np.float32(2 * CELL)
    return np.arctan(np.sqrt(dzdx * dzdx + dzdy * dzdy))


def gaussian(block: np.ndarray) -> np.ndarray:
    return ndi.gaussian_filter(block, sigma=SIGMA, mode="reflect")


def mean3(block: np.ndarray) -> np.ndarray:
    """The 3x3 mean of the file workload."""
    return ndi.uniform_filter(block, size=3, mode="reflect")


def sleepy(block: np.ndarray) -> np.ndarray:
    """The first-wave workload's function: :data:`FIRST_WAVE_SECONDS` of waiting, the block back.

    The sleep stands for the work of a slow tile; it holds no CPU, so 4 of
    them run at once on any machine.
    """
    time.sleep(FIRST_WAVE_SECONDS)
    return block


@dataclass(frozen=True)
class Workload:
    """One job, run by several methods at one size.

    ``methods`` are keys of :data:`benchmarks.methods.METHODS`; the first
    is the reference, the best plain call. ``func`` is what every blockwise
    method applies to a block (tile plus ``halo``), and ``whole`` the plain
    call on the whole image. ``tile`` is tilewise's tile size (``strips``:
    full-width row strips of ``strips`` rows on threads, which suit a
    memory-bound function); ``chunks`` is dask's and scikit-image's chunk
    size, ``blocks`` the number of blocks the hand-written pools and joblib
    cut the image into. ``workers`` fixes the workers of tilewise's methods
    whatever ``--workers`` says (None: ``--workers``).
    """

    name: str
    title: str
    shape: tuple[int, int]
    func: Callable[[np.ndarray], np.ndarray]
    func_name: str
    whole: Callable[[np.ndarray], np.ndarray]
    whole_name: str
    halo: int
    tile: tuple[int, int]
    chunks: tuple[int, int]
    blocks: int
    methods: tuple[str, ...]
    strips: int | None = None
    on_files: bool = False
    workers: int | None = None

    @property
    def pixels(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def megapixels(self) -> float:
        return self.pixels / 1e6

    @property
    def reference(self) -> str:
        return self.methods[0]

    @property
    def size(self) -> str:
        """The image, as the report names it: ``6000 x 4000 float32 (24.0 MP)``."""
        text = f"{self.shape[0]} x {self.shape[1]} float32 ({self.megapixels:.1f} MP"
        if self.on_files:
            text += f", {self.pixels * 4 / 2**30:.2f} GiB"
        return text + ")"

    def workers_for(self, workers: int) -> int:
        """The workers of tilewise's methods, given the suite's ``--workers``."""
        return self.workers or workers

    def tile_for(self, backend: str) -> tuple[int, int]:
        if backend == "threads" and self.strips is not None:
            return (self.strips, self.shape[1])
        return self.tile

    def image(self) -> np.ndarray:
        """The input of an in-memory workload: the same pixels in every process."""
        rng = np.random.default_rng(0)
        if self.name.startswith("slope"):
            # An elevation model in metres; its values matter to no method's speed.
            return (rng.random(self.shape, dtype=np.float32) * 100).astype(np.float32)
        return rng.random(self.shape, dtype=np.float32)


#: Keys of the methods each workload runs, the reference first; the second
#: tuple is the subset ``--quick`` runs.
BLOCKWISE = (
    "whole",
    "tilewise-serial",
    "tilewise-threads",
    "tilewise-processes",
    "tilewise-dask",
    "pool",
    "spawn",
    "shm-pool",
    "dask-threads",
    "dask-processes",
    "dask-distributed",
    "apply-parallel",
    "joblib",
)
# Quick runs keep every method in at least one workload, so that none breaks unseen.
BLOCKWISE_QUICK = (
    "whole",
    "tilewise-serial",
    "tilewise-threads",
    "tilewise-processes",
    "pool",
    "spawn",
    "shm-pool",
    "dask-threads",
    "dask-processes",
    "apply-parallel",
    "joblib",
)
GAUSSIAN_QUICK = tuple(m for m in BLOCKWISE_QUICK if m not in ("spawn", "dask-processes"))
SLOPE_PYTHON = tuple(m for m in BLOCKWISE if m != "tilewise-serial")
SLOPE_PYTHON_QUICK = (
    "whole",
    "tilewise-threads",
    "tilewise-processes",
    "tilewise-dask",
    "pool",
    "dask-distributed",
    "joblib",
)
SLOPE_PIXELWISE = (
    "numpy-slope",
    "pixelwise-call",
    "tilewise-threads",
    "tilewise-processes",
    "tilewise-dask",
    "numba-prange",
)
SLOPE_PIXELWISE_QUICK = tuple(m for m in SLOPE_PIXELWISE if m != "tilewise-dask")
FILE = (
    "whole-file",
    "tilewise-threads",
    "tilewise-processes",
    "tilewise-dask",
    "tilewise-zarr-threads",
    "dask-zarr-threads",
    "dask-zarr-distributed",
)
FILE_QUICK = tuple(m for m in FILE if m != "tilewise-dask")
OVERHEAD = (
    "whole",
    "tilewise-serial",
    "tilewise-threads",
    "tilewise-processes",
    "tilewise-dask",
    "pool",
    "dask-threads",
)
OVERHEAD_QUICK = ("whole", "tilewise-threads", "tilewise-processes", "dask-threads")
# The whole-array call is one sleep: the time 4 tiles take on 4 threads at best.
FIRST_WAVE = ("whole", "tilewise-threads-out", "tilewise-threads")

#: Workload names, in the report's order.
NAMES = ("square", "slope-python", "slope-pixelwise", "gaussian", "file", "overhead", "first-wave")


def file_side(gib: float) -> int:
    """The side of the square float32 image of ``gib`` GiB.

    >>> file_side(4.0)
    32768
    """
    return max(FILE_CHUNK // 4, int(math.sqrt(gib * 2**30 / 4)))


def make_workloads(quick: bool, file_gib: float) -> list[Workload]:
    """Every workload at the full size (the product's), or the quick one.

    >>> [w.name for w in make_workloads(quick=True, file_gib=0.03)] == list(NAMES)
    True
    """
    big = (1200, 800) if quick else (6000, 4000)
    slope_side = 256 if quick else 1024
    overhead_side = 1024 if quick else 2048  # 256 or 1024 tiles of 64 x 64
    side = file_side(file_gib)

    def pick(full: tuple[str, ...], subset: tuple[str, ...]) -> tuple[str, ...]:
        return subset if quick else full

    return [
        Workload(
            name="square",
            title="pixel square, memory-bound: np.square",
            shape=big,
            func=np.square,
            func_name="np.square",
            whole=np.square,
            whole_name="np.square(image)",
            halo=0,
            tile=(1024, 1024),
            strips=256,
            chunks=(1500, big[1]),
            blocks=64,
            methods=pick(BLOCKWISE, BLOCKWISE_QUICK),
        ),
        Workload(
            name="slope-python",
            title="per-pixel slope in pure Python, compute-bound: a 3x3 double loop",
            shape=(slope_side, slope_side),
            func=slope_loop,
            func_name="slope_loop",
            whole=whole_slope_loop,
            whole_name="the double loop over the padded image",
            halo=1,
            tile=(slope_side // 8, slope_side // 8),
            chunks=(slope_side // 4, slope_side // 4),
            blocks=16,
            methods=pick(SLOPE_PYTHON, SLOPE_PYTHON_QUICK),
        ),
        Workload(
            name="slope-pixelwise",
            title="per-pixel slope compiled: the same function as a pixelwise kernel",
            shape=big,
            func=slope,
            func_name="tilewise.pixelwise(slope_at)",
            whole=numpy_slope,
            whole_name="numpy, vectorised",
            halo=1,
            tile=(512, 512),
            chunks=(1500, 2000),
            blocks=64,
            methods=pick(SLOPE_PIXELWISE, SLOPE_PIXELWISE_QUICK),
        ),
        Workload(
            name="gaussian",
            title=f"neighbourhood with halo: gaussian_filter(sigma={SIGMA}), halo {GAUSSIAN_HALO}",
            shape=big,
            func=gaussian,
            func_name=f"gaussian_filter(sigma={SIGMA})",
            whole=gaussian,
            whole_name=f"gaussian_filter(image, {SIGMA})",
            halo=GAUSSIAN_HALO,
            tile=(512, 512),
            chunks=(1500, 2000),
            blocks=64,
            methods=pick(BLOCKWISE, GAUSSIAN_QUICK),
        ),
        Workload(
            name="file",
            title="file to file: a 3x3 mean (uniform_filter), halo 1",
            shape=(side, side),
            func=mean3,
            func_name="uniform_filter(size=3)",
            whole=mean3,
            whole_name="np.load, uniform_filter, np.save",
            halo=1,
            tile=(FILE_CHUNK, FILE_CHUNK),
            chunks=(FILE_CHUNK, FILE_CHUNK),
            blocks=0,
            methods=pick(FILE, FILE_QUICK),
            on_files=True,
        ),
        Workload(
            name="overhead",
            title="per-tile overhead: np.square on tiles of 64 x 64",
            shape=(overhead_side, overhead_side),
            func=np.square,
            func_name="np.square",
            whole=np.square,
            whole_name="np.square(image)",
            halo=0,
            tile=(64, 64),
            chunks=(64, 64),
            blocks=(overhead_side // 64) ** 2,
            methods=pick(OVERHEAD, OVERHEAD_QUICK),
        ),
        # The same at both sizes: 4 tiles of 128 x 128, 2 s or so of runs.
        Workload(
            name="first-wave",
            title=f"the first wave: {FIRST_WAVE_WORKERS} tiles of {FIRST_WAVE_SECONDS:g} s "
            f"on {FIRST_WAVE_WORKERS} threads, default output against out=",
            shape=(256, 256),
            func=sleepy,
            func_name=f"sleepy (time.sleep({FIRST_WAVE_SECONDS:g}))",
            whole=sleepy,
            whole_name=f"one sleep of {FIRST_WAVE_SECONDS:g} s",
            halo=0,
            tile=(128, 128),
            chunks=(128, 128),
            blocks=4,
            methods=FIRST_WAVE,
            workers=FIRST_WAVE_WORKERS,
        ),
    ]


def generate_files(folder: Path, side: int) -> None:
    """The file workload's input, as ``in.npy`` and as Zarr ``in.zarr``, band by band.

    Written a band of chunks at a time, so making a file bigger than memory
    needs little memory.
    """
    import zarr

    npy = np.lib.format.open_memmap(folder / "in.npy", "w+", np.float32, (side, side))
    store = zarr.create_array(
        store=str(folder / "in.zarr"),
        shape=(side, side),
        chunks=(FILE_CHUNK, FILE_CHUNK),
        dtype="f4",
    )
    rng = np.random.default_rng(0)
    for start in range(0, side, FILE_CHUNK):
        band = rng.random((min(FILE_CHUNK, side - start), side), dtype=np.float32)
        npy[start : start + len(band)] = band
        store[start : start + len(band)] = band
    npy.flush()
    del npy


def check_window(side: int) -> tuple[slice, slice]:
    """A window of the file workload's output that crosses tile edges, to check.

    >>> check_window(4096)
    (slice(1748, 2348, None), slice(1748, 2348, None))
    """
    middle = max(FILE_CHUNK, side // 2 // FILE_CHUNK * FILE_CHUNK) if side > FILE_CHUNK else 0
    start = max(0, middle - 300)
    stop = min(side, middle + 300)
    return slice(start, stop), slice(start, stop)


def expected_window(folder: Path, side: int) -> np.ndarray:
    """The 3x3 mean over :func:`check_window`, from the input, scipy's edges included."""
    rows, cols = check_window(side)
    image = np.load(folder / "in.npy", mmap_mode="r")
    top, left = max(0, rows.start - 1), max(0, cols.start - 1)
    block = np.array(image[top : rows.stop + 1, left : cols.stop + 1])
    filtered = mean3(block)
    return filtered[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
