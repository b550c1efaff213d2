"""Pay rules, offline: what other scoring games and round weights would pay on the very same runs.

A change to what is paid is judged against two references at once: the retraining Shapley value of the
payout-fairness federation (``benchmarks/payout_fairness.py``, stored per seed) and what attacks earn in the
integrity benchmark's default configuration (``benchmarks/integrity.py``). Each run is made once, in the default
configuration; every round's coalition utility is kept (the project's own, :class:`MeanUtility`), and each rule
below is applied to it with the run's own exclusions and significant rounds. A rule that would leave out other
updates would also move the model, which this does not follow: the figures say what the rule pays on the
default's trajectory. Contribution shares stand in for token shares (the true-up makes them equal unless someone
was paid early beyond its final share).

Games, per round, exact Banzhaf over the round's updates (an update left out keeps its recorded score when that is
negative, else 0, under every game):
  mean       the default's: a coalition's model is its members' weighted mean (reproduces the recorded scores)
  zero_twin  each update against a zero step of its registered weight: U(S + i) − U(S beside a zero step of
             weight w_i), so an update earns nothing for shortening the averaged step (n · 2^(n−1) more
             evaluations)
  best_step  a coalition's mean step taken at the best of the lengths in STEPS, so that no update earns for the
             length of the step, only for its direction
Round weights: equal (the default), round_1_unpaid (round 1 counts nothing), headroom (the option of that name).

The default game's tokens are also recomputed under other ``payout.interim_fraction`` values, by the payout rule
itself (``fedlearn.payout.schedule.allocate``) on each run's recorded rounds: the rule is pure and nothing it pays
feeds back into training or scoring, so these are the tokens those runs would have paid (at the run's own
fraction the recomputation equals the run's tokens to the wei, which is checked).

    .venv/bin/python benchmarks/pay_rules.py [--seeds 42 ... 50] [--attack-seeds 42 43 44]

Writes benchmarks/results/pay_rules.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import print_table, whole, write_results  # noqa: I001 - puts the project root on sys.path
from payout_fairness import shares
from payout_variants import stored_truth
from scipy.stats import spearmanr

from fedlearn.federation.coalitions import MeanUtility
from fedlearn.payout.rewards import tokens_to_wei
from fedlearn.payout.schedule import RoundMeasure, allocate
from fedlearn.scoring.banzhaf import banzhaf
from fedlearn.scoring.utility import UTILITY_MAX, round_weight

GAMES = ("mean", "zero_twin", "best_step")
WEIGHTS = ("equal", "round_1_unpaid", "headroom")
STEPS = (0.5, 0.75, 1.0, 1.25, 1.5)
INTERIM = (0.5, 0.25, 0.1, 0.0)
NOISY = ("hospital-01", "hospital-02")
ADVERSARIES = ("hospital-02", "hospital-05", "hospital-08")
ATTACKS = ("honest", "low_effort_5_rows", "colluding_copies", "boosted", "targeted_label_flip", "backdoor",
           "label_flip", "late_low_effort_5_rows", "late_colluding_copies", "late_boosted", "late_label_flip")


def banzhaf_values(n: int, utility: dict[tuple[int, ...], float]) -> np.ndarray:
    """The project's exact Banzhaf value of a game given as a table over every coalition."""
    return banzhaf(n, lambda subset: utility[tuple(sorted(subset))], rng=np.random.default_rng(0),
                   samples=2**n).values


def round_games(mean_utility: MeanUtility, n: int) -> dict[str, np.ndarray]:
    """Every game's Banzhaf values for one round, from its :class:`MeanUtility`."""
    weights = mean_utility.weights
    coalitions = [c for size in range(n + 1) for c in itertools.combinations(range(n), size)]
    share_rows = np.zeros((len(coalitions), n))
    for row, c in enumerate(coalitions):
        if c:
            share_rows[row, list(c)] = weights[list(c)] / weights[list(c)].sum()
    mean = dict(zip(coalitions, mean_utility.mixes(torch.as_tensor(share_rows))))
    # The best step: each coalition's mean step at every length in STEPS, the best one taken.
    stepped = np.array(mean_utility.mixes(torch.as_tensor(np.concatenate([s * share_rows for s in STEPS]))))
    best = dict(zip(coalitions, stepped.reshape(len(STEPS), -1).max(axis=0)))
    best[()] = mean[()]
    # The zero twin: S beside a zero step of i's weight, for every i and every S without i.
    twin = np.zeros(n)
    for i in range(n):
        without = [c for c in coalitions if i not in c]
        beside = np.zeros((len(without), n))
        for row, c in enumerate(without):
            if c:
                beside[row, list(c)] = weights[list(c)] / (weights[list(c)].sum() + weights[i])
        values = mean_utility.mixes(torch.as_tensor(beside))
        twin[i] = np.mean([mean[tuple(sorted((*c, i)))] - v for c, v in zip(without, values)])
    return {"mean": banzhaf_values(n, mean), "zero_twin": twin, "best_step": banzhaf_values(n, best)}


def captured_run(job: tuple[str, str, int]) -> dict[str, Any]:
    """One run in the default configuration; per round, every game's values and what the run recorded."""
    kind, name, seed = job
    import fedlearn.federation.strategy as strategy_module
    from fedlearn.federation.replies import institution_of
    from fedlearn.federation.simulation import run_federation

    torch.set_num_threads(1)
    captured: dict[int, tuple[list[str], Any]] = {}
    real = strategy_module.round_utility

    def recording(strategy: Any, server_round: int, replies: list[Any], start: Any, model: Any,
                  validation: tuple[np.ndarray, np.ndarray], metric: str) -> Any:
        utility = real(strategy, server_round, replies, start, model, validation, metric)
        captured[server_round] = ([institution_of(m) for m in replies], utility)
        return utility

    if kind == "fairness":
        from payout_fairness import federation_config
        config = federation_config(seed, "banzhaf")
    else:
        import integrity
        sets = {**integrity.behaviour_sets(), **integrity.behaviour_sets(unlisted=True)}
        config = integrity.run_config(seed, 8, integrity.for_seed(sets[name], seed))
    strategy_module.round_utility = recording
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            summary = run_federation(config.replace(run={"output_dir": tmp}), run_dir=Path(tmp) / "run",
                                     progress=False)
            recorded = json.loads((Path(tmp) / "run" / "rounds.json").read_text())[1:]
    finally:  # a worker runs many jobs: the next one wraps the real function, not this wrapper
        strategy_module.round_utility = real
    rounds, measures = [], []
    for record in recorded:
        scores = record["scores"]
        measures.append([scores["server_round"], scores["scores"], scores["gain"], scores["significant"],
                         scores["start_utility"]])
        if scores["server_round"] not in captured:  # every update set aside before scoring: nothing to score
            continue
        names, utility = captured[scores["server_round"]]
        games = round_games(utility, len(names))
        rounds.append({"names": names, "games": {g: v.tolist() for g, v in games.items()},
                       "recorded": [scores["scores"][n] for n in names],
                       "excluded": [n in scores["excluded"] for n in names],
                       "clipped": [n in (scores.get("clipped") or {}) for n in names],
                       "significant": scores["significant"],
                       "weight": {"headroom": round_weight(scores["start_utility"], UTILITY_MAX[scores["utility"]],
                                                           "headroom")},
                       "server_round": scores["server_round"]})
    # The roster's order (the ground truth's), every institution whether or not it was ever scored.
    return {"kind": kind, "name": name, "seed": seed, "rounds": rounds,
            "names": [i["name"] for i in summary["institutions"]], "measures": measures,
            "schedule": {"per_round": tokens_to_wei(config.chain.reward_per_round), "rounds": config.run.rounds,
                         "interim_fraction": config.payout.interim_fraction,
                         "best_utility": UTILITY_MAX[config.scoring.utility],
                         "round_weight": config.payout.round_weight},
            "tokens": {i["name"]: int(i["tokens_earned"]) for i in summary["institutions"]}}


def tokens_at(run: dict[str, Any], interim_fraction: float) -> dict[str, int]:
    """What the run's recorded rounds pay under ``interim_fraction``: the payout rule, round by round."""
    plan, history, paid = run["schedule"], [], {n: 0 for n in run["names"]}
    for server_round, scores, gain, significant, start in run["measures"]:
        history.append(RoundMeasure(server_round, {n: float(scores.get(n, 0.0)) for n in run["names"]}, gain,
                                    significant, start))
        paid = allocate(history, paid, plan["per_round"] * plan["rounds"], interim_fraction, plan["best_utility"],
                        server_round >= plan["rounds"], plan["per_round"], weighting=plan["round_weight"]).cumulative
    return paid


def contribution(run: dict[str, Any], game: str, weight: str) -> dict[str, float]:
    total: dict[str, float] = {}
    for r in run["rounds"]:
        if not r["significant"]:
            continue
        factor = {"equal": 1.0, "round_1_unpaid": float(r["server_round"] > 1),
                  "headroom": r["weight"]["headroom"]}[weight]
        for name, value, recorded, left_out, clipped in zip(r["names"], r["games"][game], r["recorded"],
                                                            r["excluded"], r["clipped"]):
            # Left out: the recorded score where it is negative (what the check charged), else nothing; clipped as
            # boosted: never paid for the round (as the run records it).
            value = min(recorded, 0.0) if left_out else min(value, 0.0) if clipped else value
            total[name] = total.get(name, 0.0) + factor * value
    return total


def adversaries_share(run: dict[str, Any], game: str, weight: str) -> float:
    names = run["names"]
    paid = shares(contribution(run, game, weight), names)
    return float(sum(paid[names.index(a)] for a in ADVERSARIES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=whole(0), nargs="+", default=list(range(42, 51)))
    parser.add_argument("--attack-seeds", type=whole(0), nargs="+", default=[42, 43, 44])
    parser.add_argument("--workers", type=whole(1), default=2)
    args = parser.parse_args()
    truth = stored_truth()
    missing = sorted(set(args.seeds) - set(truth))
    if missing:
        parser.error(f"no stored ground truth for seed(s) {missing}: run benchmarks/payout_fairness.py for them")
    jobs = [("fairness", "", s) for s in args.seeds] + [("attack", a, s) for a in ATTACKS for s in args.attack_seeds]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(captured_run, jobs))
    seconds = time.perf_counter() - started
    results: dict[str, Any] = {"seeds": args.seeds, "attack_seeds": args.attack_seeds, "steps": list(STEPS),
                               "rules": {}}
    rows = []
    for game, weight in itertools.product(GAMES, WEIGHTS):
        fairness = []
        for run in (r for r in runs if r["kind"] == "fairness"):
            names = run["names"]
            if len(names) != len(truth[run["seed"]]):
                raise SystemExit(f"seed {run['seed']}: {len(names)} institutions, the stored truth has "
                                 f"{len(truth[run['seed']])}")
            paid = shares(contribution(run, game, weight), names)
            gt = shares(dict(zip(names, truth[run["seed"]])), names)
            noisy = [names.index(n) for n in NOISY]
            fairness.append({"seed": run["seed"], "l1": float(np.abs(paid - gt).sum()),
                             "spearman": float(spearmanr(paid, gt).statistic), "noisy": float(paid[noisy].sum())})
        attacks = {attack: max(adversaries_share(r, game, weight) for r in runs
                               if r["kind"] == "attack" and r["name"] == attack) for attack in ATTACKS}
        rule = {"token_l1_median": float(np.median([f["l1"] for f in fairness])),
                "token_spearman_median": float(np.median([f["spearman"] for f in fairness])),
                "noisy_share_median": float(np.median([f["noisy"] for f in fairness])),
                "per_seed": fairness, "adversaries_share_max": attacks}
        results["rules"][f"{game}/{weight}"] = rule
        rows.append([f"{game}/{weight}", rule["token_l1_median"], rule["token_spearman_median"],
                     rule["noisy_share_median"], *[attacks[a] for a in ATTACKS]])
    print(f"Against the retraining Shapley value (median over seeds {args.seeds}) and the adversaries' share "
          f"(max over seeds {args.attack_seeds}; 'honest': the same three, honest):")
    print_table(["rule", "Σ|Δshare|", "Spearman", "noisy", *ATTACKS], rows)
    interim_rows = []
    results["interim_fraction"] = {}
    for fraction in INTERIM:
        fits: list[tuple[float, float]] = []
        taken: dict[str, float] = {}
        for run in runs:
            amounts = tokens_at(run, fraction)
            if fraction == run["schedule"]["interim_fraction"] and amounts != run["tokens"]:
                raise SystemExit(f"{run['kind']} {run['name']} seed {run['seed']}: the recomputed tokens differ from "
                                 "the run's")
            names = run["names"]
            tokens = shares({n: float(v) for n, v in amounts.items()}, names)
            if run["kind"] == "fairness":
                gt = shares(dict(zip(names, truth[run["seed"]])), names)
                fits.append((float(np.abs(tokens - gt).sum()), float(spearmanr(tokens, gt).statistic)))
            else:
                share = float(sum(tokens[names.index(a)] for a in ADVERSARIES))
                taken[run["name"]] = max(taken.get(run["name"], 0.0), share)
        entry = {"token_l1_median": float(np.median([f[0] for f in fits])),
                 "token_spearman_median": float(np.median([f[1] for f in fits])),
                 "adversaries_token_share_max": taken}
        results["interim_fraction"][str(fraction)] = entry
        interim_rows.append([fraction, entry["token_l1_median"], entry["token_spearman_median"],
                             *[taken[a] for a in ATTACKS]])
    print("\nTokens under other payout.interim_fraction values (the default game, the same runs):")
    print_table(["interim", "Σ|Δshare|", "Spearman", *ATTACKS], interim_rows)
    print(f"\n{len(jobs)} runs in {seconds:.0f} s")
    print(f"wrote {write_results('pay_rules', results)}")


if __name__ == "__main__":
    main()
