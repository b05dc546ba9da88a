"""Pixelwise kernels against vectorised numpy references, compiled and as Python loops."""

from __future__ import annotations

import importlib.util
import math
import multiprocessing
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

import tilewise
from tilewise import ArgumentError, ArgumentTypeError, demo
from tilewise._kernel import default_backend
from tilewise._pixelwise import Pixelwise

#: scipy.ndimage's mode names, as numpy.pad spells them.
NUMPY_PAD = {
    "reflect": "symmetric",
    "mirror": "reflect",
    "nearest": "edge",
    "wrap": "wrap",
    "constant": "constant",
}
CVAL = 3.5


# --- kernels defined here: a radius-0 kernel and two values per pixel ----------------


@tilewise.pixelwise(radius=0)
def root_abs(z, y, x):
    return math.sqrt(abs(z[y, x])) - 1.0


@tilewise.pixelwise(radius=1, outputs=2)
def gradient(z, y, x):
    return (z[y, x + 1] - z[y, x - 1]) / 2, (z[y + 1, x] - z[y - 1, x]) / 2


def python_helper(value):
    return value + 1.0


@tilewise.pixelwise(radius=0)
def calls_python(z, y, x):
    return python_helper(z[y, x])  # an ordinary Python function: numba cannot call it


# --- independent references: vectorised numpy over an explicitly padded image --------


def padded(image: np.ndarray, boundary: str, cval: float = CVAL, radius: int = 1) -> np.ndarray:
    extra = {"constant_values": cval} if boundary == "constant" else {}
    return np.pad(image.astype(np.float64), radius, mode=NUMPY_PAD[boundary], **extra)


def gradients(image: np.ndarray, boundary: str, cell: float = 1.0) -> tuple[np.ndarray, ...]:
    p = padded(image, boundary)
    east = (p[1:-1, 2:] - p[1:-1, :-2]) / (2 * cell)
    south = (p[2:, 1:-1] - p[:-2, 1:-1]) / (2 * cell)
    return east, south


def slope_reference(image: np.ndarray, boundary: str) -> np.ndarray:
    east, south = gradients(image, boundary, demo.CELL_SIZE)
    return np.degrees(np.arctan(np.hypot(east, south)))


def aspect_reference(image: np.ndarray, boundary: str) -> np.ndarray:
    east, south = gradients(image, boundary, demo.CELL_SIZE)
    return np.degrees(np.arctan2(-east, south)) % 360


def hillshade_reference(image: np.ndarray, boundary: str) -> np.ndarray:
    """The textbook form, with angles: cos(zenith) cos(slope) + sin sin cos(azimuth - aspect)."""
    east, south = gradients(image, boundary, demo.CELL_SIZE)
    steepness = np.arctan(np.hypot(east, south))
    facing = np.arctan2(-east, south)
    zenith, azimuth = np.radians(90 - demo.SUN_ALTITUDE), np.radians(demo.SUN_AZIMUTH)
    light = np.cos(zenith) * np.cos(steepness) + np.sin(zenith) * np.sin(steepness) * np.cos(
        azimuth - facing
    )
    return np.maximum(light, 0.0)


def root_abs_reference(image: np.ndarray, boundary: str) -> np.ndarray:
    return np.sqrt(np.abs(image.astype(np.float64))) - 1.0


def gradient_reference(image: np.ndarray, boundary: str) -> np.ndarray:
    return np.stack(gradients(image, boundary), axis=-1)


@dataclass(frozen=True)
class Case:
    kernel: Pixelwise
    reference: Callable[[np.ndarray, str], np.ndarray]
    tolerance: float  # absolute: the demo's kernels store float32
    angle: bool = False  # compare modulo 360 degrees

    def check(self, result: np.ndarray, image: np.ndarray, boundary: str) -> None:
        expected = self.reference(image, boundary)
        assert result.shape == expected.shape
        assert result.dtype == self.kernel.dtype
        difference = result.astype(np.float64) - expected
        if self.angle:
            difference = (difference + 180) % 360 - 180
        assert np.max(np.abs(difference)) <= self.tolerance


CASES = {
    "slope": Case(demo.slope, slope_reference, 1e-4),
    "aspect": Case(demo.aspect, aspect_reference, 1e-3, angle=True),
    "hillshade": Case(demo.hillshade, hillshade_reference, 1e-6),
    "radius 0": Case(root_abs, root_abs_reference, 1e-12),
    "outputs=2": Case(gradient, gradient_reference, 1e-12),
}
#: One boundary per case, so that together they cover every mode.
BOUNDARY = dict(zip(CASES, ["nearest", "mirror", "wrap", "reflect", "constant"], strict=True))


def as_python(kernel: Pixelwise) -> Pixelwise:
    return tilewise.pixelwise(
        radius=kernel.radius,
        dtype=kernel.dtype,
        outputs=kernel.outputs,
        boundary=kernel.boundary,
        cval=kernel.cval,
        compile=False,
    )(kernel.func)


@pytest.fixture(params=["compiled", "python"])
def compiled(request: pytest.FixtureRequest) -> bool:
    return request.param == "compiled"


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """Rough terrain-like values: slopes of all directions and steepnesses."""
    return np.random.default_rng(7).normal(0, 30, (29, 23))


def variant(case: Case, compiled: bool) -> Pixelwise:
    return case.kernel if compiled else as_python(case.kernel)


# --- results ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_whole_array_call_matches_reference(name: str, compiled: bool, image: np.ndarray) -> None:
    case = CASES[name]
    kernel = variant(case, compiled)
    case.check(kernel(image), image, kernel.boundary)


@pytest.mark.parametrize("name", CASES)
def test_map_tiles_matches_reference(
    name: str, compiled: bool, backend: str, image: np.ndarray
) -> None:
    case, boundary = CASES[name], BOUNDARY[name]
    kernel = variant(case, compiled)
    result = tilewise.map_tiles(
        kernel, image, tile=(8, 7), boundary=boundary, cval=CVAL, backend=backend, workers=2
    )
    case.check(result, image, boundary)


def test_compiled_equals_python_loop_for_float32(image: np.ndarray) -> None:
    dem = image.astype(np.float32)
    np.testing.assert_allclose(demo.slope(dem), as_python(demo.slope)(dem), rtol=1e-5, atol=1e-4)


def test_channels_are_readable() -> None:
    @tilewise.pixelwise(radius=0, dtype=np.float32)
    def luminance(z, y, x):
        return 0.25 * z[y, x, 0] + 0.5 * z[y, x, 1] + 0.25 * z[y, x, 2]

    rgb = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    expected = (rgb @ np.array([0.25, 0.5, 0.25])).astype(np.float32)
    np.testing.assert_allclose(luminance(rgb), expected, rtol=1e-6)
    np.testing.assert_allclose(as_python(luminance)(rgb), expected, rtol=1e-6)


def test_output_dtype_and_casting() -> None:
    @tilewise.pixelwise(radius=0, dtype=np.uint8)
    def double(z, y, x):
        return 2 * z[y, x]

    image = np.arange(12, dtype=np.int64).reshape(3, 4)
    result = double(image)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, 2 * image)
    assert tilewise.map_tiles(double, image, dtype=np.float32).dtype == np.float32


def test_halo_defaults_to_the_radius_and_may_be_larger(image: np.ndarray) -> None:
    default = tilewise.map_tiles(demo.slope, image, tile=5)
    larger = tilewise.map_tiles(demo.slope, image, tile=5, halo=(3, 2))
    np.testing.assert_array_equal(default, demo.slope(image))
    np.testing.assert_array_equal(larger, default)


def test_boundary_none_is_fine_for_radius_0(image: np.ndarray) -> None:
    result = tilewise.map_tiles(root_abs, image, tile=4, boundary="none")
    np.testing.assert_allclose(result, root_abs_reference(image, "none"))


def test_whole_array_call_reads_files_too(tmp_path: Path, image: np.ndarray) -> None:
    path = tmp_path / "dem.npy"
    np.save(path, image)
    np.testing.assert_array_equal(demo.slope(path), demo.slope(image))


@pytest.mark.parametrize("workers", [1, 3])
def test_whole_array_call_does_not_depend_on_workers(workers: int, image: np.ndarray) -> None:
    np.testing.assert_array_equal(demo.aspect(image, workers=workers), demo.aspect(image))


def test_whole_array_call_checks_its_arguments(image: np.ndarray) -> None:
    with pytest.raises(ArgumentError, match="workers=0"):
        demo.slope(image, workers=0)
    with pytest.raises(ArgumentError, match="object"):
        demo.slope(image.astype(object))


def test_the_loop_never_runs_without_context(image: np.ndarray) -> None:
    # The compiled loop reads without index checks: the caller must refuse.
    with pytest.raises(ValueError, match="radius=1"):
        demo.slope.compute(image, (0, 1), (5, 5))
    with pytest.raises(ValueError, match="radius=1"):
        demo.slope.compute(image, (1, 1), (image.shape[0] - 1, 5))


# --- compiling -------------------------------------------------------------------------


def test_one_compilation_serves_every_layout(image: np.ndarray) -> None:
    kernel = tilewise.pixelwise(radius=1)(demo.slope.func)
    expected = kernel(image)
    read_only = image.copy()
    read_only.flags.writeable = False
    for layout in (np.asfortranarray(image), image[::1, :], read_only):
        np.testing.assert_array_equal(kernel(layout), expected)
    strided = np.repeat(image, 2, axis=1)[:, ::2]
    np.testing.assert_array_equal(kernel(strided), expected)
    loop = kernel.loop_for(image.dtype, image.shape)
    assert len(loop.signatures) == 1
    assert loop.targetoptions["nogil"] is True  # threads run tiles truly in parallel


def test_concurrent_first_calls_compile_once(image: np.ndarray) -> None:
    kernel = tilewise.pixelwise(radius=1)(demo.aspect.func)
    start = threading.Barrier(4)
    results: list[np.ndarray] = []

    def call() -> None:
        start.wait()
        results.append(kernel(image, workers=1))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert all(np.array_equal(result, results[0]) for result in results)
    assert len(kernel.loop_for(image.dtype, image.shape).signatures) == 1


def test_uncompilable_function_says_why_and_how_to_fall_back(image: np.ndarray) -> None:
    with pytest.raises(ArgumentError) as caught:
        calls_python(image)
    message = str(caught.value)
    assert "'calls_python'" in message
    assert "test_pixelwise.py" in message
    assert "python_helper" in message  # numba's reason
    assert "compile=False" in message
    # The error comes from the call, before any tile runs, not as a TileError.
    with pytest.raises(ArgumentError, match="calls_python"):
        tilewise.map_tiles(calls_python, image, backend="serial")
    np.testing.assert_array_equal(as_python(calls_python)(image), image + 1.0)


@pytest.mark.parametrize(
    ("outputs", "returns", "complaint"),
    [
        (2, "z[y, x], z[y, x], z[y, x]", "outputs=2"),
        (2, "z[y, x]", "outputs=2"),
        (1, "z[y, x], z[y, x]", "outputs=1"),
        (1, "z[y - 1 : y + 2, x - 1 : x + 2]", r"returns an array \(.*\) for one pixel"),
        (1, "None", r"returns nothing \(None\)"),
    ],
)
def test_a_wrong_return_value_is_a_compile_error_saying_what_is_wrong(
    outputs: int, returns: str, complaint: str
) -> None:
    namespace: dict[str, object] = {}
    exec(f"def wrong(z, y, x):\n    return {returns}\n", namespace)
    kernel = tilewise.pixelwise(radius=1, outputs=outputs)(namespace["wrong"])
    with pytest.raises(ArgumentError, match=complaint):
        kernel(np.zeros((2, 2)))


def test_missing_numba_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = tilewise.pixelwise(radius=0)(root_abs.func)
    monkeypatch.setitem(sys.modules, "numba", None)
    with pytest.raises(ModuleNotFoundError, match=r'pip install "tilewise\[compile\]"'):
        kernel(np.ones((2, 2)))


@pytest.mark.slow
def test_compiled_loop_is_cached_on_disk_for_the_next_process(tmp_path: Path) -> None:
    script = (
        "import numpy as np\n"
        "from tilewise import demo\n"
        "loop = demo.slope.loop_for(np.dtype('float32'), (3, 3))\n"
        "print(sum(loop.stats.cache_hits.values()))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def hits() -> int:
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        return int(done.stdout)

    assert hits() == 0
    assert hits() == 1


@pytest.mark.slow
def test_kernel_defined_in_main_compiles_and_runs() -> None:
    # A notebook or `python -c` has no source file for numba's cache to sit beside.
    script = (
        "import math, numpy as np, tilewise\n"
        "@tilewise.pixelwise(radius=1)\n"
        "def laplace(z, y, x):\n"
        "    return z[y - 1, x] + z[y + 1, x] + z[y, x - 1] + z[y, x + 1] - 4 * z[y, x]\n"
        "image = np.arange(30.0).reshape(5, 6) ** 2\n"
        "print(laplace(image)[2, 2], tilewise.map_tiles(laplace, image, tile=2)[2, 2])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["74.0", "74.0"]  # (6 row + col)^2: 2 * 6^2 + 2


# --- arguments -------------------------------------------------------------------------


def test_halo_smaller_than_radius_is_an_argument_error(image: np.ndarray) -> None:
    with pytest.raises(ArgumentError, match=r"halo=\(1, 0\).*radius=1"):
        tilewise.map_tiles(demo.slope, image, halo=(1, 0))
    with pytest.raises(ArgumentError, match="halo"):
        tilewise.map_tiles(demo.slope, image, halo=0)


def test_boundary_none_with_a_radius_is_an_argument_error(image: np.ndarray) -> None:
    with pytest.raises(ArgumentError, match="boundary='none'"):
        tilewise.map_tiles(demo.slope, image, boundary="none")


def test_pass_tile_is_an_argument_error(image: np.ndarray) -> None:
    with pytest.raises(ArgumentError, match="pass_tile"):
        tilewise.map_tiles(demo.slope, image, pass_tile=True)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"radius": -1}, ArgumentError, "radius=-1"),
        ({"radius": 1.5}, ArgumentTypeError, "radius=1.5"),
        ({"radius": 1, "outputs": 0}, ArgumentError, "outputs=0"),
        ({"radius": 1, "boundary": "none"}, ArgumentError, "boundary='none'"),
        ({"radius": 1, "dtype": object}, ArgumentError, "dtype="),
        ({"radius": 1, "cval": "zero"}, ArgumentTypeError, "cval='zero'"),
        ({"radius": 1, "compile": "yes"}, ArgumentTypeError, "compile='yes'"),
    ],
)
def test_bad_decorator_arguments(arguments: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        tilewise.pixelwise(**arguments)


def test_decorating_something_not_callable() -> None:
    with pytest.raises(ArgumentTypeError, match="f\\(z, y, x\\)"):
        tilewise.pixelwise(radius=0)(42)


def test_default_backend_is_threads_only_when_compiled() -> None:
    assert default_backend(demo.slope) == "threads"
    assert default_backend(as_python(demo.slope)) == "processes"


def test_kernel_looks_like_its_function() -> None:
    assert demo.slope.__name__ == "slope"
    assert demo.slope.__module__ == "tilewise.demo"
    assert "degrees" in (demo.slope.__doc__ or "")
    assert "radius=1" in repr(demo.slope)


# --- pickling --------------------------------------------------------------------------


def test_module_level_kernel_pickles_by_reference() -> None:
    data = pickle.dumps(demo.slope)
    assert pickle.loads(data) is demo.slope
    assert len(data) < 100  # a name, not the function's code


def test_kernel_of_a_module_outside_sys_path_pickles_by_value(
    tmp_path: Path, image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As pytest's importlib mode or runpy load a module: a fresh interpreter
    # could not import it by name, so the kernel must travel by value.
    source = tmp_path / "outside_kernels.py"
    source.write_text(
        "import tilewise\n"
        "@tilewise.pixelwise(radius=1, outputs=2)\n"
        "def grad(z, y, x):\n"
        "    return (z[y, x + 1] - z[y, x - 1]) / 2, (z[y + 1, x] - z[y - 1, x]) / 2\n"
    )
    spec = importlib.util.spec_from_file_location("outside_kernels", source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "outside_kernels", module)
    spec.loader.exec_module(module)
    data = cloudpickle.dumps(module.grad)
    monkeypatch.delitem(sys.modules, "outside_kernels")  # as in a worker process
    clone = cloudpickle.loads(data)
    assert (clone.radius, clone.outputs) == (1, 2)
    np.testing.assert_array_equal(clone(image), gradient_reference(image, "reflect"))


def test_local_kernel_pickles_by_value_and_keeps_its_settings(image: np.ndarray) -> None:
    kernel = tilewise.pixelwise(radius=1, dtype=np.float32, boundary="wrap", cval=2.0)(
        demo.slope.func
    )
    clone = cloudpickle.loads(cloudpickle.dumps(kernel))
    assert clone is not kernel
    settings = ("radius", "dtype", "outputs", "boundary", "cval", "compile")
    assert [getattr(clone, s) for s in settings] == [getattr(kernel, s) for s in settings]
    np.testing.assert_array_equal(clone(image), kernel(image))


@pytest.mark.slow
@pytest.mark.parametrize("start_method", multiprocessing.get_all_start_methods())
def test_every_start_method(start_method: str, image: np.ndarray) -> None:
    for kernel, reference, boundary in [
        (demo.slope, slope_reference, "reflect"),  # by reference
        (gradient, gradient_reference, "nearest"),  # by value
    ]:
        result = tilewise.map_tiles(
            kernel,
            image,
            tile=(10, 9),
            boundary=boundary,
            backend="processes",
            start_method=start_method,
            workers=2,
        )
        np.testing.assert_allclose(result, reference(image, boundary), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("define", ["def f(z): return z", "def f(v, t, z, y, x): return v[z, y]"])
def test_a_kernel_of_the_wrong_signature_is_named_when_decorated(define: str) -> None:
    namespace: dict[str, object] = {}
    exec(define, namespace)
    with pytest.raises(
        ArgumentError, match=r"pixelwise kernel 'f' takes \(.*\), expected f\(z, y, x\)"
    ):
        tilewise.pixelwise(radius=1)(namespace["f"])  # type: ignore[arg-type]
