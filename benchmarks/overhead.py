"""Overhead of checking and scoring: a scored run against the same run with plain Flower FedAvg, same seed.

Both runs use Flower's simulation engine in this one process, the same data, model, clients and server-side
test evaluation; the plain run hands Flower's FedAvg to ``Strategy.start`` directly (no reply checks, no
scoring, no run directory). Reported: total wall time (engine start-up included) and the time from the first
round's start to the last round's end, each as scored / plain.

    .venv/bin/python benchmarks/overhead.py [--rounds 20] [--institutions 10] [--method gtg]
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
import tempfile
import time
from pathlib import Path

from common import print_table, write_results  # noqa: I001 - puts the project root on sys.path

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from clients.app import build_client_app
from fedlearn.config import RunConfig
from fedlearn.federation import federated_split
from fedlearn.models import init_model
from fedlearn.rundir import RoundResult
from fedlearn.simulation import run_federation
from fedlearn.strategy import build_flower_strategy
from fedlearn.training import evaluate


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


def timed_scored(config: RunConfig) -> tuple[float, float, float]:
    marks: dict[str, float] = {}

    def observe(result: RoundResult, total: int) -> None:
        marks.setdefault("first", time.perf_counter())
        marks["last"] = time.perf_counter()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_federation(config.replace(run={"output_dir": tmp}), progress=False, observer=observe)
    return time.perf_counter() - started, marks["last"] - marks["first"], float(summary["final_test_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--institutions", type=int, default=10)
    parser.add_argument("--method", default="gtg")
    args = parser.parse_args()
    config = RunConfig.load(Path(__file__).resolve().parents[1] / "configs" / "demo.toml", [
        f"run.rounds={args.rounds}", f"data.institutions={args.institutions}", f"scoring.method='{args.method}'",
        "run.name='overhead'",
    ])
    logging.getLogger("flwr").setLevel(logging.ERROR)
    plain_total, plain_loop, plain_acc = timed_plain(config)
    scored_total, scored_loop, scored_acc = timed_scored(config)
    print_table(["run", "wall s", "rounds s", "final accuracy"], [
        ["plain Flower FedAvg", plain_total, plain_loop, plain_acc],
        [f"fedlearn ({args.method} scoring)", scored_total, scored_loop, scored_acc],
        ["ratio scored / plain", scored_total / plain_total, scored_loop / plain_loop, ""],
    ])
    path = write_results("overhead", {
        "dataset": config.data.dataset, "institutions": args.institutions, "rounds": args.rounds,
        "scoring": args.method, "plain_wall_s": plain_total, "scored_wall_s": scored_total,
        "plain_rounds_s": plain_loop, "scored_rounds_s": scored_loop,
        "ratio_wall": scored_total / plain_total, "ratio_rounds": scored_loop / plain_loop,
        "plain_final_accuracy": plain_acc, "scored_final_accuracy": scored_acc,
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
