"""The benchmark scripts run end to end (no timing is asserted: the machine is shared)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# A table row: | label | median | ratio | megapixels/s |
ROW = re.compile(r"^\| (?P<label>[^|]+) \| \d+\.\d{4} \| \d+\.\d\dx \| \d+ \|$", re.MULTILINE)


def test_bench_foundation_quick_prints_both_tables() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_foundation.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "### np.square, 1200x800 float32" in done.stdout
    assert "### gaussian_filter(sigma=3), halo 12, 1200x800 float32" in done.stdout
    labels = [match["label"].split(",")[0] for match in ROW.finditer(done.stdout)]
    assert labels == [
        "whole array: np.square(img)",
        "tilewise threads",
        "tilewise serial",
        "dask map_blocks threads",
        "whole array: gaussian_filter(img",
        "tilewise threads",
        "tilewise serial",
        "dask map_overlap threads",
        "skimage apply_parallel",
    ]
