"""Scale: 10 to 1,000 institutions, what scoring and settlement cost against training, and how good the estimate is.

Data: a generated classification set (sklearn ``make_classification``: 10 classes, 32 features, 120,000 rows,
written once to a temporary NPZ), Dirichlet(1.0) over the institutions, 1 % each for validation and test. The
default MLP, in-process engine, 5 rounds. For each n two runs, each in its own process (so that peak RSS is its
own): **plain** (no scoring, no chain) and **incentivized** (the default Banzhaf scoring, the free-rider and
harmful-update checks, settlement on the embedded chain every round). Reported per run: seconds per round (the
whole round: training, checks, scoring, aggregation, evaluation), scoring seconds per round, training seconds per
round (the round less scoring), utility evaluations per round, peak RSS, wall seconds, and the settlement gas.

The estimator: at n = 10, one real round's utility (the institutions' first-round updates of the n = 10 data),
the exact Banzhaf value (all 1,024 coalitions) against the sampled estimators held to ~10 % of those evaluations
(102: the surrogate, what the default ``scoring.banzhaf_estimator = "auto"`` uses for a FedAvg round of 10,
reported as ``n10_l1``, and the regression, as ``n10_l1_regression``); at n = 100, the default estimator (the
regression: beyond the surrogate's 12 players) against a long-sampled reference (16,384 draws), both
on one real round. Normalised L1 = Σ|estimate − reference| / Σ|reference|; medians over 5 seeds.

    .venv/bin/python benchmarks/scale.py [--sizes 10,30,100,300,1000] [--rounds 5] [--engine local|ray]

``--engine ray`` runs every run under Flower's Ray simulation engine instead (peak RSS is then the driver's
alone: the institutions train in Ray's worker processes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, print_table, whole, write_results  # noqa: I001 - puts the project root on sys.path

from fedlearn.federation.unit_growth import REASON as BACKDOOR_REASON

ROWS, FEATURES, CLASSES = 120_000, 32, 10


def make_data(path: Path) -> Path:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=ROWS, n_features=FEATURES, n_informative=20, n_redundant=4,
                               n_classes=CLASSES, n_clusters_per_class=2, class_sep=1.5, flip_y=0.02,
                               random_state=0)
    np.savez(path, X=X.astype(np.float32), y=y)
    return path


def settings(n: int, data: Path, mode: str, rounds: int, out: Path, engine: str = "local") -> list[str]:
    common = [f"data.dataset='{data}'", f"data.institutions={n}", "data.alpha=1.0", "data.validation_fraction=0.01",
              "data.test_fraction=0.01", f"run.rounds={rounds}", "train.local_epochs=2", "train.momentum=0.9",
              f"simulation.engine='{engine}'", f"run.output_dir='{out}'"]
    if mode == "plain":
        return common + ["scoring.method='none'", "chain.enabled=false", "integrity.free_rider_kappa=0",
                         "integrity.backdoor_threshold=0", "integrity.exclude_harmful=false"]
    return common


def one_run(n: int, data: Path, mode: str, rounds: int, out: Path, engine: str = "local",
            extra: Sequence[str] = ()) -> dict[str, Any]:
    """In this process: one run (``extra``: further overrides); returns its figures. Under Ray (``engine``),
    ``peak_rss_mb`` is this process's alone: the simulated institutions train in Ray's worker processes."""
    from fedlearn.config import RunConfig
    from fedlearn.federation.simulation import run_federation

    config = RunConfig.load(overrides=[*settings(n, data, mode, rounds, out, engine), *extra])
    started = time.perf_counter()
    summary = run_federation(config, quiet=True, progress=False)
    wall = time.perf_counter() - started
    run_dir = Path(summary["run_dir"])
    records = json.loads((run_dir / "rounds.json").read_text())[1:]
    seconds = [float(r["seconds"]) for r in records]
    scored = [r.get("scores") or {} for r in records]  # a round without scores counts as nothing scored
    scoring = [float(s.get("scoring_seconds", 0.0)) for s in scored]
    evaluations = [int(s.get("evaluations", 0)) for s in scored]
    gas: list[int] = []
    slashed: list[str] = []
    if (run_dir / "ledger.sqlite").exists():
        from fedlearn.payout.ledger import Ledger

        ledger = Ledger.open(run_dir / "ledger.sqlite")
        gas = [int(e.gas_used) for e in ledger.rounds() if e.gas_used]
        slashed = sorted({name for _, name, _, _ in ledger.slashes()})
        ledger.close()
    return {
        "institutions": n, "scoring": "none" if mode == "plain" else config.scoring.method, "mode": mode,
        "engine": engine,
        "wall_seconds": wall, "round_seconds": float(np.mean(seconds)),
        "scoring_seconds": float(np.mean(scoring)), "training_seconds": float(np.mean(np.subtract(seconds, scoring))),
        "evaluations": float(np.mean(evaluations)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "settlement_gas": gas, "final_test_accuracy": summary["final_test_accuracy"],
        # Every institution here is honest: an update left out as harmful, or set aside as a free rider or as
        # planting a backdoor, is a false positive of those checks.
        "excluded_per_round": [len(s.get("excluded", {})) for s in scored],
        "set_aside_per_round": [len(s.get("rejected", {})) for s in scored],
        "backdoor_set_aside_per_round": [sum(BACKDOOR_REASON in why for why in s.get("rejected", {}).values())
                                         for s in scored],
        "slashed": slashed,
    }


def round_utility(n: int, data: Path, seed: int):
    """A real first round of the n-institution federation: (its utility over coalitions of the updates, the
    institutions' aggregation weights)."""
    import torch
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedlearn.config import RunConfig
    from fedlearn.federation.coalitions import MeanUtility
    from fedlearn.federation.replies import ARRAYS_KEY, EXAMPLES_KEY, METRICS_KEY
    from fedlearn.federation.roster import federated_split
    from fedlearn.learning.behaviours import HONEST, train_as
    from fedlearn.learning.models import init_model
    from fedlearn.scoring.utility import CachedUtility

    config = RunConfig.load(overrides=settings(n, data, "incentivized", 1, Path(tempfile.gettempdir()))
                            + [f"run.seed={seed}"])
    split = federated_split(config)
    model = init_model(config.model, FEATURES, CLASSES, seed)
    start = ArrayRecord(model.state_dict())
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0  # messages need a run identity
    replies = []
    for i, part in enumerate(split.partitions):
        local = init_model(config.model, FEATURES, CLASSES, seed)
        train_as(HONEST, local, part.X, part.y, CLASSES, config.train, torch.device("cpu"), seed=seed * 1000 + i)
        content = RecordDict({ARRAYS_KEY: ArrayRecord(local.state_dict()),
                              METRICS_KEY: MetricRecord({EXAMPLES_KEY: len(part)})})
        replies.append(Message(content=content, dst_node_id=i + 1, message_type="train"))
    utility = MeanUtility(model, replies, start, split.validation.X, split.validation.y, metric="brier")
    return CachedUtility(utility), np.array([len(part) for part in split.partitions], dtype=np.float64)


DRAWS_PER_SEED = 100


def estimator(data: Path) -> dict[str, Any]:
    """The sampled estimators against exact at n = 10 (102 evaluations, ``DRAWS_PER_SEED`` independent estimates
    per round: one estimate's error varies by a factor of two between draws, so one draw per seed says little):
    the surrogate (``scoring.banzhaf_estimator = "surrogate"``) and the regression; then the default estimator
    against a long-sampled reference at n = 100."""
    from fedlearn.scoring.banzhaf import banzhaf
    from fedlearn.scoring.banzhaf_surrogate import banzhaf_surrogate
    from fedlearn.scoring.utility import CachedUtility

    def l1(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).sum() / np.abs(b).sum())

    by_estimator: dict[str, list[float]] = {"surrogate": [], "regression": []}
    fractions: dict[str, list[float]] = {"surrogate": [], "regression": []}
    covered: list[float] = []
    n100 = []
    for seed in range(5):
        utility, weights = round_utility(10, data, seed)
        every = [frozenset(c) for k in range(11) for c in itertools.combinations(range(10), k)]
        known = dict(zip(every, utility.many(every)))
        exact = banzhaf(10, utility, rng=np.random.default_rng(seed)).values  # from the same cache
        errors: dict[str, list[float]] = {"surrogate": [], "regression": []}
        for draw in range(DRAWS_PER_SEED):
            rng = np.random.default_rng([seed, draw])
            fresh = CachedUtility(known.__getitem__)  # counts its evaluations afresh
            estimates = {
                "regression": banzhaf(10, fresh, rng=rng, samples=102, tolerance=0.0),
                "surrogate": banzhaf_surrogate(10, CachedUtility(known.__getitem__), weights,
                                               rng=np.random.default_rng([seed, draw]), samples=102),
            }
            for name, estimate in estimates.items():
                errors[name].append(l1(estimate.values, exact))
                fractions[name].append(estimate.evaluations / 1024)
            covered.append(float(np.mean(np.abs(estimates["surrogate"].values - exact)
                                         <= estimates["surrogate"].errors)))
        for name in by_estimator:
            by_estimator[name].append(float(np.median(errors[name])))
    # n = 12 at the default budget (1,024 of 4,096 coalitions): the largest federation the surrogate takes.
    n12: dict[str, list[float]] = {"surrogate": [], "regression": [], "surrogate_seconds": []}
    for seed in range(3):
        utility, weights = round_utility(12, data, seed)
        every = [frozenset(c) for k in range(13) for c in itertools.combinations(range(12), k)]
        known = dict(zip(every, utility.many(every)))
        exact = banzhaf(12, utility, rng=np.random.default_rng(seed), samples=4096).values
        for draw in range(5):
            regression = banzhaf(12, CachedUtility(known.__getitem__), rng=np.random.default_rng([seed, draw]))
            started = time.perf_counter()
            surrogate = banzhaf_surrogate(12, CachedUtility(known.__getitem__), weights,
                                          rng=np.random.default_rng([seed, draw]), samples=1024)
            n12["surrogate_seconds"].append(time.perf_counter() - started)
            n12["surrogate"].append(l1(surrogate.values, exact))
            n12["regression"].append(l1(regression.values, exact))
    for seed in range(3):
        utility, _ = round_utility(100, data, seed)
        reference = banzhaf(100, utility, rng=np.random.default_rng(seed), samples=16_384, tolerance=0.0).values
        default = banzhaf(100, round_utility(100, data, seed)[0], rng=np.random.default_rng(seed + 100))
        n100.append({"l1": l1(default.values, reference), "evaluations": default.evaluations,
                     "draws": default.permutations})
    return {"n10_l1": float(np.median(by_estimator["surrogate"])), "n10_estimator": "surrogate",
            "n10_evaluations_fraction": float(np.median(fractions["surrogate"])),
            "n10_l1_by_seed": by_estimator["surrogate"], "n10_interval_coverage": float(np.mean(covered)),
            "n10_l1_regression": float(np.median(by_estimator["regression"])),
            "n10_l1_regression_by_seed": by_estimator["regression"],
            "n10_regression_evaluations_fraction": float(np.median(fractions["regression"])),
            "n10_draws_per_seed": DRAWS_PER_SEED,
            "n12_l1": float(np.median(n12["surrogate"])), "n12_l1_regression": float(np.median(n12["regression"])),
            "n12_surrogate_seconds": float(np.median(n12["surrogate_seconds"])),
            "n100_l1": float(np.median([r["l1"] for r in n100])), "n100": n100}


def report_estimator(quality: dict[str, Any]) -> None:
    print(f"estimator: n=10 normalised L1, surrogate {quality['n10_l1']:.3f} (by seed "
          f"{[round(x, 3) for x in quality['n10_l1_by_seed']]}; 95 % intervals cover "
          f"{quality['n10_interval_coverage']:.1%}), regression {quality['n10_l1_regression']:.3f} (by seed "
          f"{[round(x, 3) for x in quality['n10_l1_regression_by_seed']]}); medians over seeds of the median over "
          f"{quality['n10_draws_per_seed']} estimates, at {quality['n10_evaluations_fraction']:.1%} and "
          f"{quality['n10_regression_evaluations_fraction']:.1%} of exact's evaluations; n=12 at 1,024 evaluations: "
          f"surrogate {quality['n12_l1']:.4f} ({quality['n12_surrogate_seconds']:.1f} s), regression "
          f"{quality['n12_l1_regression']:.4f}; n=100 default vs "
          f"16,384-draw reference L1 {quality['n100_l1']:.3f} with {[r['evaluations'] for r in quality['n100']]} "
          "evaluations")


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for mode, style in (("plain", "o--"), ("incentivized", "o-")):
        rows = [r for r in runs if r["mode"] == mode]
        ns = [r["institutions"] for r in rows]
        axes[0].plot(ns, [r["round_seconds"] for r in rows], style, label=f"{mode}: round")
        if mode == "incentivized":
            axes[0].plot(ns, [r["scoring_seconds"] for r in rows], "s-", label="incentivized: scoring")
            axes[0].plot(ns, [r["training_seconds"] for r in rows], "^-", label="incentivized: training")
        axes[1].plot(ns, [r["peak_rss_mb"] for r in rows], style, label=mode)
    for ax, label in zip(axes, ("seconds per round", "peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_xlabel("institutions")
        ax.set_ylabel(label)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def sizes(text: str) -> list[int]:
    """--sizes: federation sizes, comma-separated, each at least 2."""
    return [whole(2)(item) for item in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=sizes, default=sizes("10,30,100,300,1000"), metavar="N,N,...")
    parser.add_argument("--rounds", type=whole(1), default=5)
    parser.add_argument("--one", nargs=3, metavar=("N", "MODE", "DATA"), help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a run config override for every run (e.g. integrity.backdoor_threshold=0)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="Flower's engine for the runs: in process (default) or Ray")
    parser.add_argument("--estimator-only", action="store_true",
                        help="measure only the estimator and replace that part of the existing scale.json")
    args = parser.parse_args()
    if args.estimator_only and args.set:
        parser.error("--set configures runs; --estimator-only makes none")
    if args.set:  # refused here, in one line, rather than by every run after the data is made
        from fedlearn.config import RunConfig
        from fedlearn.errors import ConfigError

        try:
            RunConfig.load(overrides=args.set)
        except ConfigError as exc:
            parser.error(str(exc))
    if args.estimator_only:
        path = ROOT / "benchmarks" / "results" / "scale.json"
        previous = json.loads(path.read_text())
        quality = estimator(make_data(Path(tempfile.mkdtemp(prefix="scale-")) / "generated.npz"))
        report_estimator(quality)
        write_results("scale", {**{k: v for k, v in previous.items() if k not in ("benchmark", "measured_at")},
                                "estimator": quality, "estimator_measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return
    if args.one:
        n, mode, data = args.one
        out = Path(tempfile.mkdtemp(prefix="scale-run-"))
        print(json.dumps(one_run(int(n), Path(data), mode, args.rounds, out, args.engine, extra=args.set)))
        return
    work = Path(tempfile.mkdtemp(prefix="scale-"))
    data = make_data(work / "generated.npz")
    runs = []
    for n in args.sizes:
        for mode in ("plain", "incentivized"):
            done = subprocess.run([sys.executable, __file__, "--one", str(n), mode, str(data), "--rounds",
                                   str(args.rounds), "--engine", args.engine, *(f"--set={o}" for o in args.set)],
                                  capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                raise SystemExit(f"n={n} {mode} failed: {done.stderr.strip().splitlines()[-1:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = runs[-1]
            print(f"n={n:>5} {mode:<13} {r['round_seconds']:7.2f} s/round (scoring {r['scoring_seconds']:6.2f}, "
                  f"training {r['training_seconds']:6.2f}), {r['evaluations']:7.0f} evals, "
                  f"{r['peak_rss_mb']:7.0f} MB, acc {r['final_test_accuracy']:.3f}; honest left out per round "
                  f"{r['excluded_per_round']}, set aside {r['set_aside_per_round']}", flush=True)
    quality = estimator(data)
    rows = []
    for n in sorted({r["institutions"] for r in runs}):
        plain = next(r for r in runs if r["institutions"] == n and r["mode"] == "plain")
        paid = next(r for r in runs if r["institutions"] == n and r["mode"] == "incentivized")
        gas = paid["settlement_gas"]
        rows.append([n, f"{plain['round_seconds']:.2f}", f"{paid['round_seconds']:.2f}",
                     f"{paid['training_seconds']:.2f}", f"{paid['scoring_seconds']:.2f}", f"{paid['evaluations']:.0f}",
                     f"{paid['wall_seconds'] / plain['wall_seconds']:.2f}", f"{paid['peak_rss_mb']:.0f}",
                     f"{int(np.mean(gas[1:] or gas)):,}" if gas else "-"])
    print_table(["n", "plain s/round", "paid s/round", "training s", "scoring s", "evals/round",
                 "wall paid/plain", "peak MB", "gas/settle"], rows)
    report_estimator(quality)
    results = ROOT / "benchmarks" / "results"
    plot(runs, results / "scale.png")
    write_results("scale", {"runs": runs, "estimator": quality, "rounds": args.rounds, "rows": ROWS,
                            "features": FEATURES})


if __name__ == "__main__":
    main()
