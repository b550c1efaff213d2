"""Integrity benchmark: adversarial institutions against every scoring mode × aggregator.

Digits, 10 institutions (Dirichlet α = 1), 8 rounds of 2 local epochs, paying on the embedded chain with a 10-token
stake each and slashing on. Behaviour sets: all honest; 3 institutions of each behaviour in turn; a mix; one institution
split into 3 sybils. Per run: final accuracy, drop against the all-honest run of the same mode × aggregator,
the adversaries' combined share of tokens, adversaries and honest institutions slashed, and the Spearman
correlation of honest payouts with data size. Runs use the in-process engine (real apps, no Ray).

    .venv/bin/python benchmarks/integrity.py [--rounds 8] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import print_table, write_results  # noqa: I001 - puts the project root on sys.path
from scipy.stats import spearmanr

from fedlearn.config import RunConfig
from fedlearn.federation.simulation import run_federation
from fedlearn.payout.ledger import Ledger

ADVERSARIES = ["hospital-02", "hospital-05", "hospital-08"]
BEHAVIOURS = {
    "honest": "",
    "label_flip": "label_flip",
    "sign_flip": "sign_flip:scale=4",
    "gaussian_noise": "gaussian_noise:sigma=1",
    "free_rider": "free_rider",
    "noisy_free_rider": "free_rider:free_rider_noise=0.001",
    "disguised_free_rider": "disguised_free_rider",
    "disguised_free_rider_x2": "disguised_free_rider:replay_scale=2:free_rider_noise=0.01",
    "boosted": "boosted:scale=5",
}
MIX = "hospital-02=sign_flip:scale=4, hospital-05=free_rider, hospital-08=gaussian_noise:sigma=1"
SYBIL = "hospital-05=sybil:sybil_identities=3"
MODES = {"server": ["scoring.method='gtg'"], "peers": ["scoring.validation='peers'"],
         "trust": ["scoring.method='trust'"]}
AGGREGATORS = {"fedavg": [], "multikrum": ["strategy.num_malicious=3"], "fedmedian": [], "fltrust": []}


def behaviour_sets() -> dict[str, str]:
    sets = {name: ", ".join(f"{a}={spec}" for a in ADVERSARIES) if spec else "" for name, spec in BEHAVIOURS.items()}
    sets["mix"] = MIX
    sets["sybil"] = SYBIL
    return sets


def run_once(rounds: int, mode: str, aggregator: str, behaviours: str) -> dict:
    config = RunConfig.load(overrides=[
        f"run.rounds={rounds}", "data.institutions=10", "data.alpha=1.0", "simulation.engine='local'",
        "train.learning_rate=0.05", "train.momentum=0.9", "train.local_epochs=2", "integrity.min_stake=10",
        f"strategy.name='{aggregator}'", f"integrity.behaviours=\"{behaviours}\"",
        *MODES[mode], *AGGREGATORS[aggregator],
    ])
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_federation(config, run_dir=Path(tmp) / "run", progress=False)
        slashed = {name for _, name, _, _ in Ledger.open(Path(tmp) / "run" / "ledger.sqlite").slashes()}
    return {"summary": summary, "slashed": slashed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="server mode with fedavg and fedmedian only")
    args = parser.parse_args()
    modes = ["server"] if args.quick else list(MODES)
    aggregators = ["fedavg", "fedmedian"] if args.quick else list(AGGREGATORS)
    rows, results = [], []
    started = time.perf_counter()
    for mode in modes:
        for aggregator in aggregators:
            baseline = None
            for set_name, behaviours in behaviour_sets().items():
                out = run_once(args.rounds, mode, aggregator, behaviours)
                institutions = out["summary"]["institutions"]
                earned = {i["name"]: int(i["tokens_earned"]) for i in institutions}
                total = sum(earned.values()) or 1
                accuracy = float(out["summary"]["final_test_accuracy"])
                if set_name == "honest":
                    baseline = {"accuracy": accuracy, "earned": earned}
                adversarial = set(ADVERSARIES) if set_name not in ("honest", "sybil") else set()
                if set_name == "sybil":
                    adversarial = {n for n in earned if n.startswith("hospital-05~")}
                honest = [i for i in institutions if i["name"] not in adversarial]
                rho = spearmanr([float(i["tokens_earned"]) for i in honest], [i["examples"] for i in honest]).statistic
                share = sum(earned[n] for n in adversarial) / total
                sybil_ratio = None
                if set_name == "sybil" and baseline is not None:
                    whole = baseline["earned"].get("hospital-05", 0)
                    sybil_ratio = sum(earned[n] for n in adversarial) / whole if whole else None
                record = {
                    "mode": mode, "aggregator": aggregator, "behaviours": set_name, "final_accuracy": accuracy,
                    "accuracy_drop_points": 100 * (baseline["accuracy"] - accuracy) if baseline else 0.0,
                    "adversary_share": share, "adversaries_slashed": len(out["slashed"] & adversarial),
                    "honest_slashed": len(out["slashed"] - adversarial),
                    "honest_payout_spearman_with_size": float(rho), "sybil_over_whole": sybil_ratio,
                }
                results.append(record)
                rows.append([mode, aggregator, set_name, accuracy, record["accuracy_drop_points"], share,
                             record["adversaries_slashed"], record["honest_slashed"], float(rho),
                             "" if sybil_ratio is None else f"{sybil_ratio:.2f}"])
                print(f"{mode:7s} {aggregator:13s} {set_name:14s} acc {accuracy:.3f} share {share:.3f} "
                      f"slashed {sorted(out['slashed'])}", flush=True)
    print()
    print_table(["mode", "aggregator", "behaviours", "accuracy", "drop pts", "adv. share", "adv. slashed",
                 "honest slashed", "rank corr.", "sybil/whole"], rows)
    # Best configuration: the mode × aggregator whose worst case over the attacks is best.
    worst: dict[tuple[str, str], tuple[float, float]] = {}
    for r in results:
        if r["behaviours"] in ("honest", "sybil"):
            continue
        key = (r["mode"], r["aggregator"])
        share, drop = worst.get(key, (0.0, 0.0))
        worst[key] = (max(share, r["adversary_share"]), max(drop, r["accuracy_drop_points"]))
    best = min(worst, key=lambda k: (max(worst[k][0] / 0.03, worst[k][1] / 2.0), worst[k]))
    print(f"\nbest configuration: scoring {best[0]}, aggregator {best[1]}: worst adversary share "
          f"{worst[best][0]:.2%}, worst accuracy drop {worst[best][1]:.2f} points "
          f"(targets: share <= 3%, drop <= 2 points); {time.perf_counter() - started:.0f} s in all")
    path = write_results("integrity", {
        "rounds": args.rounds, "institutions": 10, "adversaries": ADVERSARIES, "runs": results,
        "worst_case": {f"{m}/{a}": {"adversary_share": s, "accuracy_drop_points": d}
                       for (m, a), (s, d) in worst.items()},
        "best": {"mode": best[0], "aggregator": best[1], "adversary_share": worst[best][0],
                 "accuracy_drop_points": worst[best][1]},
        "targets": {"adversary_share": 0.03, "accuracy_drop_points": 2.0, "sybil_over_whole": 1.0},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
