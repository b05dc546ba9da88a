"""The layering contract in pyproject.toml holds, and breaks when an import runs the wrong way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports" + (".exe" if os.name == "nt" else ""))

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed")


def lint_imports(package_parent: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        capture_output=True, text=True, env=env, cwd=package_parent, timeout=120, check=False,
    )  # fmt: skip


def test_the_package_keeps_its_layers() -> None:
    done = lint_imports(ROOT / "src", ROOT / "pyproject.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_grid_importing_an_executor_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "src" / "tilewise", tmp_path / "tilewise")
    grid = tmp_path / "tilewise" / "grid.py"
    grid.write_text(grid.read_text() + "\nimport tilewise.executors.processes  # the wrong way\n")
    done = lint_imports(tmp_path, ROOT / "pyproject.toml")
    assert done.returncode != 0
    assert "tilewise.grid is not allowed to import tilewise.executors" in done.stdout
