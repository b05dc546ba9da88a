"""A side-by-side benchmark's methods, each in a process of its own, and their figures back.

A child prints its report as one line of JSON after a prefix of its
benchmark's, so that anything else a library prints on stdout is skipped.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Any


def report_to_parent(prefix: str, report: dict[str, Any]) -> None:
    """The child's side: its figures, on one line of stdout."""
    print(prefix + json.dumps(report), flush=True)


def run_child(module: str, prefix: str, method: str, args: list[str]) -> dict[str, Any]:
    """``python -m module --child method args...``, from the repository's root: its figures.

    A child that fails gives ``{"failed": its last line of stderr}``, its
    stderr's end printed here.
    """
    command = [sys.executable, "-m", module, "--child", method, *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"{method} failed:\n{done.stderr[-4000:]}", file=sys.stderr)
        return {"failed": done.stderr.strip().splitlines()[-1][:200]}
    line = next(line for line in done.stdout.splitlines() if line.startswith(prefix))
    report: dict[str, Any] = json.loads(line[len(prefix) :])
    return report


def median_rate(result: dict[str, Any], mega: float) -> float:
    """Millions of pixels (or voxels) per second at the median run; 0 for a failed method."""
    if "seconds" not in result:
        return 0.0
    return mega / statistics.median(result["seconds"])
