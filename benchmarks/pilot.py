"""A pilot on this machine against the same federation in one process: what deployment costs.

``fedlearn pilot up`` (anvil, a TLS SuperLink with node authentication, one authenticated SuperNode per
institution started from its kit on its own file, each round settled on anvil, claims with each institution's
key), then the very same run config, data files and node configs handed to the in-process engine (the real
ServerApp and ClientApp, no processes, no network; settlement on the embedded chain). Reported: wall time of
both, seconds per round (training, scoring, evaluation; from rounds.json) and their ratio, and the bytes each
institution sent and received per round as Flower serializes the messages.

    .venv/bin/python benchmarks/pilot.py [--institutions 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tomllib
from pathlib import Path

from common import print_table, whole, write_results  # noqa: I001 - puts the project root on sys.path
from flwr.app import Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedlearn.config import RunConfig
from fedlearn.federation.coordinator import RunOptions, build_server_app
from fedlearn.federation.institution import build_client_app
from fedlearn.federation.localgrid import LocalGrid
from fedlearn.pilot.kits import Kit
from fedlearn.pilot.poc import report, up


def in_process(workdir: Path, out: Path) -> tuple[float, list[float], float]:
    """The pilot's own run config and files, run by the in-process engine; (wall seconds, round seconds, final
    test accuracy)."""
    coordinator = Kit.read(workdir / "kits" / "coordinator")
    table = tomllib.loads((coordinator.path / "state" / "run.toml").read_text())
    table["data"]["node_registry"] = ""  # node ids are Flower's; the in-process grid numbers its own
    table["chain"] = {"backend": "eth-tester"}
    table["run"]["output_dir"] = str(out)
    path = out / "run.toml"
    out.mkdir(parents=True)
    import tomli_w

    path.write_text(tomli_w.dumps(table))
    config = RunConfig.load(path)
    names = config.data.institution_names.split(",")
    nodes = [{"institution": name, "data-path": str(next((workdir / "sites" / name).glob("data.*"))),
              "federation": coordinator.federation_id} for name in names]
    run_dir = out / "in-process"
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    started = time.perf_counter()
    build_server_app(config, RunOptions(run_dir=run_dir))(
        LocalGrid(build_client_app(config), len(names), node_configs=nodes),
        Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    wall = time.perf_counter() - started
    rounds = json.loads((run_dir / "rounds.json").read_text())[1:]
    return wall, [float(r["seconds"]) for r in rounds], float(rounds[-1]["test_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--institutions", type=whole(2), default=3)
    parser.add_argument("--rounds", type=whole(1), default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pilot-bench-"))
    pilot = up(workdir / "poc", args.institutions, args.rounds, say=lambda line: print(line, flush=True))
    local_wall, local_rounds, local_accuracy = in_process(workdir / "poc", workdir / "local")
    pilot_accuracy = json.loads((pilot.run_dir / "summary.json").read_text())["final_test_accuracy"]
    pilot_round = sum(pilot.round_seconds) / len(pilot.round_seconds)
    local_round = sum(local_rounds) / len(local_rounds)
    rows = [
        ["pilot up (processes, TLS, anvil)", f"{pilot.wall_seconds:.1f}", f"{pilot.run_seconds:.1f}",
         f"{pilot_round:.2f}"],
        ["in-process engine (same config and files)", f"{local_wall:.1f}", f"{local_wall:.1f}", f"{local_round:.2f}"],
    ]
    rows[0].append(f"{pilot_accuracy:.4f}")
    rows[1].append(f"{local_accuracy:.4f}")
    print_table(["", "wall s", "run s", "s / round", "final test accuracy"], rows)
    per_round = {"down": sum(pilot.bytes_down) // len(pilot.bytes_down),
                 "up": sum(pilot.bytes_up) // len(pilot.bytes_up)}
    print(f"round time ratio pilot / in-process: {pilot_round / local_round:.1f}; "
          f"wall ratio: {pilot.wall_seconds / local_wall:.1f}")
    print(f"bytes per round per institution: {per_round['down']:,} down, {per_round['up']:,} up")
    write_results("pilot", {
        "institutions": args.institutions, "rounds": args.rounds,
        "pilot": {**report(pilot), "final_test_accuracy": pilot_accuracy},
        "in_process": {"wall_seconds": local_wall, "round_seconds": local_rounds,
                       "final_test_accuracy": local_accuracy},
        "round_ratio": pilot_round / local_round, "wall_ratio": pilot.wall_seconds / local_wall,
        "bytes_per_round_per_institution": per_round,
    })


if __name__ == "__main__":
    main()
