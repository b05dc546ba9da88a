"""The benchmarks (``python -m benchmarks``): the suite runs end to end, its parts measure
what they claim, and none of it is in the wheel.

No timing is asserted: the machine is shared. What is asserted is what
could silently go wrong: a method missing from the report, a result that
differs from the whole-array call, memory not seen, a target judged wrong.
A missed target fails no test: the report says so.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import alternatives, suite
from benchmarks.__main__ import build_parser, command
from benchmarks.__main__ import main as bench_main
from benchmarks.memory import TreeSampler
from benchmarks.methods import METHODS
from benchmarks.results import Result, Settings
from benchmarks.targets import judge
from benchmarks.workloads import NAMES, make_workloads, mean3, slope_loop, whole_slope_loop
from tilewise import cli
from tilewise._cpus import available_cpus

ROOT = Path(__file__).resolve().parent.parent
HEADING = re.compile(r"^### (?P<name>[\w-]+): ", re.MULTILINE)
ROW = re.compile(r"^\| (?P<label>[^|]+?) \| (?P<median>\d+\.\d{4}) \| ", re.MULTILINE)
#: The only names the benchmarks take from tilewise beyond its public API.
ALLOWED_PRIVATE = {
    "tilewise._cpus": {"available_cpus"},  # the default --workers, the library's own
    "tilewise.executors.dask": {"MALLOC_TRIM_SETTING"},  # one name for the Dask setting
    "tilewise._reach": {"check_reach"},  # the radius check, timed apart from the compile
}


def run_benchmark(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module`` from the repository's root, as `make bench` does (not installed)."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.linux
@pytest.mark.slow
def test_quick_run_reports_every_method_of_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    done = run_benchmark("benchmarks", "--quick", "--out", str(out))
    report = (out / "results.md").read_text(encoding="utf-8")
    assert done.stdout.strip() == report.strip()  # the table is printed too
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "bench.png").stat().st_size > 10_000

    sections = dict(zip(HEADING.findall(report), HEADING.split(report)[2::2], strict=True))
    workloads = make_workloads(quick=True, file_gib=1 / 32)
    assert list(sections) == [w.name for w in workloads] == list(NAMES)
    for workload in workloads:
        rows = [m["label"].strip("*") for m in ROW.finditer(sections[workload.name])]
        expected = [METHODS[key].label(workload, available_cpus()) for key in workload.methods]
        assert rows == expected, workload.name

    figures = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert {(r["workload"], r["method"]) for r in figures["results"]} == {
        (w.name, key) for w in workloads for key in w.methods
    }
    for result in figures["results"]:
        assert result["error"] is None, result
        assert result["check"] == "ok", result  # equal to the whole-array call
        assert result["pinned"] > 0
        assert result["rss"] >= result["pinned"] // 2
        assert len(result["seconds"]) >= 1
    # Every method key runs in at least one quick workload, so none breaks unseen.
    assert {r["method"] for r in figures["results"]} == set(METHODS)


@pytest.mark.linux
@pytest.mark.slow
def test_geotiff_benchmark_checks_every_method_against_numpy(tmp_path: Path) -> None:
    """Each way of making the slope COG runs, is checked against numpy, and is reported."""
    pytest.importorskip("rasterio")
    from benchmarks import geotiff

    out = tmp_path / "report"
    work = ["--work", str(tmp_path / "work"), "--out", str(out)]
    run_benchmark("benchmarks.geotiff", "--sizes", "small", "--runs", "1", *work)
    report_json = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert report_json["codec_megapixels_per_second"] > 0
    figures = report_json["small"]
    assert list(figures) == list(geotiff.METHODS)
    for method, result in figures.items():
        assert "failed" not in result, (method, result)
        assert result["error"] < 1e-3, method  # degrees, float32 arithmetic in another order
        assert result["bytes"] > 0
        assert result["pinned"][0] > 0
    report = (out / "results.md").read_text(encoding="utf-8")
    assert all(label in report for label in geotiff.LABELS.values())
    assert "tilewise pins at most 400 MiB" in report
    assert "the codec alone" in report


@pytest.mark.slow
@pytest.mark.linux
def test_storage_benchmark_checks_every_method_against_scipy(tmp_path: Path) -> None:
    """Each method runs on each store, is checked against scipy, and is reported."""
    from benchmarks import storage

    out = tmp_path / "report"
    work = ["--work", str(tmp_path / "work"), "--out", str(out)]
    run_benchmark(
        "benchmarks.storage", "--sizes", "small", "--s3-sizes", "small", "--runs", "1", *work
    )
    report_json = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(report_json) == ["local-small", "npy-small", "s3-small"]
    for store, figures in report_json.items():
        assert list(figures) == list(storage.METHODS[store.split("-")[0]])
        for method, result in figures.items():
            assert "failed" not in result, (method, result)
            assert result["error"] < 1e-6, method
            assert result["pinned"][0] > 0
    report = (out / "results.md").read_text(encoding="utf-8")
    assert "tilewise pins at most 400 MiB" in report
    assert "### s3, small" in report
    assert "x the MP/s of memmap-copy-durable" in report


@pytest.mark.slow
@pytest.mark.linux
def test_volume_benchmark_checks_every_method_against_the_whole_call(tmp_path: Path) -> None:
    """Each method runs on the same volume, equals scipy's whole call there, and is reported."""
    from benchmarks import volume

    out = tmp_path / "report"
    small = ["--sizes", "small", "--kernel-sizes", "small"]
    run_benchmark("benchmarks.volume", *small, "--runs", "1", "--out", str(out))
    report_json = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(report_json) == ["gaussian-small", "kernel-small"]
    for name, figures in report_json.items():
        assert list(figures) == list(volume.WORKLOADS[name.split("-")[0]])
        for method, result in figures.items():
            assert "failed" not in result, (method, result)
            if method == "numpy":  # float32 sums, not the kernel's float64
                assert result["error"] < 1e-4
            else:
                assert result["error"] == 0.0, method  # the same arithmetic: bit for bit
            assert result["pinned"][0] > 0
    report = (out / "results.md").read_text(encoding="utf-8")
    assert "tilewise >= 1.3x dask's speed" in report
    assert "tilewise >= 1.0x numba-prange's speed" in report
    assert "input + output" in report


@pytest.mark.linux
def test_memory_window_sees_a_child_process_allocation() -> None:
    """A child that holds 200 MiB, told when to allocate and to free through a pipe."""
    script = (
        "import sys\n"
        "sys.stdin.readline()\n"
        "block = bytearray(200 * 2**20)\n"
        "print('held', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    with (
        subprocess.Popen(
            [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as child,
        TreeSampler(os.getpid()) as sampler,
    ):
        assert child.stdin is not None
        assert child.stdout is not None
        sampler.open()
        child.stdin.write("allocate\n")
        child.stdin.flush()
        assert child.stdout.readline() == "held\n"
        peak = sampler.close()
        child.stdin.write("done\n")
        child.stdin.flush()
        child.wait(timeout=30)
    if not Path("/proc/self/smaps_rollup").exists():
        pytest.skip("no /proc/PID/smaps_rollup on this system")
    assert peak.processes >= 2
    assert peak.pinned >= 200 * 2**20
    assert peak.rss >= peak.pinned - 50 * 2**20


@pytest.mark.parametrize(("func", "halo"), [(np.square, 0), (mean3, 1)])
def test_hand_written_alternatives_equal_the_whole_array_call(func: Any, halo: int) -> None:
    image = np.random.default_rng(1).random((90, 70), dtype=np.float32)
    expected = func(image)
    results = {
        "pool": alternatives.pool_imap(func, image, halo, 16, 2),
        "shm-pool": alternatives.shared_memory_pool(func, image, halo, 16, 2),
        "joblib": alternatives.joblib_blocks(func, image, halo, 16, 2),
    }
    for name, result in results.items():
        np.testing.assert_array_equal(result, expected, err_msg=name)


def test_pure_python_slope_blocks_equal_the_whole_loop() -> None:
    dem = np.random.default_rng(2).random((40, 30), dtype=np.float32) * 100
    expected = whole_slope_loop(dem)
    np.testing.assert_array_equal(alternatives.pool_imap(slope_loop, dem, 1, 4, 2), expected)


def _result(workload: str, method: str, seconds: float, pinned: int = 0) -> Result:
    return Result(
        workload,
        method,
        label=method,
        tilewise=method.startswith("tilewise"),
        seconds=(seconds,),
        pinned=pinned,
        check="ok",
    )


def test_targets_judge_ratios_against_the_whole_array_call() -> None:
    workloads = make_workloads(quick=False, file_gib=4.0)
    settings = Settings.make(quick=False, workers=2, file_gib=4.0)
    fast = [
        _result("square", "whole", 0.030),
        _result("square", "tilewise-threads", 0.040),
        _result("square", "dask-threads", 0.150),
        _result("gaussian", "whole", 1.0),
        _result("gaussian", "tilewise-threads", 0.6),  # 1.67x: short of 1.8x
    ]
    verdicts = {v.target: v for v in judge(fast, workloads, settings)}
    square = verdicts["square: threads within 1.5x of the whole-array call"]
    assert square.met == "yes"
    assert square.ratio.startswith("1.33x")
    assert "dask-threads" in square.alternative
    gaussian_verdict = verdicts["gaussian: threads at least 1.8x faster than the whole-array call"]
    assert gaussian_verdict.met.startswith("**no**")
    assert len(verdicts) == 2  # nothing is judged that was not measured


def test_file_targets_say_when_measured_at_another_size() -> None:
    workloads = make_workloads(quick=False, file_gib=1.0)
    settings = Settings.make(quick=False, workers=2, file_gib=1.0)
    results = [
        _result("file", "whole-file", 10.0, pinned=3000 * 2**20),
        _result("file", "tilewise-threads", 2.0, pinned=60 * 2**20),
        _result("file", "tilewise-processes", 3.0, pinned=500 * 2**20),
        _result("file", "dask-zarr-threads", 4.0, pinned=1600 * 2**20),
    ]
    verdicts = judge(results, workloads, settings)
    by_source = {v.source: v for v in verdicts}
    rate = by_source["product, #5"]
    assert rate.ratio.startswith("2.00x")
    assert rate.met == "yes (measured on 1.00 GiB)"
    spec_memory = by_source["product"]
    assert spec_memory.met.startswith("**no**")  # 500 MiB > 400 MiB, the worst run counts
    assert "500 MiB" in spec_memory.tilewise


def test_first_wave_target_compares_the_default_output_with_out() -> None:
    workloads = make_workloads(quick=True, file_gib=1 / 32)
    settings = Settings.make(quick=True, workers=2, file_gib=None)
    target = (
        "first-wave, 4 tiles of 0.5 s on threads (4): the default output within 1.1x "
        "of out= a preallocated array"
    )

    def verdict(default: float) -> Any:
        results = [
            _result("first-wave", "whole", 0.5),
            _result("first-wave", "tilewise-threads-out", 0.5),
            _result("first-wave", "tilewise-threads", default),
        ]
        (found,) = [v for v in judge(results, workloads, settings) if v.target == target]
        return found

    waits = verdict(1.0)  # the first tile alone, then the other three
    assert waits.ratio == "2.00x the time of out="
    assert waits.met.startswith("**no**")
    assert "0.500 s" in waits.alternative
    assert "0.500 s" in waits.reference
    assert verdict(0.52).met == "yes"


def test_missing_packages_name_the_requirements(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(suite.NEEDED, "no_such_module_for_bench", "no-such-package")
    assert bench_main(["--quick", "--out", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "no-such-package: pip install -r benchmarks/requirements.txt" in error
    assert not any(tmp_path.iterdir())  # nothing ran


def test_command_line_names_the_workloads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        bench_main(["--only", "nope"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "nope" in error
    assert all(name in error for name in NAMES)  # the choices are the workloads'


def test_the_report_quotes_the_command() -> None:
    args = build_parser().parse_args(["--quick", "--workers", "3", "--only", "file", "first-wave"])
    assert command(args) == (
        "python -m benchmarks --quick --out out/bench --workers 3 --only file first-wave"
    )


def test_the_library_has_no_bench_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["bench", "--quick"])
    assert exited.value.code == 2
    assert "bench" in capsys.readouterr().err


def test_benchmarks_measure_tilewise_through_its_public_api() -> None:
    """Every ``tilewise`` import of the benchmarks is public, or one of :data:`ALLOWED_PRIVATE`."""
    private = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [(node.module, alias.name) for alias in node.names]
            else:
                continue
            for module, name in modules:
                if module != "tilewise" and not module.startswith("tilewise."):
                    continue
                public = module == "tilewise" and not (name or "").startswith("_")
                if not public and name not in ALLOWED_PRIVATE.get(module, set()):
                    private.append(f"{path.name}:{node.lineno}: {module} {name or ''}".strip())
    assert private == []


def test_the_wheel_holds_the_package_and_no_benchmark(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("tilewise-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert {"tilewise/__init__.py", "tilewise/cli.py", "tilewise/py.typed"} <= set(names)
    dist_info = f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info/"
    assert [n for n in names if not n.startswith(("tilewise/", dist_info))] == []
    assert [n for n in names if "bench" in n] == []
