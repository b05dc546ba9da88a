"""``python -m benchmarks``: the suite's command line, run from the repository's root.

A malformed command line exits with 2 (argparse's convention), a missing
package or a failed method with 1, Ctrl-C with 130. A missed target is in
the report, not in the exit status.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from benchmarks.workloads import NAMES

PROG = "python -m benchmarks"
EXAMPLES = f"""\
examples:
  {PROG} --quick --out /tmp/bench      # small images, about a minute
  {PROG} --out out/bench               # the full suite (make bench), about 8 minutes on 2 cores
  {PROG} --only gaussian file --file-gib 4

Each method runs in a process of its own; the report (results.md, results.json,
bench.png) goes to --out. Needs pip install -r benchmarks/requirements.txt.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the workloads of the benchmark suite (pixel square, per-pixel slope in "
        "Python and compiled, a Gaussian filter with halo, file to file, per-tile overhead, "
        "the first wave of slow tiles) through every tilewise backend and through "
        "multiprocessing, dask, scikit-image, joblib and numba, each in a process of its own; "
        "report medians, ratios to the best plain call, megapixels per second and peak memory "
        "of the process tree, and judge the project's targets.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="small images, few timed runs, fewer alternatives"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/bench"),
        metavar="DIR",
        help="folder for results.md, results.json and bench.png (default: out/bench)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="workers of every parallel method (default: the CPUs available)",
    )
    parser.add_argument(
        "--file-gib",
        type=_positive_float,
        default=None,
        metavar="GIB",
        help="size of the file workload's input (default: 1, or 1/32 with --quick)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=NAMES,
        metavar="WORKLOAD",
        help=f"run only these workloads: {', '.join(NAMES)}",
    )
    return parser


def command(args: argparse.Namespace) -> str:
    """The command, as the report quotes it.

    >>> command(build_parser().parse_args(["--quick", "--only", "file", "--file-gib", "0.5"]))
    'python -m benchmarks --quick --out out/bench --file-gib 0.5 --only file'
    """
    words = [PROG] + (["--quick"] if args.quick else [])
    words += ["--out", str(args.out)]
    if args.workers:
        words += ["--workers", str(args.workers)]
    if args.file_gib:
        words += ["--file-gib", f"{args.file_gib:g}"]
    if args.only:
        words += ["--only", *args.only]
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from benchmarks.suite import run_suite

    try:
        return run_suite(
            quick=args.quick,
            out=args.out,
            workers=args.workers,
            file_gib=args.file_gib,
            only=args.only,
            command=command(args),
        )
    except ModuleNotFoundError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
