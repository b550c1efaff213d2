"""The coordinator's ServerApp: one federated run, every round checked, aggregated, scored and recorded."""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedlearn.config import RunConfig
from fedlearn.federation import federated_split
from fedlearn.models import init_model
from fedlearn.rundir import RoundResult, RunRecorder, new_run_dir
from fedlearn.strategy import ScoredStrategy, build_flower_strategy
from fedlearn.training import evaluate

log = logging.getLogger("flwr")  # shown with Flower's own lines under `flwr run`


def log_round(result: RoundResult, total: int) -> None:
    scores = result.scores
    scoring = f"  scoring {scores.scoring_seconds:.2f}s ({scores.evaluations} evals)" if scores else ""
    log.info("round %d/%d  test accuracy %.4f  loss %.4f%s", result.server_round, total,
             result.test_accuracy, result.test_loss, scoring)


def build_server_app(
    config: RunConfig | None = None,
    run_dir: Path | None = None,
    on_round: Callable[[RoundResult, int], None] = log_round,
    on_finish: Callable[[dict], None] | None = None,
) -> ServerApp:
    """A ServerApp for ``config`` (or, under ``flwr run``, the run config Flower passes in)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = config or RunConfig.from_flat(context.run_config)
        random.seed(cfg.run.seed)  # Flower samples institutions with random.sample

        # Data: the server holds the validation set (for scoring) and the test set (for reporting).
        split = federated_split(cfg)
        test, validation = split.test, split.validation
        model = init_model(cfg.model, test.X.shape[1], test.num_classes, cfg.run.seed)
        recorder = RunRecorder(
            run_dir or new_run_dir(cfg), cfg, split.institutions,
            {name: len(part) for name, part in zip(split.institutions, split.partitions)},
        )

        # Strategy: the named Flower strategy, wrapped so every reply is checked and every round scored.
        strategy = ScoredStrategy(
            build_flower_strategy(cfg), copy.deepcopy(model), (validation.X, validation.y), cfg,
            on_round=recorder.scored,
        )
        eval_model = copy.deepcopy(model)

        def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            eval_model.load_state_dict(arrays.to_torch_state_dict())
            loss, accuracy = evaluate(eval_model, test.X, test.y)
            on_round(recorder.evaluated(server_round, accuracy, loss), cfg.run.rounds)
            return MetricRecord({"test-accuracy": accuracy, "test-loss": loss})

        # Rounds: sample → local training → checks → aggregation → scoring → evaluation.
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=cfg.run.rounds,
            train_config=ConfigRecord({"seed": cfg.run.seed}),
            evaluate_fn=evaluate_global,
        )
        summary = recorder.finish(result.arrays)
        if on_finish is not None:
            on_finish(summary)

    return app


app = build_server_app()
