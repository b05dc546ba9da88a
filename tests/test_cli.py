"""The ``tilewise`` command, run as users run it: a subprocess, its exit code and its stderr."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image
from scipy import ndimage as ndi

import tilewise
from tests.commands import tilewise_command
from tilewise.cli import CommandError, load_function

FILTERS = """
from scipy import ndimage as ndi

def smooth(block):
    return ndi.uniform_filter(block, 3)

def fail(block):
    raise ValueError("no good")

NOT_A_FUNCTION = 3
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An input image and a module of filters, as a user's working folder holds them."""
    path = tmp_path_factory.mktemp("cli")
    image = np.random.default_rng(5).random((130, 170)).astype(np.float32)
    tifffile.imwrite(path / "scan.tif", image, tile=(32, 32), compression="zlib")
    (path / "filters.py").write_text(FILTERS)
    (path / "broken.py").write_text("import no_such_module_anywhere\n")
    return path


def expected(folder: Path) -> np.ndarray:
    return ndi.uniform_filter(tifffile.imread(folder / "scan.tif"), 3)


def test_apply_with_a_file_module_writes_the_in_memory_result(folder: Path) -> None:
    done = tilewise_command(
        "apply", "filters.py:smooth", "scan.tif", "out.npy", "--tile", "40,64", "--halo", "1",
        cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == done.stderr == ""  # piped: no progress bar, no chatter
    np.testing.assert_array_equal(np.load(folder / "out.npy"), expected(folder))


def test_apply_a_library_function_with_keyword_arguments_on_processes(folder: Path) -> None:
    done = tilewise_command(
        "apply", "scipy.ndimage:uniform_filter", "scan.tif", "out.zarr", "--halo", "1",
        "-k", "size=3", "--tile", "50", "--backend", "processes", "--workers", "2",
        cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = tilewise.map_tiles(np.copy, folder / "out.zarr", backend="serial")
    np.testing.assert_array_equal(result, expected(folder))


def info_fields(*args: str, cwd: Path) -> dict[str, str]:
    done = tilewise_command("info", *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return dict(line.split(None, 1) for line in done.stdout.splitlines())


def test_info_describes_the_image_and_its_tiling(folder: Path) -> None:
    fields = info_fields("scan.tif", "--tile", "64", "--halo", "2", "--workers", "2", cwd=folder)
    assert fields["shape"] == "130 x 170"
    assert fields["dtype"] == "float32"
    assert fields["format"].startswith("TIFF, tiles (32, 32)")
    assert fields["size"].startswith("86.3 KiB")
    assert fields["tiles"].startswith("3 x 3 = 9 tiles of 64 x 64, blocks with halo 68 x 68")
    # Blocks of 68 x 68 overlap up to 4 x 4 of the 32 x 32 tiles, each decoded whole.
    assert_about(fields["memory"], peak_bytes((68, 68), 4, (32, 32), workers=2), workers=2)


def chunks_overlapped(size: int, chunk: int) -> int:
    """The most chunks of ``chunk`` pixels a window of ``size`` pixels overlaps, wherever it
    starts along the axis."""
    return max((start + size - 1) // chunk - start // chunk + 1 for start in range(chunk))


def peak_bytes(
    block: tuple[int, int],
    pixel_bytes: int,
    chunks: tuple[int, int] | None,
    workers: int,
    whole: int = 0,
) -> int:
    """The documented estimate: per running tile, its block three times (as read, padded,
    the result), the chunks the block overlaps decoded, and an image decoded whole."""
    decoded = 0
    if chunks is not None:
        counts = [chunks_overlapped(size, c) for size, c in zip(block, chunks, strict=True)]
        decoded = counts[0] * counts[1] * chunks[0] * chunks[1] * pixel_bytes
    return workers * (3 * block[0] * block[1] * pixel_bytes + decoded + whole)


UNITS = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def assert_about(memory: str, expected: int, workers: int) -> None:
    """``memory`` states ``expected`` bytes, to its one decimal, in the largest unit it is
    at least 1 of, for ``workers`` workers."""
    match = re.match(r"about ([0-9.]+) (\w+) at peak with (\d+) workers? ", memory)
    assert match is not None, memory
    value, unit = float(match[1]), UNITS[match[2]]
    assert abs(value * unit - expected) <= 0.05 * unit, (memory, expected)
    assert unit == 1 or 1 <= expected / unit < 1024, (memory, expected)
    assert int(match[3]) == workers


@pytest.mark.parametrize("suffix", [".npy", ".zarr", ".png"])
def test_info_estimates_the_peak_memory_of_a_run(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(3)
    chunks, whole = None, 0
    if suffix == ".npy":  # read in place: no chunk to decode
        image = rng.random((300, 200))
        np.save(tmp_path / "in.npy", image)
    elif suffix == ".zarr":
        image = rng.random((300, 200)).astype(np.float32)
        chunks = (50, 40)  # blocks of 68 x 68 overlap up to 3 x 3 of them
        zarr.create_array(str(tmp_path / "in.zarr"), data=image, chunks=chunks)
    else:
        image = rng.integers(0, 256, (130, 170, 3), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / "in.png")
        whole = image.nbytes  # decoded whole, by each worker
    pixel_bytes = image.itemsize * (image.shape[2] if image.ndim == 3 else 1)
    fields = info_fields(
        f"in{suffix}", "--tile", "64", "--halo", "2", "--workers", "3", cwd=tmp_path
    )
    expected = peak_bytes((68, 68), pixel_bytes, chunks, workers=3, whole=whole)
    assert_about(fields["memory"], expected, workers=3)


@pytest.mark.parametrize("args", [["--help"], ["apply", "--help"], ["info", "--help"]])
def test_help_teaches_with_examples(args: list[str], folder: Path) -> None:
    done = tilewise_command(*args, cwd=folder)
    assert done.returncode == 0
    assert "usage: tilewise" in done.stdout
    if args[0] != "--help":
        assert f"tilewise {args[0]} " in done.stdout.split("examples:")[1]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["apply", "filters.py:smooth", "missing.tif", "o.npy"], 1, "image='missing.tif': no such"),
        (["apply", "filters.py:smooth", "filters.py", "o.npy"], 1, "unknown image format '.py'"),
        (["apply", "filters.py:smooth", "scan.tif", "o.h5"], 1, "unknown output format '.h5'"),
        (["apply", "filters.py:nope", "scan.tif", "o.npy"], 1, "'filters.py' has no 'nope'"),
        (["apply", "nowhere.py:f", "scan.tif", "o.npy"], 1, "no such file 'nowhere.py'"),
        (["apply", "no_such_mod:f", "scan.tif", "o.npy"], 1, "no module named 'no_such_mod'"),
        (["apply", "broken.py:f", "scan.tif", "o.npy"], 1, "importing 'broken' failed"),
        (["apply", "filters.py:NOT_A_FUNCTION", "scan.tif", "o.npy"], 1, "is a int, not a"),
        (["apply", "smooth", "scan.tif", "o.npy"], 1, "expected MODULE:FUNC"),
        (["apply", "filters.py:smooth", "scan.tif", "o.npy", "--tile", "0"], 2, "--tile: '0'"),
        (["apply", "filters.py:smooth", "scan.tif", "o.npy", "--boundary", "x"], 2, "--boundary"),
        (["apply", "filters.py:smooth", "scan.tif", "o.npy", "--workers", "two"], 2, "'two'"),
        (["apply", "filters.py:smooth", "scan.tif", "o.npy", "--dtype", "float5"], 2, "dtype"),
        (["apply", "filters.py:smooth", "scan.tif"], 2, "required: OUTPUT"),
        (["info", "scan.tif", "--frobnicate"], 2, "unrecognized arguments: --frobnicate"),
        (["info", "missing.npy"], 1, "no such file"),
    ],
)
def test_user_errors_are_one_line_and_an_exit_code(
    args: list[str], code: int, message: str, folder: Path
) -> None:
    done = tilewise_command(*args, cwd=folder)
    assert done.returncode == code
    assert done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_failing_tile_names_the_tile_and_debug_shows_the_traceback(folder: Path) -> None:
    # One worker: the tiles of the first wave, which all fail, do not race to be reported.
    args = ["apply", "filters.py:fail", "scan.tif", "o.npy", "--tile", "64", "--workers", "1"]
    done = tilewise_command(*args, cwd=folder)
    assert done.returncode == 1
    assert done.stderr.startswith("tilewise: error: tile (0, 0) rows 0:64, cols 0:64")
    assert "--debug shows the traceback" in done.stderr
    assert "Traceback" not in done.stderr
    debug = tilewise_command(*args, "--debug", cwd=folder)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr
    assert "ValueError: no good" in debug.stderr


@pytest.mark.posix
def test_a_terminal_gets_a_progress_bar(folder: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tilewise", "apply", "filters.py:smooth", "scan.tif",
             "tty.npy", "--halo", "1", "--tile", "32"],
            cwd=folder, stderr=child, stdout=subprocess.PIPE, timeout=120,
        )  # fmt: skip
        os.close(child)
        shown = b""
        while True:
            try:
                chunk = os.read(parent, 4096)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(parent)
    assert done.returncode == 0
    assert b"30/30" in shown  # the bar's final count: 5 x 6 tiles
    assert b"tilewise: wrote tty.npy" in shown


# --- loading the function, in-process -----------------------------------------------------


@pytest.fixture
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """load_function puts a file's folder on sys.path, as running a script does: undo it."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.mark.usefixtures("isolated_imports")
def test_load_function_by_dotted_name_and_by_file(folder: Path) -> None:
    assert load_function("numpy:square") is np.square
    assert load_function("numpy:linalg.inv") is np.linalg.inv
    smooth = load_function(f"{folder / 'filters.py'}:smooth")
    assert smooth.__module__ == "filters"


def test_a_windows_path_splits_at_its_last_colon() -> None:
    # The drive letter's colon is part of the file; FUNC follows the last one.
    with pytest.raises(CommandError, match=r"no such file 'C:\\\\work\\\\f.py'"):
        load_function("C:\\work\\f.py:smooth")
    with pytest.raises(CommandError, match=r"no such file 'D:/data/filters.py'"):
        load_function("D:/data/filters.py:smooth")


@pytest.mark.usefixtures("isolated_imports")
def test_load_function_refuses_a_file_shadowed_by_another_module(tmp_path: Path) -> None:
    (tmp_path / "json.py").write_text("def f(block):\n    return block\n")
    with pytest.raises(CommandError, match="a module named 'json' is already imported"):
        load_function(f"{tmp_path / 'json.py'}:f")


def test_an_existing_output_is_refused_unless_overwrite(folder: Path) -> None:
    args = ["apply", "numpy:negative", "scan.tif", "kept.npy", "--tile", "64"]
    assert tilewise_command(*args, cwd=folder).returncode == 0
    before = (folder / "kept.npy").stat().st_mtime_ns
    again = tilewise_command(*args, cwd=folder)
    assert again.returncode == 1
    assert (
        again.stderr
        == "tilewise: error: OUTPUT='kept.npy': exists; pass --overwrite to replace it\n"
    )
    assert (folder / "kept.npy").stat().st_mtime_ns == before  # not a byte written
    assert not list(folder.glob("kept.npy.tilewise-*"))
    replaced = tilewise_command(*args, "--overwrite", cwd=folder)
    assert replaced.returncode == 0, replaced.stderr
    assert (folder / "kept.npy").stat().st_mtime_ns != before
