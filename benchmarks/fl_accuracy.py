"""Federated vs central accuracy: digits, 10 institutions, Dirichlet α = 0.5, MLP.

The central model is the same MLP, same initial weights and optimiser settings, trained on the union of the
institutions' data for the same total number of epochs (rounds × local epochs). Target ratio ≥ 0.97.

    .venv/bin/python benchmarks/fl_accuracy.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
from common import print_table, whole, write_results  # noqa: I001 - puts the project root on sys.path

from fedlearn.config import RunConfig
from fedlearn.federation.roster import federated_split
from fedlearn.federation.simulation import run_federation
from fedlearn.learning.models import init_model
from fedlearn.learning.training import evaluate, select_device, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=whole(1), default=20)
    args = parser.parse_args()
    config = RunConfig.load(Path(__file__).resolve().parents[1] / "configs" / "demo.toml", [
        f"run.rounds={args.rounds}", "scoring.method='none'", "run.name='fl-accuracy'",
    ])
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_federation(config.replace(run={"output_dir": tmp}), progress=False)
    federated = float(summary["final_test_accuracy"])

    split = federated_split(config)
    pooled_X = np.concatenate([p.X for p in split.partitions])
    pooled_y = np.concatenate([p.y for p in split.partitions])
    model = init_model(config.model, pooled_X.shape[1], split.test.num_classes, config.run.seed)
    epochs = config.run.rounds * config.train.local_epochs
    device = select_device(config.train.device)
    spec = dataclasses.replace(config.train, local_epochs=epochs)
    train(model, pooled_X, pooled_y, spec, device, seed=config.run.seed)
    _, central = evaluate(model, split.test.X, split.test.y)

    ratio = federated / central
    print_table(["setting", "test accuracy"], [
        [f"federated ({config.data.institutions} institutions, {config.run.rounds} rounds)", federated],
        [f"central ({epochs} epochs, pooled data)", central],
        ["ratio federated / central (target >= 0.97)", ratio],
    ])
    path = write_results("fl_accuracy", {
        "dataset": config.data.dataset, "institutions": config.data.institutions,
        "partition": f"{config.data.partition}(alpha={config.data.alpha})", "model": config.model.name,
        "rounds": config.run.rounds, "local_epochs": config.train.local_epochs, "central_epochs": epochs,
        "federated_test_accuracy": federated, "central_test_accuracy": central, "ratio": ratio,
        "target_ratio": 0.97, "meets_target": ratio >= 0.97,
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
