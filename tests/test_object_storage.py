"""Inputs and outputs in object storage: moto's S3 server and an HTTP server on loopback.

The oracle is the same run on local files. Credentials are the server's own
(:data:`tests.stores.SECRET`), looked for in every file, message and log
line a run leaves.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from distributed import WorkerPlugin
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage as ndi

import tilewise
from tests.stores import KEY_ID, SECRET, RangeServer, S3Server, s3_server
from tests.test_geospatial import NODATA, dem_with_holes, mean3, write_geotiff
from tests.test_resume import RUN_CLI, TILE_FUNCTION
from tilewise.cli import CommandError, _storage_option, _storage_options
from tilewise.io import retry
from tilewise.io.urls import STATE_DIR_VARIABLE, StoreUrl, redact, redact_text

TILE = 64


def smooth(block: np.ndarray) -> np.ndarray:
    return ndi.uniform_filter(block, 3)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def image(shape: tuple[int, int] = (300, 260), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def put_zarr(url: str, data: np.ndarray, options: dict[str, Any], chunks: int = TILE) -> None:
    array = zarr.create_array(
        url,
        shape=data.shape,
        chunks=(chunks, chunks),
        dtype=data.dtype,
        storage_options=options,
        overwrite=True,
    )
    array[:] = data


def get_zarr(url: str, options: dict[str, Any]) -> np.ndarray:
    return np.asarray(zarr.open_array(url, mode="r", storage_options=options)[:])


def chunk_objects(s3: S3Server, url: str) -> dict[str, bytes]:
    """Every object of a store in the bucket, by key: what a clean run must also leave."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3.storage_options())
    return {key: fs.cat_file(key) for key in fs.find(url)}


def test_zarr_in_and_out_through_s3_equal_the_local_run(
    s3: S3Server, backend_options: dict[str, Any], state_dir: Path
) -> None:
    bucket, options = s3.new_bucket(), s3.storage_options()
    data = image()
    put_zarr(f"s3://{bucket}/in.zarr", data, options, chunks=100)
    out = f"s3://{bucket}/out.zarr"
    written = tilewise.map_tiles(
        smooth, f"s3://{bucket}/in.zarr", tile=TILE, halo=1, out=out,
        storage_options=options, workers=2, **backend_options,
    )  # fmt: skip
    assert written == out
    local = tilewise.map_tiles(smooth, data, tile=TILE, halo=1, backend="serial")
    np.testing.assert_array_equal(get_zarr(out, options), local)
    assert zarr.open_array(out, storage_options=options).chunks == (TILE, TILE)
    assert not list(state_dir.iterdir())  # the journal and lock are gone once it is done


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_a_sharded_zarr_in_s3_is_written_a_whole_shard_per_tile(s3: S3Server, backend: str) -> None:
    bucket, options = s3.new_bucket(), s3.storage_options()
    data = image((300, 260))
    out = zarr.create_array(
        f"s3://{bucket}/sharded.zarr", shape=data.shape, chunks=(16, 16), shards=(64, 64),
        dtype=data.dtype, storage_options=options,
    )  # fmt: skip
    tilewise.map_tiles(smooth, data, tile=TILE, halo=1, out=out, backend=backend, workers=2)
    np.testing.assert_array_equal(get_zarr(f"s3://{bucket}/sharded.zarr", options), smooth(data))


def test_a_cog_is_read_by_range_requests_over_http(tmp_path: Path) -> None:
    import rasterio.shutil

    dem = dem_with_holes((600, 520))
    served = tmp_path / "served"
    served.mkdir()
    write_geotiff(tmp_path / "plain.tif", dem, nodata=NODATA)
    rasterio.shutil.copy(
        tmp_path / "plain.tif", served / "dem.tif", driver="COG", compress="deflate",
        blocksize=256, overview_resampling="average",
    )  # fmt: skip
    with rasterio.open(served / "dem.tif") as cog:
        assert cog.overviews(1)  # a COG, its overviews first in the file
    local = tilewise.map_tiles(mean3, served / "dem.tif", tile=TILE, halo=1, backend="threads")
    with RangeServer(served) as server:
        remote = tilewise.map_tiles(
            mean3, f"{server.url}/dem.tif", tile=TILE, halo=1, backend="threads", workers=2
        )
        # Into a file, journalled: the input is known by its size and ETag, not read whole.
        tilewise.map_tiles(
            mean3, f"{server.url}/dem.tif", tile=TILE, halo=1, out=tmp_path / "slope.npy"
        )
        info = subprocess.run(
            [sys.executable, "-m", "tilewise", "info", f"{server.url}/dem.tif"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    np.testing.assert_array_equal(remote, local)
    np.testing.assert_array_equal(np.load(tmp_path / "slope.npy"), local)
    assert server.ranges > 0
    assert server.whole == 0  # never the whole file at once
    assert info.returncode == 0, info.stderr
    assert "EPSG:32633" in info.stdout
    assert "nodata" in info.stdout


def test_a_geotiff_in_s3_gives_the_local_result_with_its_georeferencing(
    s3: S3Server, tmp_path: Path
) -> None:
    import s3fs

    bucket, options = s3.new_bucket(), s3.storage_options()
    dem = dem_with_holes()
    local_file = write_geotiff(tmp_path / "dem.tif", dem, nodata=NODATA, tiled=True)
    s3fs.S3FileSystem(**options).put_file(str(local_file), f"{bucket}/dem.tif")
    out = tmp_path / "slope.tif"
    tilewise.map_tiles(
        mean3, f"s3://{bucket}/dem.tif", tile=TILE, halo=1, out=out, backend="processes",
        workers=2, storage_options=options,
    )  # fmt: skip
    tilewise.map_tiles(mean3, local_file, tile=TILE, halo=1, out=tmp_path / "local.tif")
    import rasterio

    with rasterio.open(out) as remote, rasterio.open(tmp_path / "local.tif") as local:
        np.testing.assert_array_equal(remote.read(), local.read())
        assert (remote.crs, remote.transform, remote.nodata) == (
            local.crs, local.transform, local.nodata,
        )  # fmt: skip


# --- a cluster whose workers share no path -----------------------------------------------


class NoCallerFiles(WorkerPlugin):
    """A worker plugin: the worker runs in its own folder and may open none of the caller's.

    Python's audit hook sees every ``open`` of the worker process, so a read
    or write of the caller's folder fails the task instead of passing unseen.
    """

    name = "no-caller-files"

    def __init__(self, forbidden: str, home: str) -> None:
        self.forbidden, self.home = forbidden, home

    def setup(self, worker: Any) -> None:
        folder = Path(self.home) / f"worker-{worker.name}"
        folder.mkdir(parents=True, exist_ok=True)
        os.chdir(folder)
        forbidden = self.forbidden

        def refuse(event: str, args: tuple[Any, ...]) -> None:
            opened = args[0] if event == "open" else None
            path = os.fspath(opened) if isinstance(opened, (str, os.PathLike)) else ""
            if path and os.path.abspath(path).startswith(forbidden):
                raise PermissionError(f"a worker opened the caller's {path}")

        sys.addaudithook(refuse)


@pytest.mark.slow
def test_a_cluster_whose_workers_share_no_path_with_the_caller(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed import Client, LocalCluster

    bucket, options = s3.new_bucket(), s3.storage_options()
    data = image((256, 320))
    put_zarr(f"s3://{bucket}/in.zarr", data, options)
    caller = tmp_path / "caller"
    caller.mkdir()
    monkeypatch.setenv(STATE_DIR_VARIABLE, str(caller / "state"))  # the journal: the caller's
    out = f"s3://{bucket}/out.zarr"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
            local_directory=str(tmp_path / "workers"), host="127.0.0.1",
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        client.register_plugin(NoCallerFiles(str(caller), str(tmp_path / "workers")))
        tilewise.map_tiles(
            smooth, f"s3://{bucket}/in.zarr", tile=TILE, halo=1, out=out, client=client,
            storage_options=options,
        )  # fmt: skip
        with pytest.raises(PermissionError, match="opened the caller's"):
            client.run(lambda: open(caller / "probe", "w"))  # noqa: SIM115 - never opened
    np.testing.assert_array_equal(
        get_zarr(out, options), tilewise.map_tiles(smooth, data, tile=TILE, halo=1)
    )


# --- credentials -----------------------------------------------------------------------


def failing_on_the_fifth(block: np.ndarray, tile: tilewise.Tile) -> np.ndarray:
    if tile.index == (1, 0):
        raise ValueError("no good")
    return smooth(block)


def test_credentials_appear_in_no_journal_error_or_log_line(
    s3: S3Server, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = s3.new_bucket()
    url = f"s3://{bucket}/in.zarr"
    put_zarr(url, image(), s3.storage_options())
    options = s3.storage_options()
    with caplog.at_level(logging.DEBUG, logger="tilewise"), pytest.raises(tilewise.TileError) as e:
        tilewise.map_tiles(
            failing_on_the_fifth, url, tile=TILE, halo=1, out=f"s3://{bucket}/out.zarr",
            storage_options=options, backend="serial", pass_tile=True,
        )  # fmt: skip
    journals = list(state_dir.glob("*.tilewise-journal"))
    assert len(journals) == 1
    assert "(1, 0)" in str(e.value)
    shown = [str(e.value), repr(e.value), journals[0].read_text(), caplog.text]
    shown += [str(c) for c in (e.value.__cause__, e.value.__context__) if c is not None]
    for text in shown:
        assert SECRET not in text
        assert KEY_ID not in text

    unknown = f"s3://{bucket}/missing.zarr"
    with pytest.raises(tilewise.ArgumentError) as missing:
        tilewise.map_tiles(smooth, unknown, storage_options=options)
    assert unknown in str(missing.value)
    assert SECRET not in str(missing.value)
    assert SECRET not in redact(f"https://reader:{SECRET}@example.org/a.tif?X-Amz-Signature=x")


# --- faults --------------------------------------------------------------------------------


class RetryLogged(logging.Handler):
    """Sets :attr:`seen` when tilewise logs a retry."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.seen.set()


@pytest.fixture
def own_server() -> Iterator[S3Server]:
    """A server of the test's own, which it may stop and restart."""
    with s3_server() as server:
        yield server


@pytest.mark.slow
def test_the_store_stopped_and_restarted_mid_run_gives_the_clean_runs_chunks(
    own_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retry, "FIRST_WAIT", 0.05)
    # botocore's own retries off, so that the outage reaches tilewise's within a second or two.
    options = own_server.storage_options(config_kwargs={"retries": {"max_attempts": 1}})
    bucket = own_server.new_bucket()
    data = image()
    put_zarr(f"s3://{bucket}/in.zarr", data, options)
    clean = f"s3://{bucket}/clean.zarr"
    tilewise.map_tiles(
        smooth, f"s3://{bucket}/in.zarr", tile=TILE, halo=1, out=clean, storage_options=options,
        backend="threads",
    )  # fmt: skip
    retried = RetryLogged()
    logging.getLogger("tilewise").addHandler(retried)
    restarted = threading.Thread(target=lambda: (retried.seen.wait(), own_server.start()))
    stopped = threading.Event()

    def stops_the_store(block: np.ndarray, tile: tilewise.Tile) -> np.ndarray:
        if tile.index == (2, 1) and not stopped.is_set():
            stopped.set()
            own_server.stop()  # the writes of this tile and those after meet no server
            restarted.start()  # ...until a retry is logged
        return smooth(block)

    try:
        tilewise.map_tiles(
            stops_the_store, f"s3://{bucket}/in.zarr", tile=TILE, halo=1,
            out=f"s3://{bucket}/out.zarr", storage_options=options, backend="threads",
            workers=2, pass_tile=True,
        )  # fmt: skip
    finally:
        logging.getLogger("tilewise").removeHandler(retried)
        if restarted.is_alive():
            retried.seen.set()
        if restarted.ident is not None:
            restarted.join()
    assert retried.seen.is_set()
    chunks = chunk_objects(own_server, f"{bucket}/out.zarr")
    expected = chunk_objects(own_server, f"{bucket}/clean.zarr")
    assert {k.replace("/out.zarr/", "/clean.zarr/"): v for k, v in chunks.items()} == expected


def test_a_store_that_stays_down_fails_naming_the_tile_and_the_url(
    own_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retry, "FIRST_WAIT", 0.01)
    monkeypatch.setattr(retry, "ATTEMPTS", 2)
    options = own_server.storage_options(config_kwargs={"retries": {"max_attempts": 1}})
    bucket = own_server.new_bucket()
    put_zarr(f"s3://{bucket}/in.zarr", image(), options)
    out = f"s3://{bucket}/out.zarr"

    def stops_the_store(block: np.ndarray, tile: tilewise.Tile) -> np.ndarray:
        if tile.index == (1, 2):
            own_server.stop()
        return smooth(block)

    with pytest.raises(tilewise.TileError) as failed:
        tilewise.map_tiles(
            stops_the_store, f"s3://{bucket}/in.zarr", tile=TILE, halo=1, out=out,
            storage_options=options, backend="serial", pass_tile=True,
        )  # fmt: skip
    own_server.start()  # for the fixture's stop
    message = str(failed.value)
    assert "tile (1, 2)" in message
    assert f"writing its result to {out!r}" in message
    assert SECRET not in message + repr(failed.value)


def test_a_throttling_server_is_asked_again_until_it_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(retry, "FIRST_WAIT", 0.01)
    dem = dem_with_holes((300, 260))
    served = tmp_path / "served"
    served.mkdir()
    write_geotiff(served / "dem.tif", dem, nodata=NODATA, tiled=True, compress="deflate")
    local = tilewise.map_tiles(mean3, served / "dem.tif", tile=TILE, halo=1, backend="serial")
    with RangeServer(served) as server, caplog.at_level(logging.WARNING, logger="tilewise"):
        server.throttle = 3  # the header's first reads, then the tiles'
        remote = tilewise.map_tiles(
            mean3, f"{server.url}/dem.tif", tile=TILE, halo=1, backend="serial"
        )
    np.testing.assert_array_equal(remote, local)
    assert server.throttle == 0
    assert caplog.text.count("retrying") >= 1


# --- kill -9 of the caller, then resume against the bucket -------------------------------


@pytest.mark.slow
@pytest.mark.posix
def test_a_caller_killed_with_sigkill_resumes_against_the_bucket(
    s3: S3Server, tmp_path: Path, state_dir: Path
) -> None:
    bucket, options = s3.new_bucket(), s3.storage_options()
    data = image((150, 190))
    put_zarr(f"s3://{bucket}/in.zarr", data, options, chunks=40)
    (tmp_path / "tiles.py").write_text(TILE_FUNCTION)
    (tmp_path / "run.py").write_text(RUN_CLI)
    os.mkfifo(tmp_path / "ready")
    os.mkfifo(tmp_path / "never")
    out = f"s3://{bucket}/out.zarr"
    command = [
        sys.executable, str(tmp_path / "run.py"), "apply", "tiles.py:smooth",
        f"s3://{bucket}/in.zarr", out, "--tile", "40", "--halo", "1", "--backend", "serial",
        *(f"--storage-option={k}={v}" for k, v in options.items()),
    ]  # fmt: skip
    env = {
        **os.environ,
        "TW_LOG": str(tmp_path / "first.log"),
        "TW_READY": str(tmp_path / "ready"),
        "TW_NEVER": str(tmp_path / "never"),
        "TW_BLOCK_AFTER": "6",
    }
    run = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True)
    try:
        with open(tmp_path / "ready") as ready:  # returns once the seventh tile blocks
            ready.read()
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert run.returncode == -signal.SIGKILL
    (journal,) = state_dir.glob("*.tilewise-journal")
    assert journal.read_text().count("\n") == 1 + 6  # the header, then six tiles

    env["TW_BLOCK_AFTER"], env["TW_LOG"] = "1000", str(tmp_path / "second.log")
    refused = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert refused.returncode == 1
    assert "exists; pass --overwrite" in refused.stderr
    resumed = subprocess.run(
        [*command, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert len((tmp_path / "second.log").read_text().splitlines()) == 4 * 5 - 6
    uninterrupted = tilewise.map_tiles(smooth, data, tile=40, halo=1, backend="serial")
    np.testing.assert_array_equal(get_zarr(out, options), uninterrupted)
    assert not list(state_dir.iterdir())
    assert SECRET not in refused.stderr + resumed.stderr


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_", "out", "options", "error", "named"),
    [
        ("memory://a.zarr", None, [], tilewise.ArgumentTypeError, "storage_options"),
        ("in.npy", None, {"anon": True}, tilewise.ArgumentError, "storage_options"),
        ("nosuchscheme://b/a.zarr", None, None, tilewise.ArgumentError, "nosuchscheme://b/a.zarr"),
        ("memory://a.npy", None, None, tilewise.ArgumentError, "memory://a.npy"),
        ("memory://a.zarr", "memory://out.tif", None, tilewise.ArgumentError, "memory://out.tif"),
    ],
)
def test_bad_urls_and_storage_options_are_refused_before_any_tile_runs(
    image_: str, out: str | None, options: Any, error: type[Exception], named: str, tmp_path: Path
) -> None:
    put_zarr("memory://a.zarr", image((8, 8)), {})
    np.save(tmp_path / "in.npy", image((8, 8)))
    calls = []
    with pytest.raises(error, match=named.replace(".", r"\.")):
        tilewise.map_tiles(
            lambda b: calls.append(b) or b, image_ if "://" in image_ else tmp_path / image_,
            out=out, storage_options=options, backend="serial",
        )  # fmt: skip
    assert not calls


@pytest.mark.parametrize("backend", ["processes", "dask"])
def test_a_memory_store_is_refused_on_backends_of_other_processes(backend: str) -> None:
    put_zarr("memory://a.zarr", image((8, 8)), {})
    refused = f"out of reach of the {backend} backend's workers"
    with pytest.raises(tilewise.ArgumentError, match=refused):
        tilewise.map_tiles(smooth, "memory://a.zarr", backend=backend)


# --- the command line ------------------------------------------------------------------------


def test_storage_options_on_the_command_line_nest_by_dots_and_parse_literals() -> None:
    pairs = [
        _storage_option("anon=True"),
        _storage_option("client_kwargs.region_name=eu-west-1"),
        _storage_option("client_kwargs.verify=False"),
        _storage_option("block_size=1024"),
    ]
    assert _storage_options(pairs) == {
        "anon": True,
        "client_kwargs": {"region_name": "eu-west-1", "verify": False},
        "block_size": 1024,
    }
    assert _storage_options([]) is None
    for bad in ("anon", "=1", "a..b=1", "1a=2"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE"):
            _storage_option(bad)
    with pytest.raises(CommandError, match="client_kwargs is set to a value"):
        _storage_options([("client_kwargs", 1), ("client_kwargs.region_name", "x")])


def test_info_describes_a_zarr_store_in_s3(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    put_zarr(f"s3://{bucket}/scene.zarr", image((300, 260)), s3.storage_options())
    options = [f"--storage-option={k}={v}" for k, v in s3.storage_options().items()]
    shown = subprocess.run(
        [sys.executable, "-m", "tilewise", "info", f"s3://{bucket}/scene.zarr", *options],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert f"s3://{bucket}/scene.zarr" in shown.stdout
    assert "shape   300 x 260" in shown.stdout
    assert "Zarr v3, chunks (64, 64)" in shown.stdout
    assert SECRET not in shown.stdout + shown.stderr


@given(
    user=st.text("abcdefgh", min_size=1, max_size=8),
    password=st.text("0123456789", min_size=6, max_size=20),
    signature=st.text("QRSTUVWXYZ", min_size=6, max_size=40),
    other=st.text("abc", min_size=1, max_size=5),
    scheme=st.sampled_from(["https", "http", "s3", "az"]),
)
def test_a_redacted_url_keeps_no_password_or_signature(
    user: str, password: str, signature: str, other: str, scheme: str
) -> None:
    url = f"{scheme}://{user}:{password}@host.example/a/b.tif?X-Amz-Signature={signature}&v={other}"
    for shown in (redact(url), redact_text(f"GET {url} failed"), str(StoreUrl(url, {"s": 1}))):
        assert password not in shown
        assert signature not in shown
        assert f"{user}:***@host.example/a/b.tif" in shown
        assert f"v={other}" in shown


def test_a_resume_refuses_an_input_store_changed_since(s3: S3Server) -> None:
    bucket, options = s3.new_bucket(), s3.storage_options()
    url, out = f"s3://{bucket}/in.zarr", f"s3://{bucket}/out.zarr"
    data = image()
    put_zarr(url, data, options)
    with pytest.raises(tilewise.TileError, match=r"tile \(1, 0\)"):
        tilewise.map_tiles(
            failing_on_the_fifth, url, tile=TILE, halo=1, out=out, storage_options=options,
            backend="serial", pass_tile=True,
        )  # fmt: skip
    zarr.open_array(url, mode="r+", storage_options=options)[:TILE, :TILE] = 0.5  # one chunk
    with pytest.raises(tilewise.ArgumentError) as refused:
        tilewise.map_tiles(
            failing_on_the_fifth, url, tile=TILE, halo=1, out=out, storage_options=options,
            backend="serial", pass_tile=True, resume=True,
        )  # fmt: skip
    # The same run but for its input: one chunk rewritten, so the store's size and listing.
    changed = str(refused.value).partition("differs from the interrupted one: ")[2]
    assert re.fullmatch(
        r"input size was \d+, now \d+; input listing was '\w+', now '\w+'\. Run without "
        r"resume to start over",
        changed,
    )
