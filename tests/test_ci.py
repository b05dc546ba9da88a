"""The CI workflow runs what the README tells users to run, so the two cannot drift apart.

The workflow's syntax and security are checked by ``make lint`` (the
GitHub workflow schema, and zizmor); this module checks its content.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def readme_blocks(language: str) -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)
    return [[line for line in block.splitlines() if line.strip()] for block in blocks]


def job(name: str) -> dict[str, Any]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs: dict[str, dict[str, Any]] = workflow["jobs"]
    return jobs[name]


def run_lines(step: dict[str, Any]) -> list[str]:
    return [line for line in step.get("run", "").splitlines() if line.strip()]


def test_the_windows_job_runs_the_readmes_powershell_commands_verbatim() -> None:
    blocks = readme_blocks("powershell")
    assert len(blocks) == 2, "the README has a demo block and a test block for PowerShell"
    steps = [step for step in job("windows")["steps"] if "run" in step]
    assert [run_lines(step) for step in steps] == blocks
    assert all(step.get("shell") == "pwsh" for step in steps)


def test_the_linux_job_runs_the_readmes_test_command() -> None:
    commands = readme_blocks("sh")[0]  # the README opens with its two commands
    test_command = next(line.split("#")[0].strip() for line in commands if "test" in line)
    assert test_command == "make test"
    assert any(run_lines(step) == [test_command] for step in job("linux")["steps"])


def test_every_job_checks_out_without_keeping_credentials() -> None:
    for name in ("linux", "windows", "macos"):
        checkout = job(name)["steps"][0]
        assert checkout["uses"].startswith("actions/checkout@")
        assert checkout["with"]["persist-credentials"] is False


def test_actions_are_pinned_to_a_commit() -> None:
    workflow = WORKFLOW.read_text()
    uses = re.findall(r"uses: (\S+)", workflow)
    assert uses
    assert all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", use) for use in uses), uses
