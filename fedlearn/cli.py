"""``fedlearn`` command line: every error is one line on stderr and a non-zero exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedlearn.config import RunConfig
from fedlearn.errors import FedlearnError


def _run(args: argparse.Namespace) -> int:
    from fedlearn.simulation import run_federation

    config = RunConfig.load(args.config, args.set)
    summary = run_federation(config, quiet=not args.verbose, progress=not args.no_progress)
    print()
    print(format_table(summary))
    print(f"\nrun directory: {summary['run_dir']}")
    return 0


def format_table(summary: dict[str, Any]) -> str:
    """Per institution: examples, cumulative score, share of the positive score."""
    rows = summary["institutions"]
    width = max([len("institution")] + [len(r["name"]) for r in rows])
    lines = [
        f"final test accuracy {summary['final_test_accuracy']:.4f} after {summary['rounds']} rounds",
        f"{'institution':<{width}}  {'examples':>8}  {'cumulative score':>16}  {'share':>7}",
    ]
    for r in rows:
        lines.append(
            f"{r['name']:<{width}}  {r['examples']:>8}  {r['cumulative_score']:>16.4f}  {r['share']:>7.2%}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedlearn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a federated training with contribution scoring (simulation)")
    run.add_argument("--config", type=Path, help="TOML config file (defaults apply to missing keys)")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override one config key; repeatable")
    run.add_argument("--verbose", action="store_true", help="show Flower's and the engine's logs")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(handler=_run)

    show = sub.add_parser("config", help="print the effective config as TOML")
    show.add_argument("--config", type=Path)
    show.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    show.set_defaults(handler=lambda a: print(RunConfig.load(a.config, a.set).to_toml()) or 0)

    try:
        from fedlearn.chain.cli import register
    except ImportError:
        pass
    else:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except FedlearnError as exc:
        print(f"fedlearn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fedlearn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
