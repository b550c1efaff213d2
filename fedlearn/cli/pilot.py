"""``fedlearn pilot``: provision a pilot's kits, start its parties from them, or run a whole one on this machine."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from fedlearn.config import parse_overrides
from fedlearn.errors import ConfigError
from fedlearn.pilot import parties
from fedlearn.pilot.kits import Kit, provision
from fedlearn.pilot.project import Project, host_port


def _provision(args: argparse.Namespace) -> int:
    project = Project.load(args.pilot_file)
    kits = provision(project, args.out)
    print(f"federation {project.federation}: {len(kits)} kits in {args.out}")
    for kit in kits:
        print(f"  {kit.name:<20} {kit}")
    print(f"  {'(CA, keep offline)':<20} {args.out / 'ca'}")
    return 0


def _coordinator(args: argparse.Namespace) -> int:
    from fedlearn.chain.session import ETH_TESTER
    from fedlearn.config import RunConfig
    from fedlearn.federation.coordinator import check_node
    from fedlearn.federation.submit import submit

    kit = Kit.read(args.kit)
    parties.check_coordinator(kit)
    run_config = parties.resolved_run_config(kit, parse_overrides(args.set))
    if not os.environ.get(args.key_env):
        raise ConfigError(f"${args.key_env} is empty: the ServerApp signs every round with the coordinator's key, "
                          "and it runs in the SuperLink's environment")
    config = RunConfig.load(run_config)
    if config.chain.enabled and config.chain.backend != ETH_TESTER:
        # Stakes, gas and the reward pool, read before any party starts: the ServerApp would find them short only
        # once every node had joined.
        check_node(config, [n for n in config.data.institution_names.split(",") if n], key_env=args.key_env)
    port = args.port or int(kit.superlink.rsplit(":", 1)[1])
    with parties.processes(kit.path / "state" / "logs") as group:
        env = parties.serve(kit, group, args.bind, port, os.environ[args.key_env], config.chain.key_env)
        print(f"SuperLink of {kit.federation} on {args.bind}:{port} (TLS, node authentication); "
              f"nodes registered in {kit.path / 'state' / 'nodes.toml'}")
        run_id = submit(args.app or _default_app(), kit.federation, str(run_config), env=env,
                        follow=not args.no_follow)
    print(f"run {run_id} completed")
    return 0


def _default_app() -> Path:
    from fedlearn.pilot.poc import app_dir

    return app_dir()


def _node(args: argparse.Namespace) -> int:
    given = host_port(args.superlink, "--superlink") if args.superlink else None
    kit = Kit.read(args.kit)
    data, rows = parties.check_node(kit, args.data_path)
    superlink = given or kit.superlink
    if not parties.check_superlink(kit, superlink):
        print(f"the SuperLink at {superlink} is not reachable yet; the SuperNode keeps trying")
    command = parties.node_command(kit, data, superlink, args.port)
    print(f"{kit.party}: {rows} rows in {data}; starting its SuperNode against {superlink}", flush=True)
    return parties.run_node(kit, command)


def _up(args: argparse.Namespace) -> int:
    from fedlearn.pilot.poc import report, up

    workdir = args.dir or Path(tempfile.mkdtemp(prefix="fedlearn-pilot-"))
    # With --json, stdout carries the figures alone; the progress goes to stderr.
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    result = up(workdir, args.institutions, args.rounds, args.seed, say=say)
    figures = report(result)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    rounds = result.round_seconds
    print(f"\npilot up: {args.institutions} institutions, {len(rounds)} rounds in {result.wall_seconds:.1f} s "
          f"(run {result.run_seconds:.1f} s; mean round {sum(rounds) / len(rounds):.2f} s)")
    print(f"bytes per round per institution: {sum(result.bytes_down) // len(rounds):,} down, "
          f"{sum(result.bytes_up) // len(rounds):,} up")
    for name, earned in result.earned.items():
        print(f"  {name:<12} earned {earned / 1e18:10.4f}  claimed with its own key "
              f"{result.claimed[name] / 1e18:10.4f}")
    print(f"run directory: {result.run_dir}\nwork directory: {workdir}")
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1..65535")
    return port


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `pilot` to the `fedlearn` command line."""
    pilot = subparsers.add_parser("pilot", help="provision kits, start a pilot's parties, or run one on this machine")
    sub = pilot.add_subparsers(dest="pilot_command", required=True)

    p = sub.add_parser("provision", help="write one kit per party (CA, TLS, node keys, configs, start scripts)")
    p.add_argument("pilot_file", type=Path, metavar="PILOT_TOML")
    p.add_argument("--out", type=Path, default=Path("kits"), help="a new directory for the kits (%(default)s)")
    p.set_defaults(handler=_provision)

    p = sub.add_parser("coordinator", help="start the SuperLink from the coordinator's kit, register the "
                                           "institutions' keys, run the federation, exit with its outcome")
    p.add_argument("kit", type=Path, metavar="KIT")
    p.add_argument("--bind", default="0.0.0.0", help="address the SuperLink listens on (%(default)s)")
    p.add_argument("--port", type=_port, help="port (default: the kit's superlink port)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one key of the kit's run.toml; repeatable")
    p.add_argument("--key-env", default="FEDLEARN_PRIVATE_KEY", help="variable holding the coordinator's key")
    p.add_argument("--app", type=Path, help="the Flower app directory (default: this checkout)")
    p.add_argument("--no-follow", action="store_true", help="do not stream the run's log")
    p.set_defaults(handler=_coordinator)

    p = sub.add_parser("node", help="check an institution's kit and data file, then start its SuperNode")
    p.add_argument("kit", type=Path, metavar="KIT")
    p.add_argument("--data-path", help="the institution's own data file, relative to the current directory "
                   "(default: data_path in kit.toml, relative to the kit)")
    p.add_argument("--superlink", metavar="HOST:PORT", help="default: the kit's")
    p.add_argument("--port", type=_port, help="the SuperNode's local ClientApp port (Flower's default 9094)")
    p.set_defaults(handler=_node)

    p = sub.add_parser("up", help="a whole pilot on 127.0.0.1: anvil, governed contracts, every institution's "
                                  "stake, TLS SuperLink, authenticated SuperNodes on their own files, a paid run, "
                                  "claims with each institution's key")
    p.add_argument("--institutions", type=int, default=3, help="institutions, each with its own kit and file "
                   "(%(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the run (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data's split and the run (%(default)s)")
    p.add_argument("--dir", type=Path, help="a new work directory (default: a temporary one)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(handler=_up)
