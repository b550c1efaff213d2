"""Integrity benchmark: what cheating earns, and costs the model, in the default configuration and each alternative.

Digits, 10 institutions (the default Dirichlet α = 0.5 split), 8 rounds, paying on the embedded chain with a
10-token stake each and slashing on: the settings of ``configs/demo.toml``. In every behaviour set 3 of the 10
institutions (30 %) are adversarial; a sybil set splits one institution over 3 identities instead. Per run:
final test accuracy, the accuracy drop against the all-honest run of the same configuration and seed, the
backdoor's attack success rate on the triggered test set, the adversaries' combined token share next to the
share the same institutions earn when honest, who was slashed, the rounds in which a check set an honest
institution's update aside (its false positives, slashed or not), and (sybils) the identities' tokens over what the
whole institution earns; for a sleeper (an attack from ``from_round``) also the adversaries' contribution share had
their scores from that round on been 0, what their honest rounds earn them. "plain" is FedAvg with no checks and
no scoring, the accuracy reference.

    .venv/bin/python benchmarks/integrity.py [--seeds 42 43 44] [--rounds 8] [--quick] [--workers 2]
    .venv/bin/python benchmarks/integrity.py --unlisted --only default
    .venv/bin/python benchmarks/integrity.py --only default --seeds 45 46 47 48 49 50 --results integrity_more_seeds

Writes ``benchmarks/results/integrity.json``: ``default`` (the worst case of the default configuration over
every attack and seed), ``configurations`` (the same per configuration) and ``runs``; with ``--unlisted``, the
same for attacks the defences were not tuned on, in ``benchmarks/results/integrity_unlisted.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, print_table, whole, write_results  # noqa: I001 - puts the project root on sys.path

ADVERSARIES = ["hospital-02", "hospital-05", "hospital-08"]
SYBIL_ORIGINS = ["hospital-05", "hospital-09"]
# Behaviours of the three adversaries. Free riders claim their real row count (claim_factor=1) so that the
# free-rider check, not the count check, is what stops them; count_lie is the count check's case.
ATTACKS = {
    "label_flip": "label_flip",
    "targeted_label_flip": "targeted_label_flip",
    "sign_flip": "sign_flip:scale=4",
    "gaussian_noise": "gaussian_noise:sigma=1",
    "boosted": "boosted:scale=5",
    "free_rider": "free_rider:claim_factor=1",
    "noisy_free_rider": "free_rider:free_rider_noise=0.001:claim_factor=1",
    "disguised_free_rider": "disguised_free_rider:claim_factor=1",
    "low_effort_5_rows": "low_effort:effort_rows=5",
    "low_effort_10_percent": "low_effort:effort=0.1",
    "count_lie": "count_lie:claim_factor=10",
    "backdoor": "backdoor",
    "colluding_copies": "colluder",
}
# Attacks the defences were not tuned on (--unlisted): milder forms of the listed ones, where cheating hides in
# honest work, and a small reversed step (as inner-product manipulation sends) and a half replay of the last step.
UNLISTED = {
    "small_reversed_step": "sign_flip:scale=0.5",
    "boosted_2": "boosted:scale=2",
    "honest_plus_noise": "gaussian_noise:sigma=0.05",
    "free_rider_noise_0.01": "free_rider:free_rider_noise=0.01:claim_factor=1",
    "free_rider_noise_0.05": "free_rider:free_rider_noise=0.05:claim_factor=1",
    "label_flip_30_percent": "label_flip:flip_fraction=0.3",
    "low_effort_30_percent": "low_effort:effort=0.3",
    "half_replay": "disguised_free_rider:replay_scale=0.5:claim_factor=1",
    "backdoor_10_percent": "backdoor:poison_fraction=0.1",
    "backdoor_target_7": "backdoor:target=7",
    # The listed targeted flip relabels class 1 whatever the three hold (at seed 46, 2 of their 335 rows): here
    # each seed's three relabel the class they hold most between them, as an attacker who knows its data would.
    "targeted_flip_held_class": "targeted_label_flip:source={held}:target={target}",
    # Sleepers: honest for the first two rounds, whose scores are the largest, then the attack.
    "late_low_effort_5_rows": "low_effort:effort_rows=5:from_round=3",
    "late_colluding_copies": "colluder:from_round=3",
    "late_boosted": "boosted:scale=5:from_round=3",
    "late_label_flip": "label_flip:from_round=3",
}
MIX = "hospital-02=sign_flip:scale=4, hospital-05=disguised_free_rider:claim_factor=1, hospital-08=backdoor"
# The default configuration is configs/demo.toml as it stands; each alternative changes it as named.
CONFIGURATIONS: dict[str, list[str]] = {
    "default": [],
    "gtg": ["scoring.method='gtg'"],
    "loo": ["scoring.method='loo'"],
    "peers": ["scoring.validation='peers'"],
    "fltrust": ["strategy.name='fltrust'"],
    "fedmedian": ["strategy.name='fedmedian'"],
    "multikrum": ["strategy.name='multikrum'", "strategy.num_malicious=3"],
    "krum": ["strategy.name='krum'", "strategy.num_malicious=3"],
    # Bulyan needs 4f + 3 updates: among 10 institutions f can be 1 at most, below the 3 adversaries.
    "bulyan": ["strategy.name='bulyan'", "strategy.num_malicious=1"],
    "fedtrimmedavg": ["strategy.name='fedtrimmedavg'"],
    "fedadam": ["strategy.name='fedadam'"],
    "fedprox": ["strategy.name='fedprox'", "train.proximal_mu=0.1"],
    "no_backdoor_check": ["integrity.backdoor_threshold=0"],
    "clip_boosted": ["integrity.scaled_update_limit=3"],
    "headroom_rounds": ["payout.round_weight='headroom'"],
}
PLAIN = ["scoring.method='none'", "integrity.free_rider_kappa=0", "integrity.backdoor_threshold=0",
         "integrity.exclude_harmful=false", "integrity.refit_output_layer=false", "integrity.slash=false"]
QUICK_CONFIGURATIONS = ["default", "gtg"]


def behaviour_sets(unlisted: bool = False) -> dict[str, str]:
    """Name → ``integrity.behaviours``: the all-honest run, then the listed attacks, the mix and the sybils (or,
    ``unlisted``, the UNLISTED attacks alone)."""
    sets = {"honest": ""}
    attacks = UNLISTED if unlisted else ATTACKS
    sets.update({name: ", ".join(f"{a}={spec}" for a in ADVERSARIES) for name, spec in attacks.items()})
    if unlisted:
        return sets
    sets["mix"] = MIX
    sets.update({f"sybil_{origin}": f"{origin}=sybil:sybil_identities=3" for origin in SYBIL_ORIGINS})
    return sets


@functools.cache
def held_class(seed: int) -> dict[str, int]:
    """The class the adversaries hold most rows of between them in this seed's split, and a target for it (7, or 1
    when that class is 7 itself): what ``targeted_flip_held_class`` relabels. The split is the demo config's (no
    configuration measured here changes the data)."""
    import numpy as np

    from fedlearn.config import RunConfig
    from fedlearn.federation.roster import federated_split

    split = federated_split(RunConfig.load(ROOT / "configs" / "demo.toml", overrides=[f"run.seed={seed}"]))
    counts = sum(np.bincount(split.partition(name).y, minlength=split.test.num_classes) for name in ADVERSARIES)
    source = int(np.argmax(counts))
    return {"held": source, "target": 1 if source == 7 else 7}


def for_seed(behaviours: str, seed: int) -> str:
    """``behaviours`` with this seed's ``{held}`` and ``{target}`` (:func:`held_class`) filled in."""
    return behaviours.format(**held_class(seed)) if "{held}" in behaviours else behaviours


def run_config(seed: int, rounds: int, behaviours: str, *overrides: str) -> Any:
    """The benchmark's federation: ``configs/demo.toml`` in process, with ``behaviours`` and ``overrides``."""
    from fedlearn.config import RunConfig

    return RunConfig.load(ROOT / "configs" / "demo.toml", overrides=[
        f"run.seed={seed}", f"run.rounds={rounds}", "simulation.engine='local'",
        f"integrity.behaviours=\"{behaviours}\"", *overrides,
    ])


def run_once(job: tuple[str, list[str], str, str, int, int]) -> dict[str, Any]:
    """One federated run; what the tables read of it."""
    configuration, overrides, set_name, behaviours, seed, rounds = job
    import torch

    from fedlearn.federation.simulation import run_federation
    from fedlearn.payout.ledger import Ledger

    torch.set_num_threads(1)
    config = run_config(seed, rounds, behaviours, *overrides)
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_federation(config, run_dir=Path(tmp) / "run", progress=False)
        slashed = sorted({name for _, name, _, _ in Ledger.open(Path(tmp) / "run" / "ledger.sqlite").slashes()})
        rounds = json.loads((Path(tmp) / "run" / "rounds.json").read_text())
    # Every update a check set aside (reply checks, free riders, backdoors), as (round, institution, why).
    set_aside = [(r["server_round"], name, why) for r in rounds if r.get("scores")
                 for name, why in (r["scores"].get("rejected") or {}).items()]
    # Every update clipped as boosted (aggregated at the limit's length, not paid for the round).
    clipped = [(r["server_round"], name, why) for r in rounds if r.get("scores")
               for name, why in (r["scores"].get("clipped") or {}).items()]
    # Under peer validation, every round voted below the slashing bar that the server's split did not confirm
    # (inconclusive, but not a set-aside): neither for nor against a slash.
    unconfirmed = [(r["server_round"], name) for r in rounds if r.get("scores")
                   for name in r["scores"].get("inconclusive", []) if name not in (r["scores"].get("rejected") or {})]
    return {
        "configuration": configuration, "behaviours": set_name, "seed": seed,
        "accuracy": float(summary["final_test_accuracy"]), "unconfirmed": unconfirmed,
        "share_before_attack": share_before_attack(rounds, behaviours, config),
        "contribution_share": {i["name"]: float(i["contribution_share"]) for i in summary["institutions"]},
        "backdoor_success": summary.get("final_backdoor_success"),
        "earned": {i["name"]: int(i["tokens_earned"]) for i in summary["institutions"]},
        "slashed": slashed, "set_aside": set_aside, "clipped": clipped,
    }


def share_before_attack(rounds: list[dict[str, Any]], behaviours: str, config: Any) -> float | None:
    """For a sleeper (``from_round``): the adversaries' contribution share had every score of each from its
    ``from_round`` on been 0 — what the rounds in which they trained honestly earn them under the payout rule
    (amounts already paid never go down). None for an attack from the first round."""
    from fedlearn.data.partition import institution_names
    from fedlearn.learning.behaviours import parse_behaviours
    from fedlearn.payout.schedule import RoundMeasure, contributions
    from fedlearn.scoring.utility import UTILITY_MAX

    specs = parse_behaviours(behaviours, institution_names(config.data.institutions))
    start = {name: spec.from_round for name, spec in specs.items() if name in ADVERSARIES and spec.from_round > 1}
    if not start:
        return None
    history = [RoundMeasure(s["server_round"], {n: 0.0 if n in start and s["server_round"] >= start[n] else v
                                                for n, v in s["scores"].items()},
                            s["gain"], s["significant"], s["start_utility"])
               for s in (r["scores"] for r in rounds if r.get("scores"))]
    total = contributions(history, UTILITY_MAX[config.scoring.utility], config.payout.round_weight)
    positive = {name: max(float(value), 0.0) for name, value in total.items()}
    whole = sum(positive.values())
    return sum(positive.get(name, 0.0) for name in ADVERSARIES) / whole if whole else 0.0


def adversaries_of(set_name: str, earned: dict[str, int]) -> set[str]:
    if set_name.startswith("sybil_"):
        origin = set_name.removeprefix("sybil_")
        return {n for n in earned if n.startswith(origin + "~")}
    return set() if set_name in ("honest", "plain") else set(ADVERSARIES)


def share(earned: dict[str, int], names: set[str]) -> float:
    total = sum(earned.values())
    return sum(earned[n] for n in names if n in earned) / total if total else 0.0


def summarise(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per run, the figures against the same configuration's honest run; per configuration, the worst case."""
    honest = {(r["configuration"], r["seed"]): r for r in runs if r["behaviours"] == "honest"}
    plain = {r["seed"]: r for r in runs if r["configuration"] == "plain"}
    rows: list[dict[str, Any]] = []
    for r in runs:
        if r["configuration"] == "plain":
            continue
        base = honest[(r["configuration"], r["seed"])]
        adversarial = adversaries_of(r["behaviours"], r["earned"])
        row = {
            "configuration": r["configuration"], "behaviours": r["behaviours"], "seed": r["seed"],
            "accuracy": r["accuracy"], "accuracy_drop_points": 100 * (base["accuracy"] - r["accuracy"]),
            "backdoor_success": r["backdoor_success"],
            "adversary_share": share(r["earned"], adversarial),
            "adversary_share_before_attack": r.get("share_before_attack"),
            "adversary_contribution_share": sum(r["contribution_share"].get(n, 0.0) for n in adversarial)
            if "contribution_share" in r else None,
            "honest_equivalent_share": share(base["earned"], set(ADVERSARIES)) if adversarial else None,
            "adversaries_slashed": len(set(r["slashed"]) & adversarial),
            "honest_slashed": len(set(r["slashed"]) - adversarial),
            # Rounds in which a check set an honest institution's update aside (a false positive, slashed or not).
            "honest_set_aside": [[rnd, name, why] for rnd, name, why in r.get("set_aside", [])
                                 if name not in adversarial],
            # Rounds in which an honest institution's update was clipped as boosted (unpaid for the round).
            "honest_clipped": [[rnd, name, why] for rnd, name, why in r.get("clipped", []) if name not in adversarial],
            # Under peer validation: rounds voted below the slashing bar the server's split did not confirm.
            "votes_unconfirmed": {"honest": sum(name not in adversarial for _, name in r.get("unconfirmed", [])),
                                  "adversaries": sum(name in adversarial for _, name in r.get("unconfirmed", []))},
            "sybil_over_whole": None,
        }
        if r["behaviours"].startswith("sybil_"):
            origin = r["behaviours"].removeprefix("sybil_")
            whole = base["earned"].get(origin, 0)
            row["honest_equivalent_share"] = share(base["earned"], {origin})
            row["sybil_over_whole"] = sum(r["earned"][n] for n in adversarial) / whole if whole else None
        if r["behaviours"] == "honest" and r["seed"] in plain:
            row["plain_fedavg_accuracy"] = plain[r["seed"]]["accuracy"]
        rows.append(row)
    return rows, worst_cases(rows)


def worst_cases(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per configuration, the worst case over its rows (``summarise``'s, or those stored in a results file)."""
    worst: dict[str, dict[str, Any]] = {}
    for name in sorted({row["configuration"] for row in rows}):
        mine = [row for row in rows if row["configuration"] == name]
        attacks = [row for row in mine if row["behaviours"] != "honest" and not row["behaviours"].startswith("sybil")]
        sybils = [row["sybil_over_whole"] for row in mine if row["sybil_over_whole"] is not None]
        # A split whose identities are paid while the whole institution earns nothing has no ratio, and would
        # otherwise drop out of the maximum: their share is reported beside it.
        unpaid_whole = [row["adversary_share"] for row in mine if row["behaviours"].startswith("sybil")
                        and row["sybil_over_whole"] is None and row["adversary_share"] > 0]
        backdoors = [row["backdoor_success"] for row in attacks if row["backdoor_success"] is not None]
        plain_gap = [100 * (row["plain_fedavg_accuracy"] - row["accuracy"]) for row in mine
                     if "plain_fedavg_accuracy" in row]
        worst_share = max(attacks, key=lambda row: row["adversary_share"])
        # What cheating earns the adversaries against what the same institutions earn honestly (same seed): above
        # 1, an attack pays better than the work it replaces.
        over_honest = max((row for row in attacks if row["honest_equivalent_share"]),
                          key=lambda row: row["adversary_share"] / row["honest_equivalent_share"], default=None)
        worst[name] = {
            "worst_adversary_share": worst_share["adversary_share"],
            "worst_adversary_share_attack": worst_share["behaviours"],
            "max_adversary_over_honest": None if over_honest is None else
            over_honest["adversary_share"] / over_honest["honest_equivalent_share"],
            "max_adversary_over_honest_attack": None if over_honest is None else over_honest["behaviours"],
            "worst_accuracy_drop_points": max(row["accuracy_drop_points"] for row in attacks),
            "worst_backdoor_success": max(backdoors) if backdoors else None,
            "max_sybil_over_whole": max(sybils) if sybils else None,
            "sybil_share_with_whole_unpaid": max(unpaid_whole) if unpaid_whole else None,
            "honest_slashed": sum(row["honest_slashed"] for row in mine),
            "honest_set_aside": sum(len(row["honest_set_aside"]) for row in mine),
            "honest_clipped": sum(len(row.get("honest_clipped", [])) for row in mine),
            "votes_unconfirmed": {who: sum(row.get("votes_unconfirmed", {}).get(who, 0) for row in mine)
                                  for who in ("honest", "adversaries")},
            "honest_accuracy_below_plain_fedavg_points": max(plain_gap) if plain_gap else None,
            "per_attack_worst_share": {b: max(row["adversary_share"] for row in attacks if row["behaviours"] == b)
                                       for b in sorted({row["behaviours"] for row in attacks})},
        }
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=whole(0), nargs="+", default=[42, 43, 44])
    parser.add_argument("--rounds", type=whole(1), default=8)
    parser.add_argument("--quick", action="store_true", help=f"configurations {QUICK_CONFIGURATIONS} only")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGURATIONS), metavar="CONFIGURATION",
                        help="these configurations only; the others keep their figures from the results file")
    parser.add_argument("--results", default="", metavar="NAME",
                        help="write benchmarks/results/NAME.json instead (no merging: other seeds, other questions)")
    parser.add_argument("--unlisted", action="store_true",
                        help="the UNLISTED attacks instead, written to integrity_unlisted.json (--only: no merging)")
    parser.add_argument("--workers", type=whole(1), default=max(1, min(2, os.cpu_count() or 1)))
    args = parser.parse_args()
    configurations = {k: v for k, v in CONFIGURATIONS.items()
                      if (not args.quick or k in QUICK_CONFIGURATIONS) and (not args.only or k in args.only)}
    # --only merges into the last results: read them before the runs, so a missing file stops here, not after them.
    previous_path = RESULTS / "integrity.json"
    merge = bool(args.only) and not args.unlisted and not args.results
    if merge and not previous_path.exists():
        raise SystemExit(f"--only keeps the other configurations' figures from {previous_path}, which does not "
                         "exist: run without --only first")
    previous = json.loads(previous_path.read_text()) if merge else None
    sets = behaviour_sets(args.unlisted)
    jobs = [(name, overrides, set_name, for_seed(behaviours, seed), seed, args.rounds)
            for seed in args.seeds for name, overrides in configurations.items()
            for set_name, behaviours in sets.items()]
    jobs += [("plain", PLAIN, "honest", "", seed, args.rounds) for seed in args.seeds]
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.workers) as pool:
        for run in pool.map(run_once, jobs):
            runs.append(run)
            print(f"{run['configuration']:10s} seed {run['seed']} {run['behaviours']:22s} acc {run['accuracy']:.3f} "
                  f"slashed {run['slashed']}", flush=True)
    rows, worst = summarise(runs)
    print()
    table = []
    for config in configurations:
        for set_name in sets:
            mine = [r for r in rows if r["configuration"] == config and r["behaviours"] == set_name]
            backdoor = [r["backdoor_success"] for r in mine if r["backdoor_success"] is not None]
            equivalent = [r["honest_equivalent_share"] for r in mine if r["honest_equivalent_share"] is not None]
            sybil = [r["sybil_over_whole"] for r in mine if r["sybil_over_whole"] is not None]
            before = [r["adversary_share_before_attack"] for r in mine
                      if r["adversary_share_before_attack"] is not None]
            table.append([config, set_name, min(r["accuracy"] for r in mine),
                          max(r["accuracy_drop_points"] for r in mine),
                          max(backdoor) if backdoor else "", max(r["adversary_share"] for r in mine),
                          max(equivalent) if equivalent else "", max(before) if before else "",
                          max(sybil) if sybil else "",
                          sum(r["adversaries_slashed"] for r in mine), sum(r["honest_slashed"] for r in mine),
                          sum(len(r["honest_set_aside"]) for r in mine),
                          sum(len(r["honest_clipped"]) for r in mine)])
    print(f"worst case over seeds {args.seeds}, {args.rounds} rounds, 3 of 10 institutions adversarial:")
    print_table(["configuration", "behaviours", "min acc.", "max drop pts", "backdoor", "adv. share",
                 "honest-equiv.", "before attack", "sybil/whole", "adv. slashed", "honest slashed", "honest set aside",
                 "honest clipped"], table)
    print()
    print_table(["configuration", "worst adv. share", "(attack)", "adv. ÷ honest-equiv.", "(attack)", "worst drop pts",
                 "worst backdoor", "sybil/whole", "sybils, whole unpaid", "honest slashed", "honest set aside",
                 "honest clipped", "honest acc. below plain pts"],
                [[name, w["worst_adversary_share"], w["worst_adversary_share_attack"], w["max_adversary_over_honest"],
                  w["max_adversary_over_honest_attack"],
                  w["worst_accuracy_drop_points"], w["worst_backdoor_success"], w["max_sybil_over_whole"],
                  w["sybil_share_with_whole_unpaid"],
                  w["honest_slashed"], w["honest_set_aside"], w["honest_clipped"],
                  w["honest_accuracy_below_plain_fedavg_points"]]
                 for name, w in worst.items()])
    print(f"\n{len(jobs)} runs in {time.perf_counter() - started:.0f} s")
    if previous is not None:  # the other configurations' figures and runs stay as last measured, marked with when
        measured = previous.get("measured_at", "")
        kept = {k: {**v, "measured_at": v.get("measured_at", measured)}
                for k, v in previous["configurations"].items() if k not in worst}
        worst = {**kept, **worst}
        rows = [r for r in previous["runs"] if r["configuration"] in kept] + rows
        configurations = {**{k: v for k, v in previous["configurations_overrides"].items() if k in kept},
                          **configurations}
    path = write_results(args.results or ("integrity_unlisted" if args.unlisted else "integrity"), {
        "rounds": args.rounds, "institutions": 10, "seeds": args.seeds, "adversaries": ADVERSARIES,
        "attacks": UNLISTED if args.unlisted else ATTACKS, "mix": None if args.unlisted else MIX,
        "held_classes": {seed: held_class(seed) for seed in args.seeds} if args.unlisted else None,
        "configurations_overrides": configurations,
        "default": worst.get("default", {}), "configurations": worst, "runs": rows,
        "targets": {"worst_adversary_share": 0.03, "worst_accuracy_drop_points": 2.0, "worst_backdoor_success": 0.05,
                    "max_sybil_over_whole": 1.0, "honest_slashed": 0, "honest_accuracy_below_plain_fedavg_points": 1.0},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
