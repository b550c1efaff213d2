"""Scoring quality: leave-one-out and GTG-Shapley against exact Shapley on an 8-institution federation.

Two institutions have noisy labels (60 % replaced by random classes), two hold little data (15 % of their
partition), four are clean. Rounds run in process: each institution trains locally (fedlearn.learning.training) from
the global model, replies as the ClientApp does, Flower's FedAvg aggregates, and every method scores the same
round with its own utility cache, so each reports the evaluations it needed. Targets for GTG: normalized L1
error ≤ 5 %, Spearman ≥ 0.95, ≤ 10 % of exact's evaluations.

    .venv/bin/python benchmarks/scoring_quality.py [--rounds 8] [--utility accuracy|neg_loss|brier|margin]
"""

from __future__ import annotations

import argparse
import copy
import logging
import time

import numpy as np
from common import positive, print_table, whole, write_results  # noqa: I001 - puts the project root on sys.path
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity
from scipy.stats import spearmanr

from fedlearn.config import UTILITIES, RunConfig
from fedlearn.data import Dataset
from fedlearn.federation.coalitions import ModelUtility, SubsetAggregator
from fedlearn.federation.replies import ARRAYS_KEY, EXAMPLES_KEY, INSTITUTION_KEY, META_KEY, METRICS_KEY
from fedlearn.federation.roster import federated_split
from fedlearn.learning.models import build_model, init_model
from fedlearn.learning.training import select_device, train
from fedlearn.scoring import CachedUtility, exact_shapley, gtg_shapley, leave_one_out

NOISY, SMALL = (0, 1), (2, 3)


def degrade(parts: list[Dataset], rng: np.random.Generator) -> list[Dataset]:
    out = []
    for i, part in enumerate(parts):
        if i in NOISY:
            y = part.y.copy()
            flip = rng.random(len(y)) < 0.6
            y[flip] = rng.integers(0, part.num_classes, flip.sum())
            part = Dataset(part.X, y, part.num_classes, part.name)
        elif i in SMALL:
            part = part.subset(rng.permutation(len(part))[: max(5, len(part) * 15 // 100)])
        out.append(part)
    return out


def l1_error(estimate: np.ndarray, exact: np.ndarray) -> float:
    return float(np.abs(estimate - exact).sum() / max(np.abs(exact).sum(), 1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=whole(1), default=8)
    parser.add_argument("--utility", choices=UTILITIES, default="accuracy")
    parser.add_argument("--gtg-epsilon", type=positive, default=1e-3, help="GTG within-round truncation")
    parser.add_argument("--gtg-tolerance", type=positive, default=0.05, help="GTG convergence tolerance")
    parser.add_argument("--gtg-min-permutations", type=whole(1), default=None)
    parser.add_argument("--gtg-max-permutations", type=whole(1), default=None)
    args = parser.parse_args()
    gtg_options = {"within_round_epsilon": args.gtg_epsilon, "convergence_tolerance": args.gtg_tolerance,
                   "min_permutations": args.gtg_min_permutations, "max_permutations": args.gtg_max_permutations}
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    config = RunConfig.load(overrides=[
        "data.institutions=8", "data.partition='iid'", "run.seed=7", "train.local_epochs=1",
        "train.learning_rate=0.05", "train.momentum=0.9", f"scoring.utility='{args.utility}'",
    ])
    split = federated_split(config)
    parts = degrade(split.partitions, np.random.default_rng(config.run.seed))
    n = len(parts)
    model = init_model(config.model, split.test.X.shape[1], split.test.num_classes, config.run.seed)
    strategy = FedAvg(fraction_evaluate=0.0)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    device = select_device("cpu")
    arrays = ArrayRecord(model.state_dict())
    rows, per_round = [], []
    totals = {m: np.zeros(n) for m in ("exact", "loo", "gtg")}
    for server_round in range(1, args.rounds + 1):
        instruction = Message(content=RecordDict(), dst_node_id=1, message_type="train")
        replies = []
        for i, part in enumerate(parts):
            local = build_model(config.model, part.X.shape[1], part.num_classes)
            local.load_state_dict(arrays.to_torch_state_dict())
            result = train(local, part.X, part.y, config.train, device, seed=server_round * 100 + i)
            replies.append(Message(content=RecordDict({
                ARRAYS_KEY: ArrayRecord(local.state_dict()),
                METRICS_KEY: MetricRecord({EXAMPLES_KEY: result.num_examples}),
                META_KEY: ConfigRecord({INSTITUTION_KEY: split.institutions[i]}),
            }), reply_to=instruction))
        aggregate = SubsetAggregator(strategy, server_round, replies, arrays)
        utility = ModelUtility(copy.deepcopy(model), aggregate, split.validation.X, split.validation.y,
                               metric=args.utility)
        timings = {}
        started = time.perf_counter()
        exact = exact_shapley(n, CachedUtility(utility))
        timings["exact"] = time.perf_counter() - started
        started = time.perf_counter()
        loo = leave_one_out(n, CachedUtility(utility))
        timings["loo"] = time.perf_counter() - started
        started = time.perf_counter()
        gtg = gtg_shapley(n, CachedUtility(utility), rng=np.random.default_rng([config.run.seed, server_round]),
                          **gtg_options)
        timings["gtg"] = time.perf_counter() - started
        for name, res in (("exact", exact), ("loo", loo), ("gtg", gtg)):
            totals[name] += res.values
        gain = float(exact.values.sum())
        per_round.append({
            "round": server_round, "round_gain": gain,
            **{f"{name}_evaluations": res.evaluations for name, res in (("exact", exact), ("loo", loo), ("gtg", gtg))},
            **{f"{name}_seconds": t for name, t in timings.items()},
            "loo_l1": l1_error(loo.values, exact.values), "gtg_l1": l1_error(gtg.values, exact.values),
            "gtg_truncated": gtg.truncated,
        })
        arrays, _ = strategy.aggregate_train(server_round, replies)

    exact_total = totals["exact"]
    results = {}
    for name in ("loo", "gtg"):
        evals = sum(r[f"{name}_evaluations"] for r in per_round)
        exact_evals = sum(r["exact_evaluations"] for r in per_round)
        results[name] = {
            "normalized_l1_error_cumulative": l1_error(totals[name], exact_total),
            "mean_normalized_l1_error_per_round": float(np.mean([r[f"{name}_l1"] for r in per_round])),
            "spearman_cumulative": float(spearmanr(totals[name], exact_total).statistic),
            "evaluations": evals,
            "evaluations_fraction_of_exact": evals / exact_evals,
        }
        rows.append([name, results[name]["normalized_l1_error_cumulative"],
                     results[name]["mean_normalized_l1_error_per_round"], results[name]["spearman_cumulative"],
                     evals, results[name]["evaluations_fraction_of_exact"]])
    rows.append(["exact", 0.0, 0.0, 1.0, sum(r["exact_evaluations"] for r in per_round), 1.0])
    print(f"{n} institutions ({len(NOISY)} noisy labels, {len(SMALL)} small), {args.rounds} rounds, "
          f"utility {args.utility}")
    print_table(["method", "L1 err (cumul.)", "L1 err (per round)", "Spearman", "evaluations", "of exact"], rows)
    print("\ncumulative scores: " + ", ".join(
        f"{split.institutions[i]}{' (noisy)' if i in NOISY else ' (small)' if i in SMALL else ''} "
        f"exact {exact_total[i]:.4f} gtg {totals['gtg'][i]:.4f}" for i in range(n)))
    path = write_results(f"scoring_quality_{args.utility}", {
        "institutions": n, "noisy": [split.institutions[i] for i in NOISY],
        "small": [split.institutions[i] for i in SMALL], "rounds": args.rounds, "utility": args.utility,
        "methods": results, "per_round": per_round,
        "cumulative": {m: dict(zip(split.institutions, map(float, v))) for m, v in totals.items()},
        "gtg_options": gtg_options,
        "targets": {"gtg_l1": 0.05, "gtg_spearman": 0.95, "gtg_evaluations_fraction": 0.10},
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
