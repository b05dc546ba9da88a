"""Bad input of every kind is refused before any tile runs, naming what is wrong, leaving nothing.

The arguments of ``map_tiles`` that tiling itself takes (tile, halo, boundary,
cval, dtype, workers, backend, out arrays) are in ``test_validation.py`` on
every backend, those of ``@pixelwise`` in ``test_pixelwise.py``, the casting
rule against ``numpy.can_cast`` in ``test_casting.py``. Here: the rest of
``map_tiles``, files that cannot be read, and ``tilewise apply`` and
``tilewise info`` as a shell user meets them, each in a fresh process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tilewise
from tests.commands import tilewise_command
from tilewise import ArgumentError, ArgumentTypeError

IMAGE = np.random.default_rng(3).random((20, 30)).astype(np.float32)
BYTES = (IMAGE * 200).astype(np.uint8)

FUNCTIONS = '''
def ident(block):
    """Notes each call in calls.txt, beside this file, so calls in any process count."""
    import pathlib
    with (pathlib.Path(__file__).parent / "calls.txt").open("a") as calls:
        calls.write("called\\n")
    return block
'''


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A working folder: a good image, broken files, and a function that notes its calls."""
    np.save(tmp_path / "img.npy", IMAGE)
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "img.npy").read_bytes()[:300])
    (tmp_path / "text.tif").write_text("not a tiff")
    (tmp_path / "empty.zarr").mkdir()
    (tmp_path / "functions.py").write_text(FUNCTIONS)
    return tmp_path


#: What the folder holds before a call; a call that was refused leaves it so.
FILES = {"img.npy", "empty.npy", "trunc.npy", "text.tif", "empty.zarr", "functions.py"}


class Calls:
    """A func that notes each call in a file, so calls in any thread or process count."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, block: np.ndarray) -> np.ndarray:
        with self.path.open("a") as calls:
            calls.write("called\n")
        return block


#: (id, map_tiles arguments beyond func, image and tile=8, error, fragments of its message)
BAD_CALLS: list[tuple[str, dict[str, Any], type[Exception], list[str]]] = [
    ("casting-word", {"casting": "sometimes"}, ArgumentError, ["casting='sometimes'", "'unsafe'"]),
    ("casting-int", {"casting": 3}, ArgumentError, ["casting=3"]),
    ("nodata-word", {"nodata": "abc"}, ArgumentTypeError, ["nodata='abc'", "'input'"]),
    ("nodata-nan-int", {"nodata": float("nan"), "image": BYTES}, ArgumentError, ["nodata=nan"]),
    ("nodata-beyond-int", {"nodata": 300, "image": BYTES}, ArgumentError, ["nodata=300", "uint8"]),
    ("out_nodata-word", {"out_nodata": "x"}, ArgumentTypeError, ["out_nodata='x'"]),
    ("metadata-word", {"metadata": "no"}, ArgumentTypeError, ["metadata='no'"]),
    (
        "compression-unknown",
        {"compression": "zip", "out": "o.tif"},
        ArgumentError,
        ["compression='zip'", "'zstd'"],
    ),
    ("compression-npy", {"compression": "zstd", "out": "o.npy"}, ArgumentError, ["o.npy", ".tif"]),
    ("compression-array", {"compression": "zstd"}, ArgumentError, ["compression='zstd'", ".tif"]),
    ("level-alone", {"level": 3, "out": "o.tif"}, ArgumentError, ["level=3", "compression="]),
    (
        "level-beyond",
        {"compression": "zstd", "level": 99, "out": "o.tif"},
        ArgumentError,
        ["level=99", "1 to 22"],
    ),
    ("cog-npy", {"cog": True, "out": "o.npy"}, ArgumentError, ["cog=True", "o.npy"]),
    ("cog-word", {"cog": "yes", "out": "o.tif"}, ArgumentTypeError, ["cog='yes'"]),
    (
        "overview_resampling-unknown",
        {"cog": True, "overview_resampling": "fancy", "out": "o.tif"},
        ArgumentError,
        ["overview_resampling='fancy'", "'average'"],
    ),
    ("start_method-unknown", {"start_method": "fly"}, ArgumentError, ["start_method='fly'"]),
    ("retries-negative", {"retries": -1}, ArgumentError, ["retries=-1"]),
    ("retries-fraction", {"retries": 1.5}, ArgumentTypeError, ["retries=1.5"]),
    ("timeout-0", {"timeout": 0}, ArgumentError, ["timeout=0"]),
    ("timeout-word", {"timeout": "1s"}, ArgumentTypeError, ["timeout='1s'"]),
    ("resume-array", {"resume": True}, ArgumentError, ["resume=True", "out="]),
    ("resume-word", {"resume": "yes", "out": "o.npy"}, ArgumentTypeError, ["resume='yes'"]),
    ("client-on-threads", {"client": object(), "backend": "threads"}, ArgumentError, ["client="]),
    ("scheduler-no-address", {"scheduler": "nowhere"}, ArgumentError, ["scheduler='nowhere'"]),
    (
        "scheduler-on-threads",
        {"scheduler": "tcp://127.0.0.1:1", "backend": "threads"},
        ArgumentError,
        ["scheduler='tcp://127.0.0.1:1'", "backend='threads'"],
    ),
    ("out-unknown-format", {"out": "o.h5"}, ArgumentError, ["out='o.h5'", ".npy"]),
    ("out-no-folder", {"out": "nowhere/o.npy"}, ArgumentError, ["out='nowhere/o.npy'", "folder"]),
    ("image-empty-npy", {"image": "empty.npy"}, ArgumentError, ["image='empty.npy'", "empty"]),
    ("image-cut-npy", {"image": "trunc.npy"}, ArgumentError, ["image='trunc.npy'", "300 bytes"]),
    ("image-not-tiff", {"image": "text.tif"}, ArgumentError, ["image='text.tif'", "TIFF"]),
    ("image-not-zarr", {"image": "empty.zarr"}, ArgumentError, ["image='empty.zarr'", "Zarr"]),
    ("image-missing", {"image": "missing.npy"}, FileNotFoundError, ["image='missing.npy'"]),
]


@pytest.mark.parametrize(
    ("changes", "error", "fragments"),
    [pytest.param(c, e, f, id=name) for name, c, e, f in BAD_CALLS],
)
def test_a_bad_call_is_refused_before_any_tile_and_leaves_nothing(
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    changes: dict[str, Any],
    error: type[Exception],
    fragments: list[str],
) -> None:
    monkeypatch.chdir(folder)
    arguments = {"image": IMAGE, "tile": 8, "backend": "processes", **changes}
    with pytest.raises(error) as caught:
        tilewise.map_tiles(Calls(folder / "calls.txt"), arguments.pop("image"), **arguments)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert {p.name for p in folder.iterdir()} == FILES  # no output, lock, partial


APPLY = ["apply", "functions.py:ident", "img.npy"]

#: (id, command line, exit code, a fragment of its one line on stderr)
BAD_COMMANDS: list[tuple[str, list[str], int, str]] = [
    ("compress-npy", [*APPLY, "o.npy", "--compress", "zstd"], 1, "only for a .tif"),
    ("compress-unknown", [*APPLY, "o.tif", "--compress", "zip"], 2, "--compress"),
    ("level-alone", [*APPLY, "o.tif", "--level", "3"], 1, "level=3"),
    ("level-beyond", [*APPLY, "o.tif", "--compress", "zstd", "--level", "99"], 1, "1 to 22"),
    ("level-word", [*APPLY, "o.tif", "--compress", "zstd", "--level", "hi"], 2, "--level"),
    ("cog-npy", [*APPLY, "o.npy", "--cog"], 1, "cog=True"),
    ("resampling", [*APPLY, "o.tif", "--cog", "--overview-resampling", "x"], 2, "--overview"),
    ("nodata-word", [*APPLY, "o.tif", "--nodata", "abc"], 2, "--nodata: 'abc'"),
    ("out-nodata-word", [*APPLY, "o.tif", "--out-nodata", "x"], 2, "--out-nodata"),
    ("cval-word", [*APPLY, "o.npy", "--cval", "abc"], 2, "--cval"),
    ("halo-negative", [*APPLY, "o.npy", "--halo", "-1"], 2, "--halo: '-1'"),
    ("tile-more-axes", [*APPLY, "o.npy", "--tile", "1,2,3"], 1, "tile=(1, 2, 3): tiles 3 axes"),
    ("tile-word", [*APPLY, "o.npy", "--tile", "1,a"], 2, "--tile: '1,a'"),
    ("boundary-per-axis", [*APPLY, "o.npy", "--boundary", "wrap,foo"], 2, "'foo' is not one"),
    ("halo-per-axis", [*APPLY, "o.npy", "--halo", "1,1,1"], 1, "halo=(1, 1, 1): 3 values"),
    ("workers-0", [*APPLY, "o.npy", "--workers", "0"], 2, "--workers"),
    ("kwarg-no-equals", [*APPLY, "o.npy", "-k", "noequals"], 2, "'noequals'"),
    ("kwarg-not-taken", [*APPLY, "o.npy", "-k", "sigma=1"], 1, "-k sigma=1: functions.py:ident"),
    ("scheduler", [*APPLY, "o.npy", "--scheduler", "nowhere"], 2, "--scheduler"),
    ("backend", [*APPLY, "o.npy", "--backend", "gpu"], 2, "--backend"),
    ("no-folder", [*APPLY, "nowhere/o.npy"], 1, "'nowhere' does not exist"),
    ("input-empty", ["apply", "functions.py:ident", "empty.npy", "o.npy"], 1, "empty.npy"),
    ("input-cut", ["apply", "functions.py:ident", "trunc.npy", "o.npy"], 1, "trunc.npy"),
    ("input-not-tiff", ["apply", "functions.py:ident", "text.tif", "o.npy"], 1, "text.tif"),
    ("info-empty", ["info", "empty.npy"], 1, "image='empty.npy'"),
    ("info-cut", ["info", "trunc.npy"], 1, "image='trunc.npy'"),
    ("info-not-tiff", ["info", "text.tif"], 1, "image='text.tif'"),
    ("info-not-zarr", ["info", "empty.zarr"], 1, "image='empty.zarr'"),
    ("info-missing", ["info", "missing.npy"], 1, "missing.npy"),
    ("info-tile-0", ["info", "img.npy", "--tile", "0"], 2, "--tile: '0'"),
    ("info-tile-more-axes", ["info", "img.npy", "--tile", "4,4,4"], 1, "--tile 4,4,4: tiles 3"),
    ("info-halo-per-axis", ["info", "img.npy", "--halo", "1,1,1"], 1, "--halo 1,1,1: 3 values"),
    ("info-halo-word", ["info", "img.npy", "--halo", "x"], 2, "--halo: 'x'"),
    ("info-workers-word", ["info", "img.npy", "--workers", "two"], 2, "'two'"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [pytest.param(a, c, f, id=name) for name, a, c, f in BAD_COMMANDS],
)
def test_a_bad_command_is_one_line_an_exit_code_and_leaves_nothing(
    folder: Path, args: list[str], code: int, fragment: str
) -> None:
    done = tilewise_command(*args, cwd=folder)
    assert done.returncode == code, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert fragment in done.stderr
    assert done.stdout == ""
    assert {p.name for p in folder.iterdir()} == FILES  # no calls.txt: FUNC not run
