"""``fedlearn`` command line: every error is one line on stderr and a non-zero exit code."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from fedlearn.cli import report as report_cli
from fedlearn.cli import runs
from fedlearn.errors import ConfigError, FedlearnError

# Commands whose modules import web3 (a second or more): loaded only when one of them is asked for, so that
# `fedlearn run` with a bad config answers at once.
CHAIN_COMMANDS = {
    "contracts": ("fedlearn.cli.chain", "Solidity contracts"),
    "chain": ("fedlearn.cli.chain", "deploy, settle, fund, stake and slash on chain"),
    "license": ("fedlearn.cli.license", "license the model and share its fees"),
    "gov": ("fedlearn.cli.license", "govern the license and reward parameters by token vote"),
    "pilot": ("fedlearn.cli.pilot", "provision kits, start a pilot's parties, or run one on this machine"),
}


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    """The config file, as ``--config FILE`` or as the command's one positional argument (``fedlearn run x.toml``:
    how most tools take their input file)."""
    parser.add_argument("config_file", nargs="?", type=Path, metavar="CONFIG", help="TOML config file (as --config)")
    parser.add_argument("--config", type=Path, help="TOML config file (defaults apply to missing keys)")


def _one_config(args: argparse.Namespace) -> None:
    """Folds the positional config file into ``args.config``; two different files are refused."""
    given = getattr(args, "config_file", None)
    if given is None:
        return
    if args.config is not None and args.config != given:
        raise ConfigError(f"two config files given: {given} and --config {args.config}; give one")
    args.config = given


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; the chain commands' own options only when ``command`` is one of them."""
    parser = argparse.ArgumentParser(
        prog="fedlearn",
        description="Federated learning where every institution is paid on chain for what its updates contributed.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train a federation, score every update, pay every round on chain")
    _config_arguments(run)
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override one config key; repeatable")
    run.add_argument("--verbose", action="store_true", help="show Flower's and the engine's logs")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its last completed round")
    run.add_argument("--stop-after", type=int, metavar="ROUND", help="stop (resumably) after this round")
    run.set_defaults(handler=runs.run)

    claim = sub.add_parser("claim", help="claim a run's rewards on chain and print balances")
    claim.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    claim.add_argument("--institution", metavar="NAME", help="only this institution (default: all)")
    claim.set_defaults(handler=runs.claim)

    settle = sub.add_parser("settle", help="send a run's settlements and slashes left waiting for a node")
    settle.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    settle.set_defaults(handler=runs.settle)

    verify = sub.add_parser("verify", help="recompute a run's roots and model hashes and compare with the chain")
    verify.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    verify.set_defaults(handler=runs.verify)

    submit = sub.add_parser("submit", help="start a run on a SuperLink (flwr run) and exit with how it ended")
    submit.add_argument("superlink", metavar="SUPERLINK", help="the SuperLink connection's name in FLWR_HOME")
    submit.add_argument("--app", type=Path, default=Path("."), help="the Flower app directory (%(default)s)")
    submit.add_argument("--run-config", default="", help='"key=value key=value", as flwr run takes it')
    submit.add_argument("--no-follow", action="store_true", help="do not stream the run's log")
    submit.set_defaults(handler=runs.submit)

    show = sub.add_parser("config", help="print the effective config as TOML")
    _config_arguments(show)
    show.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    show.set_defaults(handler=runs.show_config)

    report_cli.register(sub)
    if command in CHAIN_COMMANDS:
        importlib.import_module(CHAIN_COMMANDS[command][0]).register(sub)
    else:
        for name, (_, text) in CHAIN_COMMANDS.items():
            sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Libraries' deprecation notices (websockets under Ray, click under typer) are for their developers, not
    # for someone running a federation; they would bury the one line an error gets.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        _one_config(args)
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe fails here, inside the try, not at the interpreter's exit
        return code
    except FedlearnError as exc:
        print(f"fedlearn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print("fedlearn: interrupted" + (f"; {exc}" if str(exc) else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say. stdout goes to /dev/null so that the interpreter's
        # flush at exit does not fail on the closed pipe once more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command whose pipe closed


if __name__ == "__main__":
    sys.exit(main())
