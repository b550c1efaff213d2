"""``fedlearn report RUN_DIR``: rebuild a run's plots, HTML page and CSV/JSON exports."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report RUN_DIR [--out DIR]`` to the ``fedlearn`` command line."""
    parser = subparsers.add_parser("report", help="plots, an HTML page and CSV/JSON exports of a run directory")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a directory written by `fedlearn run`")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where to write the report (default: RUN_DIR/report)")
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from fedlearn.report import build_report

    print(build_report(args.run_dir, args.out))
    return 0
