"""Payout fairness: do tokens follow contribution? Against a ground truth this script computes itself.

Ground truth: the retraining Shapley value. A 6-institution federation (digits, Dirichlet α = 0.5, two
institutions with half their labels flipped, 8 rounds) is retrained from scratch on every one of its 64
coalitions with the same FedAvg settings the run uses (each member trains exactly as its ClientApp would, with
the same seeds; the coalition's model is the example-weighted mean); the utility of a coalition is the validation
accuracy of its final model, and each institution's value is its exact Shapley value over those 64 utilities
(computed here from the formula). Institutions with a negative value deserve nothing: ground-truth shares are
max(φ, 0) / Σ max(φ, 0). The 64 coalitions are retrained twice more with other draws of the training seeds
(same start, same data): how far the ground truth's own shares move with training noise alone
(``ground_truth_noise``) is the precision any estimate of it can be judged to.

Against it, for LOO, exact Shapley, GTG and Banzhaf, a paying run of the same federation (embedded chain,
in-process engine) gives contribution shares (scores over the significant rounds) and token shares (what the chain
paid); both are compared with the ground truth by Σ|Δshare| (0-2) and Spearman, over 3 seeds, and with the
retraining Banzhaf value of the same 64 coalitions. Where the distance comes from is split in two
(``split_l1``): the closest a payout can come that pays the two noisy institutions what the tokens pay them
(``noisy_floor_l1``), and the other four's tokens against their ground truth among themselves
(``others_token_l1``). The same federation with no flipped labels is measured too
(``all_honest``: the default method's tokens and an equal split against its retraining Shapley value). The demo
config is run too, and its token shares compared with its contribution shares. A sweep over the utility
(accuracy, neg_loss, brier, margin) and the significance test (bootstrap, none) with GTG chose the defaults.

    .venv/bin/python benchmarks/payout_fairness.py [--seeds 42 43 44] [--no-sweep] [--results NAME]

Writes benchmarks/results/payout_fairness.json (or NAME.json: other seeds keep the default seeds' file).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import logging
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import ROOT, print_table, whole, write_results  # noqa: I001 - puts the project root on sys.path
from scipy.stats import spearmanr

from fedlearn.config import RunConfig
from fedlearn.federation.roster import federated_split, roster
from fedlearn.federation.simulation import run_federation
from fedlearn.learning.behaviours import train_as
from fedlearn.learning.models import init_model
from fedlearn.payout.ledger import Ledger

INSTITUTIONS, ROUNDS = 6, 8
NOISY = ("hospital-01", "hospital-02")
RETRAININGS = 3  # draws of the ground truth (training seeds) to measure its own noise
METHODS = ("loo", "shapley", "gtg", "banzhaf")


def federation_config(seed: int, method: str = "gtg", *extra: str, noisy: tuple[str, ...] = NOISY) -> RunConfig:
    flips = ", ".join(f"{name}=label_flip:flip_fraction=0.5" for name in noisy)
    return RunConfig.load(overrides=[
        f"run.seed={seed}", f"run.rounds={ROUNDS}", f"data.institutions={INSTITUTIONS}", "data.partition='dirichlet'",
        "data.alpha=0.5", "train.local_epochs=2", "train.momentum=0.9", "simulation.engine='local'",
        f"scoring.method='{method}'", f"integrity.behaviours='{flips}'", *extra,
    ])


# ---- ground truth -----------------------------------------------------------------------------------------------


def coalition_accuracy(config: RunConfig, coalition: tuple[int, ...], retraining: int = 0) -> float:
    """Validation accuracy of FedAvg trained on ``coalition`` alone for every round, as the run trains
    (``retraining`` 0: with the run's own training seeds; k > 0: the k-th other draw of them, same start and
    data, which measures how far the ground truth moves with training noise alone)."""
    split, members = federated_split(config), roster(config)
    val = split.validation
    model = init_model(config.model, val.X.shape[1], val.num_classes, config.run.seed)
    if coalition:
        device = torch.device("cpu")
        for server_round in range(1, config.run.rounds + 1):
            start = {k: v.detach().clone() for k, v in model.state_dict().items()}
            updates, weights = [], []
            for index in coalition:
                member = members[index]
                model.load_state_dict(start)
                arrays, claimed, _ = train_as(
                    member.behaviour, model, member.data.X, member.data.y, member.data.num_classes, config.train,
                    device, seed=config.run.seed * 100_003 + server_round * 1_009 + index + retraining * 7_777_777)
                updates.append(arrays)
                weights.append(claimed)
            w = np.asarray(weights, dtype=np.float64) / sum(weights)
            model.load_state_dict({k: torch.as_tensor(sum(wi * u[k] for wi, u in zip(w, updates)).astype(
                updates[0][k].dtype)) for k in updates[0]})
    with torch.no_grad():
        logits = model(torch.as_tensor(val.X, dtype=torch.float32))
    return float((logits.argmax(1).numpy() == val.y).mean())


def shapley_from_utilities(utility: dict[tuple[int, ...], float], n: int) -> np.ndarray:
    """φ_i = Σ_S |S|!(n−|S|−1)!/n! · (U(S ∪ {i}) − U(S)), over every S not containing i."""
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                phi[i] += weight * (utility[tuple(sorted((*subset, i)))] - utility[subset])
    return phi


def banzhaf_from_utilities(utility: dict[tuple[int, ...], float], n: int) -> np.ndarray:
    """β_i = 2^−(n−1) Σ_S (U(S ∪ {i}) − U(S)), over every S not containing i."""
    beta = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            for subset in itertools.combinations(others, size):
                beta[i] += (utility[tuple(sorted((*subset, i)))] - utility[subset]) / 2 ** (n - 1)
    return beta


def ground_truth(seed: int, retraining: int = 0, noisy: tuple[str, ...] = NOISY
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """(retraining Shapley values, retraining Banzhaf values, the grand coalition's accuracy) of the federation
    whose ``noisy`` institutions flip half their labels."""
    config = federation_config(seed, noisy=noisy)
    utility = {c: coalition_accuracy(config, c, retraining) for size in range(INSTITUTIONS + 1)
               for c in itertools.combinations(range(INSTITUTIONS), size)}
    return (shapley_from_utilities(utility, INSTITUTIONS), banzhaf_from_utilities(utility, INSTITUTIONS),
            utility[tuple(range(INSTITUTIONS))])


# ---- the project's runs -----------------------------------------------------------------------------------------


def shares(values: dict[str, float] | np.ndarray, names: list[str]) -> np.ndarray:
    v = np.array([values.get(n, 0.0) for n in names] if isinstance(values, dict) else values, dtype=np.float64)
    v = np.maximum(v, 0.0)
    return v / v.sum() if v.sum() > 0 else np.zeros_like(v)


def l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).sum())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def paying_run(config: RunConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = config.replace(run={"output_dir": tmp})
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the run's own round lines; the tables below say it all
            summary = run_federation(config, quiet=True, progress=False)
        seconds = time.perf_counter() - started
        run_dir = Path(summary["run_dir"])
        rounds = [r["scores"] for r in json.loads((run_dir / "rounds.json").read_text())[1:]]
        ledger = Ledger.open(run_dir / "ledger.sqlite")
        earned = ledger.cumulative()
        ledger.close()
    names = [i["name"] for i in summary["institutions"]]
    return {
        "names": names,
        "contribution": {i["name"]: i["contribution"] for i in summary["institutions"]},
        "contribution_share": {i["name"]: i["contribution_share"] for i in summary["institutions"]},
        "tokens": {n: earned.get(n, 0) for n in names},
        "final_test_accuracy": summary["final_test_accuracy"],
        "significant_rounds": sum(1 for r in rounds if r["significant"]),
        "evaluations_per_round": statistics.mean(r["evaluations"] for r in rounds),
        "scoring_seconds_per_round": statistics.mean(r["scoring_seconds"] for r in rounds),
        "run_seconds": seconds,
    }


def compare(run: dict[str, Any], truth: np.ndarray, banzhaf_truth: np.ndarray | None = None,
            noisy_names: tuple[str, ...] = NOISY) -> dict[str, float]:
    names = run["names"]
    gt = shares(truth, names)
    contribution = shares(run["contribution"], names)
    tokens = shares({n: float(v) for n, v in run["tokens"].items()}, names)
    noisy = [names.index(n) for n in noisy_names]
    return {
        "score_l1": l1(contribution, gt), "score_spearman": spearman(contribution, gt),
        "token_l1": l1(tokens, gt), "token_spearman": spearman(tokens, gt),
        "noisy_token_share": float(tokens[noisy].sum()), "noisy_ground_truth_share": float(gt[noisy].sum()),
        # Where the distance comes from: the noisy institutions' pay, and the others' split among themselves.
        **({} if not noisy else split_l1(tokens, gt, noisy)),
        # The same tokens against the retraining Banzhaf value of the same 64 coalitions.
        **({} if banzhaf_truth is None else {
            "token_l1_banzhaf_truth": l1(tokens, shares(banzhaf_truth, names)),
            "token_spearman_banzhaf_truth": spearman(tokens, shares(banzhaf_truth, names))}),
    }


def split_l1(tokens: np.ndarray, truth: np.ndarray, noisy: list[int]) -> dict[str, float]:
    """``noisy_floor_l1``: the Σ|Δshare| of a payout that pays the noisy institutions what ``tokens`` pays them
    and splits the rest exactly in the ground truth's proportions, the closest any such payout comes;
    ``others_token_l1``: the others' tokens against their ground truth, each renormalised to 1 among them."""
    others = [i for i in range(len(tokens)) if i not in noisy]
    own = shares(truth[others], [])
    closest = tokens.copy()
    closest[others] = own * tokens[others].sum()
    return {"noisy_floor_l1": l1(closest, truth), "others_token_l1": l1(shares(tokens[others], []), own)}


def median_of(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.nanmedian([r[k] for r in rows])) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=whole(0), nargs="+", default=[42, 43, 44])
    parser.add_argument("--no-sweep", action="store_true", help="skip the utility x significance sweep")
    parser.add_argument("--results", default="payout_fairness", metavar="NAME",
                        help="write benchmarks/results/NAME.json (other seeds: keep the default seeds' file)")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    results: dict[str, Any] = {"seeds": args.seeds, "institutions": INSTITUTIONS, "rounds": ROUNDS,
                               "noisy": list(NOISY), "ground_truth": {}, "per_seed": []}

    truths, banzhaf_truths = {}, {}
    for seed in args.seeds:
        started = time.perf_counter()
        phi, beta, grand = ground_truth(seed)
        truths[seed], banzhaf_truths[seed] = phi, beta
        print(f"seed {seed}: ground truth φ = {np.round(phi, 4).tolist()} (grand coalition accuracy {grand:.4f}, "
              f"{time.perf_counter() - started:.0f} s)")
        # The reference's own precision: the same 64 coalitions retrained with other training seeds.
        redraws = [ground_truth(seed, k)[0] for k in range(1, RETRAININGS)]
        truth_shares = [shares(v, []) for v in (phi, *redraws)]  # arrays: in the roster's order already
        pairs = list(itertools.combinations(truth_shares, 2))
        results["per_seed"].append({"seed": seed, "ground_truth_phi": phi.tolist(),
                                    "ground_truth_banzhaf": beta.tolist(), "grand_coalition_accuracy": grand,
                                    "ground_truth_redraws_phi": [v.tolist() for v in redraws],
                                    "ground_truth_redraw_l1": [l1(a, b) for a, b in pairs],
                                    "ground_truth_redraw_spearman": [spearman(a, b) for a, b in pairs]})
    results["ground_truth_noise"] = {
        "retrainings": RETRAININGS,
        "l1_median": float(np.median([x for s in results["per_seed"] for x in s["ground_truth_redraw_l1"]])),
        "spearman_median": float(np.nanmedian([x for s in results["per_seed"]
                                               for x in s["ground_truth_redraw_spearman"]])),
        "spearman_min": float(np.nanmin([x for s in results["per_seed"]
                                         for x in s["ground_truth_redraw_spearman"]])),
    }
    g = results["ground_truth_noise"]
    print(f"ground truth retrained {RETRAININGS} times with other training seeds: its shares move by Σ|Δ| "
          f"{g['l1_median']:.3f} (median over pairs and seeds), Spearman {g['spearman_median']:.3f} (lowest "
          f"{g['spearman_min']:.3f})")

    rows = []
    for method in METHODS:
        per_seed = []
        for seed in args.seeds:
            run = paying_run(federation_config(seed, method))
            figures = compare(run, truths[seed], banzhaf_truths[seed])
            per_seed.append(figures)
            next(s for s in results["per_seed"] if s["seed"] == seed)[method] = {**figures, **{
                k: run[k] for k in ("significant_rounds", "evaluations_per_round", "scoring_seconds_per_round")}}
        med = median_of(per_seed)
        results["ground_truth"][method] = med
        rows.append([method, med["score_l1"], med["score_spearman"], med["token_l1"], med["token_spearman"],
                     med["noisy_token_share"], med["noisy_ground_truth_share"], med["noisy_floor_l1"],
                     med["others_token_l1"], med["token_l1_banzhaf_truth"], med["token_spearman_banzhaf_truth"]])
    print("\nAgainst the retraining Shapley value (median over seeds; default utility and significance), and the "
          "retraining Banzhaf value:")
    print_table(["method", "score Σ|Δ|", "score ρ", "token Σ|Δ|", "token ρ", "noisy tokens", "noisy truth",
                 "floor Σ|Δ| (noisy as paid)", "others Σ|Δ|", "token Σ|Δ| (Banzhaf)", "token ρ (Banzhaf)"], rows)

    # The same federation with no flipped labels: every institution honest, nothing for the integrity checks to
    # leave out. An equal split is the reference a payout rule should beat.
    honest = []
    for seed in args.seeds:
        phi, _, grand = ground_truth(seed, noisy=())
        run = paying_run(federation_config(seed, "banzhaf", noisy=()))
        figures = compare(run, phi, noisy_names=())
        equal = np.full(INSTITUTIONS, 1 / INSTITUTIONS)
        honest.append({"seed": seed, "ground_truth_phi": phi.tolist(), "grand_coalition_accuracy": grand,
                       "token_l1": figures["token_l1"], "token_spearman": figures["token_spearman"],
                       "equal_split_l1": l1(equal, shares(phi, [])),
                       "token_shares": shares({n: float(v) for n, v in run["tokens"].items()}, run["names"]).tolist()})
    results["all_honest"] = {"per_seed": honest, **{f"{k}_median": float(np.median([h[k] for h in honest]))
                                                    for k in ("token_l1", "token_spearman", "equal_split_l1")}}
    h = results["all_honest"]
    print(f"\nall honest (no flipped labels), Banzhaf tokens against the retraining Shapley value: Σ|Δ| "
          f"{h['token_l1_median']:.3f}, Spearman {h['token_spearman_median']:.3f} (median); an equal split: Σ|Δ| "
          f"{h['equal_split_l1_median']:.3f}")

    # The demo: do its tokens follow its own contribution shares?
    demo_config = RunConfig.load(ROOT / "configs" / "demo.toml", ["simulation.engine='local'"])
    demo = paying_run(demo_config)
    names = demo["names"]
    token_share = shares({n: float(v) for n, v in demo["tokens"].items()}, names)
    contribution_share = np.array([demo["contribution_share"][n] for n in names])
    results["demo"] = {
        "token_vs_contribution_l1": l1(token_share, contribution_share),
        "token_vs_contribution_spearman": spearman(token_share, contribution_share),
        "final_test_accuracy": demo["final_test_accuracy"],
        "evaluations_per_round": demo["evaluations_per_round"],
        "scoring_seconds_per_round": demo["scoring_seconds_per_round"],
        "significant_rounds": demo["significant_rounds"],
    }
    # Scoring cost against the previous default utility (accuracy), same config otherwise.
    before = paying_run(demo_config.replace(scoring={"utility": "accuracy"}))
    results["demo"]["accuracy_utility"] = {k: before[k] for k in ("evaluations_per_round",
                                                                  "scoring_seconds_per_round")}
    d = results["demo"]
    print(f"\ndemo: token vs contribution share Σ|Δ| {d['token_vs_contribution_l1']:.4f}, Spearman "
          f"{d['token_vs_contribution_spearman']:.4f}; scoring {d['evaluations_per_round']:.0f} evaluations, "
          f"{d['scoring_seconds_per_round']:.3f} s a round (accuracy utility: "
          f"{d['accuracy_utility']['evaluations_per_round']:.0f}, "
          f"{d['accuracy_utility']['scoring_seconds_per_round']:.3f} s)")

    if not args.no_sweep:
        sweep = []
        for utility, significance in itertools.product(("accuracy", "neg_loss", "brier", "margin"),
                                                          ("bootstrap", "none")):
            per_seed = [compare(paying_run(federation_config(
                seed, "gtg", f"scoring.utility='{utility}'", f"scoring.significance='{significance}'")), truths[seed])
                for seed in args.seeds]
            med = median_of(per_seed)
            sweep.append({"utility": utility, "significance": significance, **med})
        results["sweep"] = sweep
        print("\nGTG, utility x significance (median over seeds):")
        print_table(["utility", "significance", "token Σ|Δ|", "token ρ", "noisy tokens", "noisy truth"],
                    [[s["utility"], s["significance"], s["token_l1"], s["token_spearman"], s["noisy_token_share"],
                      s["noisy_ground_truth_share"]] for s in sweep])
    print(f"\nwrote {write_results(args.results, results)}")


if __name__ == "__main__":
    main()
