"""Bad arguments fail before any tile runs; failures in tiles name the tile."""

from __future__ import annotations

import pickle
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tilewise
from tilewise import ArgumentError, ArgumentTypeError, Grid, Tile, TileError

IMAGE = (np.arange(20 * 30) % 251).astype(np.uint8).reshape(20, 30)


class Recorder:
    """A func that notes every call in a file, so calls in any thread or process count."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, block: np.ndarray, tile: Tile | None = None) -> np.ndarray:
        with self.path.open("a") as notes:
            notes.write("called\n")
        return block

    @property
    def calls(self) -> int:
        return len(self.path.read_text().splitlines()) if self.path.exists() else 0


read_only_out = np.zeros((20, 30))
read_only_out.flags.writeable = False
image_for_sharing = np.zeros((20, 30))

#: (arguments that differ from a valid call, exception, fragments the message must hold)
BAD_ARGUMENTS: list[tuple[str, dict[str, Any], type[Exception], list[str]]] = [
    ("func-int", {"func": 42}, ArgumentTypeError, ["func=42", "callable"]),
    ("func-none", {"func": None}, ArgumentTypeError, ["func=None"]),
    ("image-list", {"image": [[1, 2], [3, 4]]}, ArgumentTypeError, ["image=[[1, 2], [3, 4]]"]),
    ("image-1d", {"image": np.arange(5)}, ArgumentError, ["image", "(5,)"]),
    (
        "image-fewer-axes-than-tiled",
        {"image": np.zeros((2, 3, 4, 5)), "tile": (1, 1, 1, 1, 1)},
        ArgumentError,
        ["tile=(1, 1, 1, 1, 1)", "5 axes", "(2, 3, 4, 5)"],
    ),
    ("image-empty", {"image": np.zeros((0, 5))}, ArgumentError, ["image", "(0, 5)"]),
    ("image-empty-cols", {"image": np.zeros((4, 0, 3))}, ArgumentError, ["image", "(4, 0, 3)"]),
    ("image-object", {"image": np.empty((3, 3), object)}, ArgumentError, ["image", "object"]),
    ("tile-0", {"tile": 0}, ArgumentError, ["tile=0", "positive"]),
    ("tile-negative", {"tile": -4}, ArgumentError, ["tile=-4"]),
    ("tile-pair-0", {"tile": (0, 5)}, ArgumentError, ["tile=(0, 5)"]),
    ("tile-float", {"tile": 1.5}, ArgumentTypeError, ["tile=1.5"]),
    ("tile-str", {"tile": "a"}, ArgumentTypeError, ["tile='a'"]),
    ("tile-triple", {"tile": (1, 2, 3)}, ArgumentError, ["tile=(1, 2, 3)", "3 axes", "(20, 30)"]),
    ("tile-single", {"tile": (4,)}, ArgumentTypeError, ["tile=(4,)", "one per tiled axis"]),
    (
        "halo-shorter-than-tile",
        {"image": np.zeros((4, 20, 30)), "tile": (2, 8, 8), "halo": (1, 1)},
        ArgumentError,
        ["halo=(1, 1)", "2 values", "3 axes"],
    ),
    (
        "halo-longer-than-int-tile",
        {"image": np.zeros((4, 20, 30)), "halo": (1, 1, 1)},
        ArgumentError,
        ["halo=(1, 1, 1)", "tile=(8, 8, 8)"],
    ),
    (
        "boundary-per-axis-count",
        {"boundary": ("wrap", "reflect", "reflect")},
        ArgumentError,
        ["boundary=('wrap', 'reflect', 'reflect')", "3 modes for 2 tiled axes"],
    ),
    (
        "boundary-per-axis-unknown",
        {"boundary": ("wrap", "symmetric")},
        ArgumentError,
        ["'symmetric'", "'reflect'"],
    ),
    ("tile-bool", {"tile": True}, ArgumentTypeError, ["tile=True"]),
    ("tile-pair-float", {"tile": (4, 2.0)}, ArgumentTypeError, ["tile=(4, 2.0)"]),
    ("halo-negative", {"halo": -1}, ArgumentError, ["halo=-1"]),
    ("halo-pair-negative", {"halo": (1, -1)}, ArgumentError, ["halo=(1, -1)"]),
    ("boundary-foo", {"boundary": "foo"}, ArgumentError, ["boundary='foo'", "'reflect'"]),
    ("boundary-numpy-name", {"boundary": "symmetric"}, ArgumentError, ["boundary='symmetric'"]),
    ("cval-str", {"cval": "a"}, ArgumentTypeError, ["cval='a'"]),
    ("cval-bool", {"cval": True}, ArgumentTypeError, ["cval=True"]),
    (
        "cval-too-big",
        {"cval": 300, "boundary": "constant"},
        ArgumentError,
        ["cval=300", "uint8"],
    ),
    ("cval-negative", {"cval": -1, "boundary": "constant"}, ArgumentError, ["cval=-1", "uint8"]),
    ("cval-fraction", {"cval": 0.5, "boundary": "constant"}, ArgumentError, ["cval=0.5", "uint8"]),
    ("cval-nan", {"cval": float("nan"), "boundary": "constant"}, ArgumentError, ["cval=nan"]),
    (
        "cval-overflows-float32",
        {"cval": 1e300, "boundary": "constant", "image": np.zeros((4, 4), np.float32)},
        ArgumentError,
        ["cval=1e+300", "float32", "inf"],
    ),
    ("dtype-nonsense", {"dtype": "nonsense"}, ArgumentTypeError, ["dtype='nonsense'"]),
    ("dtype-object", {"dtype": object}, ArgumentError, ["dtype=<class 'object'>"]),
    ("workers-0", {"workers": 0}, ArgumentError, ["workers=0"]),
    ("workers-negative", {"workers": -1}, ArgumentError, ["workers=-1"]),
    ("workers-float", {"workers": 2.0}, ArgumentTypeError, ["workers=2.0"]),
    ("workers-bool", {"workers": True}, ArgumentTypeError, ["workers=True"]),
    ("backend-gpu", {"backend": "gpu"}, ArgumentError, ["backend='gpu'", "'threads'"]),
    ("pass_tile-int", {"pass_tile": 1}, ArgumentTypeError, ["pass_tile=1"]),
    ("pass_tile-str", {"pass_tile": "yes"}, ArgumentTypeError, ["pass_tile='yes'"]),
    ("progress-str", {"progress": "yes"}, ArgumentTypeError, ["progress='yes'"]),
    ("progress-none", {"progress": None}, ArgumentTypeError, ["progress=None"]),
    ("out-list", {"out": [[0.0] * 30] * 20}, ArgumentTypeError, ["out="]),
    ("out-shape", {"out": np.zeros((20, 31))}, ArgumentError, ["out", "(20, 31)", "(20, 30)"]),
    ("out-1d", {"out": np.zeros(600)}, ArgumentError, ["out", "(600,)"]),
    ("out-read-only", {"out": read_only_out}, ArgumentError, ["out", "read-only"]),
    (
        "out-is-image",
        {"image": image_for_sharing, "out": image_for_sharing},
        ArgumentError,
        ["out", "shares memory"],
    ),
    (
        "out-view-of-image",
        {"image": image_for_sharing, "out": image_for_sharing[:, ::-1]},
        ArgumentError,
        ["out", "shares memory"],
    ),
]


@pytest.mark.parametrize(
    ("changes", "error", "fragments"),
    [pytest.param(c, e, f, id=name) for name, c, e, f in BAD_ARGUMENTS],
)
def test_bad_argument_fails_before_any_tile(
    backend: str,
    tmp_path: Path,
    changes: dict[str, Any],
    error: type[Exception],
    fragments: list[str],
) -> None:
    func = Recorder(tmp_path / "calls")
    arguments: dict[str, Any] = {"func": func, "image": IMAGE, "backend": backend, "tile": 8}
    arguments.update(changes)
    with pytest.raises(error) as caught:
        tilewise.map_tiles(arguments.pop("func"), arguments.pop("image"), **arguments)
    # Users' own `except ValueError` / `except TypeError` keep working.
    builtin = ValueError if error is ArgumentError else TypeError
    assert isinstance(caught.value, builtin)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message
    assert func.calls == 0


@pytest.mark.parametrize(
    "changes",
    [
        {"cval": 300},  # not stored anywhere unless boundary="constant"
        {"cval": 255, "boundary": "constant"},
        {"tile": np.int64(5), "halo": [np.int32(1), 2]},
        {"tile": (1000, 1), "halo": (0, 40)},
        {"dtype": "float32", "workers": 1},
        {"boundary": "none", "pass_tile": np.True_},
    ],
)
def test_good_arguments_are_accepted(backend: str, tmp_path: Path, changes: dict[str, Any]) -> None:
    func = Recorder(tmp_path / "calls")
    got = tilewise.map_tiles(func, IMAGE, backend=backend, **changes)
    assert func.calls > 0
    assert np.array_equal(got, IMAGE)


@pytest.mark.parametrize(
    ("dtype", "cval"),
    [
        # A float image rounds cval to its precision, however cval is spelled.
        ("float32", 0.1),
        ("float32", np.float64(0.1)),
        ("float16", np.float32(0.1)),
        ("float32", -np.inf),
        # Integers are kept exactly, beyond the 2**53 a float holds.
        ("int64", 2**53 + 1),
        ("uint64", 2**64 - 1),
        ("uint8", np.int64(255)),
        ("bool", 1),
    ],
)
def test_cval_is_padded_as_the_image_stores_it(backend: str, dtype: str, cval: Any) -> None:
    image = np.zeros((4, 4), dtype)
    corner = tilewise.map_tiles(
        lambda b: np.full((2, 2), b[0, 0]), image,
        tile=2, halo=1, boundary="constant", cval=cval, backend=backend,
    )  # fmt: skip
    assert corner.dtype == image.dtype
    assert corner[0, 0] == np.array(cval).astype(dtype)


def test_cval_nan_is_fine_for_floats(backend: str) -> None:
    image = np.ones((4, 5))
    got = tilewise.map_tiles(
        lambda b: b[:-2, 1:-1] + b[2:, 1:-1] + b[1:-1, :-2] + b[1:-1, 2:], image,
        tile=2, halo=1, boundary="constant", cval=np.nan, backend=backend,
    )  # fmt: skip
    border = np.ones(image.shape, bool)
    border[1:-1, 1:-1] = False
    assert np.isnan(got[border]).all()
    assert (got[~border] == 4).all()


# --- failures inside tiles -------------------------------------------------------------

GRID = Grid(shape=(20, 30), tile=(8, 8), halo=(2, 2))
FAILING = GRID.tile_at((1, 2))  # an interior tile, not the first one computed
FIRST = GRID.tile_at((0, 0))


@pytest.mark.parametrize("failing", [FIRST, FAILING], ids=["first-tile", "later-tile"])
def test_wrong_shape_names_tile_and_shapes(backend: str, failing: Tile) -> None:
    def func(block: np.ndarray, tile: Tile) -> np.ndarray:
        return block[:3, :5] if tile.index == failing.index else block

    with pytest.raises(TileError) as caught:
        tilewise.map_tiles(func, IMAGE, tile=8, halo=2, pass_tile=True, backend=backend)
    message = str(caught.value)
    assert caught.value.tile == failing
    assert failing.describe() in message
    assert "(3, 5)" in message
    assert str(failing.core_shape) in message
    assert str(failing.block_shape) in message


def test_scalar_result_is_a_wrong_shape(backend: str) -> None:
    # Only one tile fails: tiles of the first wave that all fail race to be reported.
    def sum_on_one(block: np.ndarray, tile: Tile) -> np.ndarray:
        return np.sum(block) if tile.index == (0, 0) else block

    with pytest.raises(TileError, match=r"tile \(0, 0\).*shape \(\)"):
        tilewise.map_tiles(sum_on_one, IMAGE, tile=8, pass_tile=True, backend=backend)


def test_inconsistent_extra_dimensions(backend: str) -> None:
    def func(block: np.ndarray, tile: Tile) -> np.ndarray:
        bands = 4 if tile.index == FAILING.index else 3
        return np.repeat(block[..., None], bands, axis=-1)

    with pytest.raises(TileError) as caught:
        tilewise.map_tiles(func, IMAGE, tile=8, halo=2, pass_tile=True, backend=backend)
    assert caught.value.tile == FAILING
    message = str(caught.value)
    assert FAILING.describe() in message
    assert "(4,)" in message
    assert "(3,)" in message


def test_extra_dimensions_must_match_out(backend: str) -> None:
    out = np.zeros((20, 30, 3))
    with pytest.raises(TileError, match=r"extra dimensions \(\).*\(3,\)"):
        tilewise.map_tiles(lambda b: b, IMAGE, tile=8, out=out, backend=backend)


class BoomError(RuntimeError):
    pass


@pytest.mark.parametrize("failing", [FIRST, FAILING], ids=["first-tile", "later-tile"])
def test_exception_in_func_is_chained(backend: str, failing: Tile) -> None:
    def func(block: np.ndarray, tile: Tile) -> np.ndarray:
        if tile.index == failing.index:
            raise BoomError("no luck")
        return block

    with pytest.raises(TileError) as caught:
        tilewise.map_tiles(func, IMAGE, tile=8, halo=2, pass_tile=True, backend=backend)
    error = caught.value
    assert error.tile == failing
    assert failing.describe() in str(error)
    assert "BoomError: no luck" in str(error)
    assert isinstance(error.__cause__, BoomError)
    assert error.__cause__.args == ("no luck",)
    # The traceback shown to the user reaches the frame of func that raised.
    shown = "".join(traceback.format_exception(error))
    assert ", in func\n" in shown


@pytest.mark.parametrize("error_type", [TileError, tilewise.TileTimeoutError])
def test_tile_error_pickles_with_its_tile(error_type: type[TileError]) -> None:
    error = error_type(FAILING, "func raised BoomError: no luck")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is error_type
    assert copy.tile == FAILING
    assert str(copy) == str(error) == f"{FAILING.describe()}: func raised BoomError: no luck"


def test_raised_tile_error_pickles(backend: str) -> None:
    def short_on_one(block: np.ndarray, tile: Tile) -> np.ndarray:
        return block[:1] if tile.index == (0, 0) else block

    with pytest.raises(TileError) as caught:
        tilewise.map_tiles(short_on_one, IMAGE, tile=8, pass_tile=True, backend=backend)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert copy.tile == caught.value.tile == Grid(shape=(20, 30), tile=(8, 8)).tile_at((0, 0))
    assert str(copy) == str(caught.value)
