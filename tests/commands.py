"""The ``tilewise`` command as a shell user runs it: a fresh process, its exit code, its output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def tilewise_command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``tilewise ARGS...`` in ``cwd``, 100 columns wide, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "tilewise", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "100"},
    )
