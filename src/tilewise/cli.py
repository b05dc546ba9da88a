"""The ``tilewise`` command line, a thin front end over the public API."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tilewise",
        description="Run a function over the tiles, or every pixel, of a large image.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="shade a synthetic terrain and write a PNG preview")
    demo.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(6000, 4000),
        metavar=("ROWS", "COLS"),
        help="terrain size in pixels (default: 6000 4000, 24 MP)",
    )
    demo.add_argument("--out", type=Path, default=Path("out"), help="output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from tilewise.demo import run

        rows, cols = args.size
        run(rows, cols, out_dir=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
