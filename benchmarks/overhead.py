"""Overhead of checking, scoring and settling: ``fedlearn run`` against plain Flower FedAvg, same seed.

Three runs in Flower's simulation engine in this one process, with the same data, model, clients and
server-side test evaluation: plain Flower FedAvg handed to ``Strategy.start`` (no reply checks, no scoring, no
run directory, no chain); fedlearn with scoring; fedlearn with scoring and settlement on eth-tester. Reported:
total wall time (engine start-up included) and the time from round 0's evaluation to the last round's end,
each over plain, and the gas of every settlement transaction.

    .venv/bin/python benchmarks/overhead.py [--rounds 20] [--institutions 10] [--method METHOD]

``--method`` defaults to the scoring method of ``configs/demo.toml`` (what a user runs).
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
import tempfile
import time
from pathlib import Path

from common import print_table, whole, write_results  # noqa: I001 - puts the project root on sys.path
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fedlearn.config import SCORING_METHODS, RunConfig
from fedlearn.federation.institution import build_client_app
from fedlearn.federation.roster import federated_split
from fedlearn.federation.simulation import run_federation
from fedlearn.federation.strategy import build_flower_strategy
from fedlearn.learning.models import init_model
from fedlearn.learning.training import evaluate
from fedlearn.payout.ledger import Ledger
from fedlearn.records.rundir import RoundResult


def plain_server_app(config: RunConfig, marks: dict[str, float]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        random.seed(config.run.seed)
        split = federated_split(config)
        model = init_model(config.model, split.test.X.shape[1], split.test.num_classes, config.run.seed)
        eval_model = copy.deepcopy(model)

        def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            eval_model.load_state_dict(arrays.to_torch_state_dict())
            loss, accuracy = evaluate(eval_model, split.test.X, split.test.y)
            marks.setdefault("first", time.perf_counter())
            marks["last"], marks["accuracy"] = time.perf_counter(), accuracy
            return MetricRecord({"test-accuracy": accuracy, "test-loss": loss})

        build_flower_strategy(config).start(
            grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=config.run.rounds,
            train_config=ConfigRecord({"seed": config.run.seed}), evaluate_fn=evaluate_global,
        )

    return app


def timed_plain(config: RunConfig) -> tuple[float, float, float]:
    marks: dict[str, float] = {}
    started = time.perf_counter()
    run_simulation(server_app=plain_server_app(config, marks), client_app=build_client_app(config),
                   num_supernodes=config.data.institutions,
                   backend_config={"init_args": {"logging_level": "ERROR", "log_to_driver": False}})
    return time.perf_counter() - started, marks["last"] - marks["first"], marks["accuracy"]


def timed_fedlearn(config: RunConfig) -> tuple[float, float, float, list[int]]:
    """(wall s, rounds s, final accuracy, gas per settled round) of a ``fedlearn run``."""
    marks: dict[str, float] = {}

    def observe(result: RoundResult, total: int) -> None:
        marks.setdefault("first", time.perf_counter())
        marks["last"] = time.perf_counter()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_federation(config.replace(run={"output_dir": tmp}), progress=False, observer=observe)
        gas: list[int] = []
        ledger_file = Path(summary["run_dir"]) / "ledger.sqlite"
        if ledger_file.exists():
            gas = [r.gas_used or 0 for r in Ledger.open(ledger_file).rounds()]
    return time.perf_counter() - started, marks["last"] - marks["first"], float(summary["final_test_accuracy"]), gas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=whole(1), default=20)
    parser.add_argument("--institutions", type=whole(2), default=10)
    parser.add_argument("--method", default=None, choices=SCORING_METHODS,
                        help="scoring.method (default: configs/demo.toml's)")
    args = parser.parse_args()
    config = RunConfig.load(Path(__file__).resolve().parents[1] / "configs" / "demo.toml", [
        f"run.rounds={args.rounds}", f"data.institutions={args.institutions}", "run.name='overhead'",
        *([f"scoring.method='{args.method}'"] if args.method else []),
    ])
    method = config.scoring.method  # the one named, or the demo config's
    logging.getLogger("flwr").setLevel(logging.ERROR)
    plain_total, plain_loop, plain_acc = timed_plain(config)
    scored_total, scored_loop, scored_acc, _ = timed_fedlearn(config.replace(chain={"enabled": False}))
    paid_total, paid_loop, paid_acc, gas = timed_fedlearn(config)
    print_table(["run", "wall s", "rounds s", "final accuracy", "wall / plain", "rounds / plain"], [
        ["plain Flower FedAvg", plain_total, plain_loop, plain_acc, 1.0, 1.0],
        [f"fedlearn, {method} scoring", scored_total, scored_loop, scored_acc,
         scored_total / plain_total, scored_loop / plain_loop],
        [f"fedlearn, {method} scoring + settlement (eth-tester)", paid_total, paid_loop, paid_acc,
         paid_total / plain_total, paid_loop / plain_loop],
    ])
    print(f"\ngas per settled round: mean {sum(gas) / max(len(gas), 1):,.0f}, min {min(gas, default=0):,}, "
          f"max {max(gas, default=0):,} over {len(gas)} rounds")
    path = write_results("overhead", {
        "dataset": config.data.dataset, "institutions": args.institutions, "rounds": args.rounds,
        "scoring": method,
        "plain": {"wall_s": plain_total, "rounds_s": plain_loop, "final_accuracy": plain_acc},
        "scored": {"wall_s": scored_total, "rounds_s": scored_loop, "final_accuracy": scored_acc,
                   "ratio_wall": scored_total / plain_total, "ratio_rounds": scored_loop / plain_loop},
        "scored_and_settled": {"wall_s": paid_total, "rounds_s": paid_loop, "final_accuracy": paid_acc,
                               "ratio_wall": paid_total / plain_total, "ratio_rounds": paid_loop / plain_loop,
                               "gas_per_round": gas},
        "target_ratio_settled": 1.10,
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
