"""Payout variants: config changes tried on the payout-fairness federation, against its stored ground truth.

``benchmarks/payout_fairness.py`` retrains all 64 coalitions of its 6-institution federation to get each seed's
retraining Shapley value (minutes a seed) and stores it (``per_seed[].ground_truth_phi`` in
``payout_fairness.json`` and ``payout_fairness_more_seeds.json``). This script reads those values and runs the same
paying federation (Banzhaf scoring) once per seed and variant: each variant is a name and config overrides, so a
change to scoring or to what is left out is judged against the same reference in seconds a seed. Reported per
variant: the token shares' Σ|Δshare| and Spearman against the ground truth (median over the seeds, and each seed),
and the two half-label-flipping institutions' token share against their ground-truth share.

    .venv/bin/python benchmarks/payout_variants.py
    .venv/bin/python benchmarks/payout_variants.py --variant accuracy "scoring.utility='accuracy'" --seeds 42 43 44

Without ``--variant``, the built-in list below. Writes ``benchmarks/results/payout_variants.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from common import RESULTS, print_table, whole, write_results  # noqa: I001 - puts the project root on sys.path

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "accuracy": ["scoring.utility='accuracy'"],
    "margin": ["scoring.utility='margin'"],
    "neg_loss": ["scoring.utility='neg_loss'"],
    "harmful_kept": ["integrity.exclude_harmful=false"],
    "accuracy_harmful_kept": ["scoring.utility='accuracy'", "integrity.exclude_harmful=false"],
    "headroom": ["payout.round_weight='headroom'"],
}
TRUTH_FILES = ("payout_fairness.json", "payout_fairness_more_seeds.json")


def stored_truth() -> dict[int, list[float]]:
    """Seed → the retraining Shapley value payout_fairness.py stored for it (every file that exists)."""
    truth: dict[int, list[float]] = {}
    for name in TRUTH_FILES:
        path = RESULTS / name
        if path.exists():
            truth.update({s["seed"]: s["ground_truth_phi"] for s in json.loads(path.read_text())["per_seed"]})
    return truth


def run_once(job: tuple[str, list[str], int, list[float]]) -> dict[str, Any]:
    name, overrides, seed, phi = job
    import torch
    from payout_fairness import compare, federation_config, paying_run, shares

    torch.set_num_threads(1)
    run = paying_run(federation_config(seed, "banzhaf", *overrides))
    figures = compare(run, np.asarray(phi))
    tokens = shares({n: float(v) for n, v in run["tokens"].items()}, run["names"])
    return {"variant": name, "seed": seed, "token_l1": figures["token_l1"], "token_spearman": figures["token_spearman"],
            "noisy_token_share": figures["noisy_token_share"],
            "noisy_ground_truth_share": figures["noisy_ground_truth_share"], "token_shares": tokens.tolist(),
            "ground_truth_shares": shares(np.asarray(phi), []).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "OVERRIDE"),
                        help="a name and its config overrides (section.key=value); repeatable")
    parser.add_argument("--seeds", type=whole(0), nargs="+", help="default: every seed with a stored ground truth")
    parser.add_argument("--workers", type=whole(1), default=max(1, min(2, os.cpu_count() or 1)))
    args = parser.parse_args()
    truth = stored_truth()
    seeds = args.seeds or sorted(truth)
    missing = [s for s in seeds if s not in truth]
    if missing:
        parser.error(f"no stored ground truth for seed(s) {missing}: run benchmarks/payout_fairness.py --seeds "
                     f"{' '.join(map(str, missing))} --results NAME first, and add NAME.json to TRUTH_FILES")
    variants = {v[0]: v[1:] for v in args.variant} if args.variant else VARIANTS
    from payout_fairness import federation_config

    from fedlearn.errors import FedlearnError

    for name, overrides in variants.items():  # a bad override stops here, not in a worker after the runs
        try:
            federation_config(seeds[0], "banzhaf", *overrides)
        except FedlearnError as exc:
            parser.error(f"variant {name}: {exc}")
    jobs = [(name, overrides, seed, truth[seed]) for name, overrides in variants.items() for seed in seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(run_once, jobs))
    summary = {}
    for name in variants:
        mine = [r for r in runs if r["variant"] == name]
        summary[name] = {"overrides": variants[name], **{f"{k}_median": float(np.nanmedian([r[k] for r in mine]))
                                                         for k in ("token_l1", "token_spearman", "noisy_token_share",
                                                                   "noisy_ground_truth_share")}}
    print(f"Banzhaf tokens against the retraining Shapley value, seeds {seeds} (median; then each seed):")
    print_table(["variant", "token Σ|Δ|", "token ρ", "noisy tokens", "noisy truth", "Σ|Δ| by seed", "ρ by seed"],
                [[name, s["token_l1_median"], s["token_spearman_median"], s["noisy_token_share_median"],
                  s["noisy_ground_truth_share_median"],
                  " ".join(f"{r['token_l1']:.2f}" for r in runs if r["variant"] == name),
                  " ".join(f"{r['token_spearman']:.2f}" for r in runs if r["variant"] == name)]
                 for name, s in summary.items()])
    print(f"wrote {write_results('payout_variants', {'seeds': seeds, 'variants': summary, 'runs': runs})}")


if __name__ == "__main__":
    main()
