"""``python -m benchmarks``: every workload through every method, each in a process of its own.

For each workload (:mod:`benchmarks.workloads`) and each of its methods
(:mod:`benchmarks.methods`), the suite starts a runner
(:mod:`benchmarks.runner`), samples the memory of the runner's whole
process tree while it runs its warm-up and timed runs, and collects its
timings. Then it writes ``results.md``, ``results.json`` and ``bench.png``
(:mod:`benchmarks.report`) and prints the Markdown.

The runners find this package, which is not installed, through
``PYTHONPATH``: the folder that holds it comes first there, for them and for
the workers and clusters they start.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from benchmarks.memory import TreeSampler, Usage
from benchmarks.results import QUIET, Result, Settings

if TYPE_CHECKING:  # importing workloads imports scipy, which may be missing
    from benchmarks.workloads import Workload

#: Modules the suite imports, by the name pip knows them by; benchmarks/requirements.txt pins them.
NEEDED = {
    "scipy": "scipy",
    "skimage": "scikit-image",
    "dask": "dask",
    "distributed": "distributed",
    "joblib": "joblib",
    "matplotlib": "matplotlib",
    "numba": "numba",
    "zarr": "zarr",
}

#: The folder that holds this package: the repository's root.
ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"


def missing_modules() -> list[str]:
    """The packages of benchmarks/requirements.txt that are not installed."""
    return [
        package for module, package in NEEDED.items() if importlib.util.find_spec(module) is None
    ]


def run_suite(
    *,
    quick: bool,
    out: Path,
    workers: int | None = None,
    file_gib: float | None = None,
    only: Sequence[str] | None = None,
    command: str = "python -m benchmarks",
) -> int:
    """Run the suite, write its report into ``out``, print it; 1 if a method failed.

    A missed target is reported, not a failure: the exit status says whether
    every method ran and gave the whole-array call's result.
    """
    missing = missing_modules()
    if missing:
        raise ModuleNotFoundError(
            f"the benchmarks need {', '.join(missing)}: "
            f"pip install -r {REQUIREMENTS.relative_to(ROOT)}"
        )
    from benchmarks import report
    from benchmarks.workloads import make_workloads

    settings = Settings.make(quick, workers, file_gib)
    workloads = [
        w for w in make_workloads(settings.quick, settings.file_gib) if not only or w.name in only
    ]
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="tilewise-bench-"))
    # SIGTERM unwinds like Ctrl-C: the running method's process tree is
    # stopped and the input files are deleted on the way out.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        results = [r for w in workloads for r in _run_workload(w, settings, scratch)]
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(scratch, ignore_errors=True)
    text = report.write(
        out,
        workloads=workloads,
        results=results,
        settings=settings,
        command=command,
        elapsed=time.perf_counter() - started,
    )
    print(text)
    return 1 if any(r.failed and not (r.error or "").startswith("skipped") for r in results) else 0


def _run_workload(workload: Workload, settings: Settings, scratch: Path) -> list[Result]:
    """Every method of ``workload``, one after the other; its input files made first."""
    from benchmarks.methods import METHODS
    from benchmarks.workloads import generate_files

    _say(f"{workload.name}: {workload.size}")
    # The suite's own numba cache: the first process compiles the pixelwise
    # kernel from scratch, and that compile time is reported as such.
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": str(scratch / "numba-cache"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), *_python_path()]),
    }
    folder = None
    if workload.on_files:
        folder = scratch / "files"
        folder.mkdir()
        begin = time.perf_counter()
        generate_files(folder, workload.shape[0])
        _say(f"  made the input files in {time.perf_counter() - begin:.1f} s")
    results = []
    for key in workload.methods:
        method = METHODS[key]
        base = Result(workload.name, key, method.label(workload, settings.workers), method.tilewise)
        if key == "whole-file" and not _fits_in_memory(workload.pixels * 4):
            result = _replace(base, error="skipped: the whole file does not fit in memory")
        else:
            result = _quietest(base, settings, folder, env)
        results.append(result)
        _say(f"  {_summary(result)}")
    if folder is not None:
        shutil.rmtree(folder)
    return results


def _python_path() -> list[str]:
    """The entries of ``PYTHONPATH`` already set, for the runners to keep after :data:`ROOT`."""
    return [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]


def _quietest(base: Result, settings: Settings, folder: Path | None, env: dict[str, str]) -> Result:
    """The method's figures from its quietest runner, of up to ``settings.attempts``.

    On a shared machine a burst of work elsewhere can double a method's
    time; a method measured while other processes took more than
    :data:`QUIET` of the CPUs runs again, and the attempt that other
    processes disturbed least is kept, whatever its speed.
    """
    best = latest = _run_method(base, settings, folder, env)
    for attempt in range(2, settings.attempts + 1):
        if latest.failed or _disturbance(best) <= QUIET:
            break
        busy = _disturbance(latest)
        _say(f"  ({latest.label}: other processes took {busy:.0%} of the CPUs; again)")
        latest = _run_method(base, settings, folder, env)
        if latest.failed:
            return _replace(latest, attempts=attempt)
        best = _replace(min(best, latest, key=_disturbance), attempts=attempt)
    return best


def _disturbance(result: Result) -> float:
    """The share of the CPUs others took during its runs; 0 when unknown (too short to tell)."""
    return 0.0 if result.elsewhere is None else result.elsewhere


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _summary(result: Result) -> str:
    if result.error is not None:
        return f"{result.label}: {result.error}"
    median = result.median or 0.0
    pinned = (result.pinned or 0) / 2**20
    check = "" if result.check == "ok" else f"  CHECK FAILED: {result.check}"
    elsewhere = "" if result.elsewhere is None else f", CPU elsewhere {result.elsewhere:.0%}"
    return f"{result.label}: median {median:.4f} s, pinned {pinned:.0f} MiB{elsewhere}{check}"


def _replace(result: Result, **changes: Any) -> Result:
    return Result(**{**asdict(result), **changes})


def _fits_in_memory(nbytes: int) -> bool:
    """Whether the input, the result and scipy's work can all be in memory at once."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return 3 * nbytes < int(line.split()[1]) * 1024
    except OSError:
        pass
    return True


def _run_method(
    base: Result, settings: Settings, folder: Path | None, env: dict[str, str]
) -> Result:
    """One runner: its timings, and its process tree's peak memory over its runs."""
    from benchmarks.runner import PREFIX
    from benchmarks.runner import settings as runner_settings

    most = min(settings.most, 3) if folder is not None else settings.most
    argument = runner_settings(
        base.workload,
        base.method,
        quick=settings.quick,
        file_gib=settings.file_gib,
        folder=None if folder is None else str(folder),
        workers=settings.workers,
        most=most,
        least=min(settings.least, most),
        budget=settings.budget,
    )
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.runner", argument],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            start_new_session=True,  # its whole tree can be stopped, and nothing else
        ) as process,
    ):
        assert process.stdin is not None
        assert process.stdout is not None
        watchdog = threading.Timer(settings.timeout, _stop, (process,))
        watchdog.start()
        try:
            with TreeSampler(process.pid) as sampler:
                message, peak = _converse(process.stdout, process.stdin, sampler, PREFIX)
            process.wait()
        finally:
            watchdog.cancel()
            _stop(process)
        if message is None:
            stderr.seek(0)
            lines = stderr.read().strip().splitlines() or ["(nothing on stderr)"]
            how = f"exited with {process.returncode}"
            if process.returncode == -signal.SIGKILL:
                how = f"was stopped after {settings.timeout:g} s"
            return _replace(base, error=f"the runner {how}: {lines[-1]}")
    if "error" in message:
        return _replace(base, error=message["error"])
    return _replace(
        base,
        seconds=tuple(message["seconds"]),
        warmup=message["warmup"],
        pinned=None if peak is None else peak.pinned,
        rss=None if peak is None else peak.rss,
        processes=None if peak is None else peak.processes,
        elsewhere=None if peak is None else peak.elsewhere,
        setup=message["setup"],
        check=message["check"],
    )


def _converse(
    stdout: IO[str], stdin: IO[str], sampler: TreeSampler, prefix: str
) -> tuple[dict[str, Any] | None, Usage | None]:
    """Follow the runner's messages: open and close the memory window when it asks.

    The runner's last message (its figures, or its error) is returned with the
    peak; None if it ended without one.
    """
    peak = None
    for line in stdout:
        if not line.startswith(prefix):
            continue
        message = json.loads(line[len(prefix) :])
        event = message.get("event")
        if event == "open":
            sampler.open()
        elif event == "close":
            peak = sampler.close()
        else:
            return message, peak
        with contextlib.suppress(BrokenPipeError):
            stdin.write("go\n")
            stdin.flush()
    return None, peak


def _stop(process: subprocess.Popen[str]) -> None:
    """Kill what is left of the runner's session: its workers, clusters, trackers."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
