"""``tilewise bench``: the suite runs end to end, and its parts measure what they claim.

No timing is asserted: the machine is shared. What is asserted is what
could silently go wrong: a method missing from the report, a result that
differs from the whole-array call, memory not seen, a target judged wrong.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tilewise import cli
from tilewise.bench import alternatives, suite
from tilewise.bench.machine import usable_cpus
from tilewise.bench.memory import TreeSampler
from tilewise.bench.methods import METHODS
from tilewise.bench.results import Result, Settings
from tilewise.bench.targets import judge
from tilewise.bench.workloads import NAMES, make_workloads, mean3, slope_loop, whole_slope_loop

HEADING = re.compile(r"^### (?P<name>[\w-]+): ", re.MULTILINE)
ROW = re.compile(r"^\| (?P<label>[^|]+?) \| (?P<median>\d+\.\d{4}) \| ", re.MULTILINE)


@pytest.mark.slow
def test_quick_run_reports_every_method_of_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "-m", "tilewise", "bench", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = (out / "results.md").read_text(encoding="utf-8")
    assert done.stdout.strip() == report.strip()  # the table is printed too
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "bench.png").stat().st_size > 10_000

    sections = dict(zip(HEADING.findall(report), HEADING.split(report)[2::2], strict=True))
    workloads = make_workloads(quick=True, file_gib=1 / 32)
    assert list(sections) == [w.name for w in workloads] == list(NAMES)
    for workload in workloads:
        rows = [m["label"].strip("*") for m in ROW.finditer(sections[workload.name])]
        expected = [METHODS[key].label(workload, usable_cpus()) for key in workload.methods]
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
    rate = by_source["SPEC §5, #5"]
    assert rate.ratio.startswith("2.00x")
    assert rate.met == "yes (measured on 1.00 GiB)"
    spec_memory = by_source["SPEC §5"]
    assert spec_memory.met.startswith("**no**")  # 500 MiB > 400 MiB, the worst run counts
    assert "500 MiB" in spec_memory.tilewise


def test_missing_packages_name_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(suite.NEEDED, "no_such_module_for_bench", "no-such-package")
    assert cli.main(["bench", "--quick", "--out", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert 'no-such-package: pip install "tilewise[bench]"' in error
    assert not any(tmp_path.iterdir())  # nothing ran


def test_command_line_names_the_workloads() -> None:
    assert cli.BENCH_WORKLOADS == NAMES
    done = subprocess.run(
        [sys.executable, "-m", "tilewise", "bench", "--only", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "nope" in done.stderr
