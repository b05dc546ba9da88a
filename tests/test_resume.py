"""Resumed runs: only missing tiles computed, the same result, and every changed run refused.

The interruptions are real: a tile that fails (the run stops, the journal
keeps what was done) and, in the slow test, a process tree killed with
SIGKILL while it runs, synchronised through FIFOs the tile function opens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage as ndi

import tilewise
from tilewise.journal import read_journal

TILE = 16
SHAPE = (64, 80)  # 4 x 5 = 20 tiles
TOTAL = 20


def smooth(block: np.ndarray) -> np.ndarray:
    return ndi.uniform_filter(block, 3)


class Interruptible:
    """A 3x3 mean that logs every tile it computes, and fails on one while ``stop`` exists.

    Its code is the same in the interrupted and the resumed run: only the
    file ``stop`` differs, as a crash would.
    """

    def __init__(self, folder: Path, fail_at: tuple[int, int]) -> None:
        self.log = folder / "computed.log"
        self.stop = folder / "stop"
        self.fail_at = fail_at
        self.stop.touch()

    def __call__(self, block: np.ndarray, tile: tilewise.Tile) -> np.ndarray:
        if tile.index == self.fail_at and self.stop.exists():
            raise RuntimeError("interrupted")
        with open(self.log, "a") as log:
            log.write(f"{tile.index}\n")
        return smooth(block)

    def computed(self) -> int:
        count = len(self.log.read_text().splitlines()) if self.log.exists() else 0
        self.log.unlink(missing_ok=True)
        return count


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(3).standard_normal(SHAPE)


def read(path: Path) -> np.ndarray:
    if path.suffix == ".zarr":
        return zarr.open_array(str(path), mode="r")[:]
    if path.suffix == ".tif":
        return tifffile.imread(path)
    return np.load(path)


def interrupted_run(image: np.ndarray, out: Path, func: Interruptible, **options: object) -> None:
    with pytest.raises(tilewise.TileError, match="interrupted"):
        tilewise.map_tiles(
            func, image, tile=TILE, halo=1, out=out, pass_tile=True, backend="serial", **options
        )
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".zarr"])
def test_a_resumed_run_computes_only_the_missing_tiles(
    suffix: str, image: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / f"o{suffix}"
    func = Interruptible(tmp_path, fail_at=(2, 3))  # the 14th tile in row-major order
    interrupted_run(image, out, func)
    assert func.computed() == 13
    func.stop.unlink()
    tilewise.map_tiles(
        func, image, tile=TILE, halo=1, out=out, pass_tile=True, backend="serial", resume=True
    )
    assert func.computed() == TOTAL - 13
    expected = tilewise.map_tiles(smooth, image, tile=TILE, halo=1, backend="serial")
    np.testing.assert_array_equal(read(out), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_a_resume_on_worker_processes(image: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "o.npy"
    func = Interruptible(tmp_path, fail_at=(3, 4))
    with pytest.raises(tilewise.TileError):
        tilewise.map_tiles(
            func, image, tile=TILE, halo=1, out=out, pass_tile=True, backend="processes", workers=2
        )
    func.computed()
    recorded = read_journal_done(out)
    # (3, 4) is the last tile; how many others finished before it failed depends on how
    # many were in flight (quick tiles travel in batches), but some did and it did not.
    assert recorded
    assert (3, 4) not in recorded
    func.stop.unlink()
    tilewise.map_tiles(
        func, image, tile=TILE, halo=1, out=out, pass_tile=True, backend="processes", resume=True
    )
    assert func.computed() == TOTAL - len(recorded)
    np.testing.assert_allclose(read(out), smooth(image), rtol=1e-12)


def read_journal_done(out: Path) -> set[tuple[int, int]]:
    found = read_journal(out.with_name(out.name + ".tilewise-journal"))
    assert found is not None
    return found[1]


def test_a_tile_written_but_not_recorded_is_recomputed(image: np.ndarray, tmp_path: Path) -> None:
    """Garbage in the unrecorded tiles of the partial file never reaches the result."""
    out = tmp_path / "o.npy"
    func = Interruptible(tmp_path, fail_at=(1, 0))
    interrupted_run(image, out, func)
    partial = np.load(tmp_path / "o.npy.tilewise-partial", mmap_mode="r+")
    partial[TILE:, :] = 1e9  # tiles from (1, 0) on: as a killed write could leave them
    partial.flush()
    del partial
    journal = tmp_path / "o.npy.tilewise-journal"
    with open(journal, "ab") as file:
        file.write(b"1 0 0000")  # a record cut short by the kill
    func.stop.unlink()
    func.computed()
    tilewise.map_tiles(
        func, image, tile=TILE, halo=1, out=out, pass_tile=True, backend="threads", resume=True
    )
    assert func.computed() == TOTAL - 5
    np.testing.assert_allclose(read(out), smooth(image), rtol=1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tile": 8}, r"tile was \[16, 16\], now \[8, 8\]"),
        ({"halo": 2}, r"halo was \[1, 1\], now \[2, 2\]"),
        ({"boundary": "nearest"}, "boundary was 'reflect', now 'nearest'"),
        ({"dtype": "float32"}, "dtype was None, now '<f4'"),
        ({"func": "other"}, "func code was"),
        ({"image": "other"}, "input sampled_rows was"),
    ],
)
def test_a_changed_run_refuses_to_resume_and_says_what_changed(
    change: dict[str, object], message: str, image: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "o.npy"
    func = Interruptible(tmp_path, fail_at=(1, 1))
    interrupted_run(image, out, func)
    journalled = (tmp_path / "o.npy.tilewise-journal").read_bytes()

    def other(block: np.ndarray, tile: tilewise.Tile) -> np.ndarray:
        return block

    options: dict[str, object] = {"tile": TILE, "halo": 1, **change}
    call_func = other if options.pop("func", None) else func
    call_image = image + 1 if options.pop("image", None) else image
    with pytest.raises(tilewise.ArgumentError, match=message):
        tilewise.map_tiles(
            call_func, call_image, out=out, pass_tile=True, backend="serial", resume=True, **options
        )
    assert (tmp_path / "o.npy.tilewise-journal").read_bytes() == journalled  # left as it was


def test_a_changed_input_file_refuses_to_resume(image: np.ndarray, tmp_path: Path) -> None:
    source = tmp_path / "in.npy"
    np.save(source, image)
    out = tmp_path / "o.npy"
    func = Interruptible(tmp_path, fail_at=(1, 1))
    interrupted_run(source, out, func)  # type: ignore[arg-type]
    np.save(source, image * 2)
    with pytest.raises(tilewise.ArgumentError, match="input mtime_ns was"):
        tilewise.map_tiles(func, source, tile=TILE, halo=1, out=out, pass_tile=True, resume=True)


def test_without_resume_an_interrupted_run_is_started_over(
    image: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "o.npy"
    func = Interruptible(tmp_path, fail_at=(1, 1))
    interrupted_run(image, out, func)
    func.computed()
    func.stop.unlink()
    tilewise.map_tiles(func, image, tile=TILE, halo=1, out=out, pass_tile=True, backend="serial")
    assert func.computed() == TOTAL


def test_resume_with_nothing_to_resume_warns_and_computes_everything(
    image: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "o.npy"
    with pytest.warns(UserWarning, match="no interrupted run of .*o.npy' to resume"):
        tilewise.map_tiles(smooth, image, tile=TILE, halo=1, out=out, resume=True)
    np.testing.assert_allclose(read(out), smooth(image), rtol=1e-12)


def test_resume_needs_a_file_output(image: np.ndarray) -> None:
    with pytest.raises(tilewise.ArgumentError, match="resume=True: needs out= a file path"):
        tilewise.map_tiles(smooth, image, resume=True)


def test_leftover_temporary_files_are_removed(image: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "o.zarr"
    func = Interruptible(tmp_path, fail_at=(1, 1))
    interrupted_run(image, out, func)
    # What a kill can leave: zarr's chunk being written, an encoding in progress.
    zarr_temporary = tmp_path / "o.zarr.tilewise-partial" / "c" / "0" / "1.0123456789abcdef.partial"
    zarr_temporary.write_bytes(b"half a chunk")
    (tmp_path / "o.zarr.tilewise-tmp").write_bytes(b"half a file")
    func.stop.unlink()
    tilewise.map_tiles(func, image, tile=TILE, halo=1, out=out, pass_tile=True, resume=True)
    assert not list(out.rglob("*.partial"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["computed.log", "o.zarr"]


# --- kill -9 ------------------------------------------------------------------------------

TILE_FUNCTION = """
import os
from scipy import ndimage as ndi

def smooth(block):
    with open(os.environ["TW_LOG"], "a") as log:
        log.write("tile\\n")
    with open(os.environ["TW_LOG"]) as log:
        computed = sum(1 for _ in log)
    if computed > int(os.environ["TW_BLOCK_AFTER"]):
        open(os.environ["TW_READY"], "w").close()  # tell the test: tiles are done, kill me
        open(os.environ["TW_NEVER"]).read()  # block: nobody ever writes this FIFO
    return ndi.uniform_filter(block, 3)
"""

# Commit each tile before the next is recorded, so what the kill leaves is known.
RUN_CLI = """
import sys
import tilewise.journal
tilewise.journal.COMMIT_INTERVAL = 0
from tilewise.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli_command(tmp_path: Path, out: Path, backend: str, tile: int) -> list[str]:
    return [
        sys.executable, str(tmp_path / "run.py"), "apply", "tiles.py:smooth", "in.npy", out.name,
        "--tile", str(tile), "--halo", "1", "--backend", backend, "--workers", "2",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.posix
@pytest.mark.parametrize(("backend", "suffix"), [("serial", ".tif"), ("processes", ".zarr")])
def test_a_run_killed_with_sigkill_resumes_to_the_same_result(
    backend: str, suffix: str, tmp_path: Path
) -> None:
    image = np.random.default_rng(11).random((150, 190)).astype(np.float32)
    total, block_after = 4 * 5, 6  # tiles of 40; the 7th tile computed blocks
    np.save(tmp_path / "in.npy", image)
    (tmp_path / "tiles.py").write_text(TILE_FUNCTION)
    (tmp_path / "run.py").write_text(RUN_CLI)
    os.mkfifo(tmp_path / "ready")
    os.mkfifo(tmp_path / "never")
    out = tmp_path / f"out{suffix}"
    env = {
        **os.environ,
        "TW_LOG": str(tmp_path / "first.log"),
        "TW_READY": str(tmp_path / "ready"),
        "TW_NEVER": str(tmp_path / "never"),
        "TW_BLOCK_AFTER": str(block_after),
    }
    # Its own process group, so the kill takes the workers too, as a crash would.
    run = subprocess.Popen(
        cli_command(tmp_path, out, backend, tile=40), cwd=tmp_path, env=env, start_new_session=True
    )
    try:
        with open(tmp_path / "ready") as ready:  # returns once a tile past the sixth blocks
            ready.read()
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert run.returncode == -signal.SIGKILL
    assert not out.exists()
    recorded = read_journal_done(out)
    assert 0 < len(recorded) <= block_after
    if backend == "serial":
        assert len(recorded) == block_after  # each committed before the next began

    env["TW_BLOCK_AFTER"], env["TW_LOG"] = "1000", str(tmp_path / "second.log")
    changed = subprocess.run(
        [*cli_command(tmp_path, out, backend, tile=50), "--resume"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert changed.returncode == 1
    assert changed.stderr.count("\n") == 1
    assert "tile was [40, 40], now [50, 50]" in changed.stderr
    assert read_journal_done(out) == recorded

    resumed = subprocess.run(
        [*cli_command(tmp_path, out, backend, tile=40), "--resume"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    computed_again = len((tmp_path / "second.log").read_text().splitlines())
    assert computed_again == total - len(recorded) < total
    uninterrupted = tilewise.map_tiles(smooth, image, tile=40, halo=1, backend="serial")
    np.testing.assert_array_equal(read(out), uninterrupted)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == [out.name]


# --- publishing: no process maps the partial output any more ----------------------------------


def mapped_files(pid: int) -> set[str]:
    """The files process ``pid`` has memory-mapped, from Linux's /proc/<pid>/maps."""
    with open(f"/proc/{pid}/maps") as maps:
        return {parts[5] for line in maps if len(parts := line.split(maxsplit=5)) == 6}


@pytest.mark.linux
@pytest.mark.parametrize("suffix", [".npy", ".tif", ".zarr"])
@pytest.mark.parametrize("backend", ["serial", "threads", "processes"])
def test_no_process_maps_the_partial_output_when_it_is_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, suffix: str
) -> None:
    """Windows cannot replace a file any process maps: the caller and workers let go first."""
    import psutil

    from tilewise.io import _files

    seen: list[dict[int, set[str]]] = []
    publish = _files.publish

    def checked_publish(partial: Path, path: Path) -> None:
        pids = [os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))]
        seen.append({pid: {f for f in mapped_files(pid) if str(partial) in f} for pid in pids})
        publish(partial, path)

    monkeypatch.setattr(_files, "publish", checked_publish)
    data = np.random.default_rng(12).random((64, 48)).astype(np.float32)
    out = tmp_path / f"o{suffix}"
    tilewise.map_tiles(np.negative, data, tile=16, out=out, backend=backend, workers=2)
    assert len(seen) == 1
    (maps,) = seen
    if backend == "processes":
        assert len(maps) >= 3  # the caller and both of its workers were looked at
    assert all(not files for files in maps.values()), maps
    np.testing.assert_array_equal(read(out), -data)
