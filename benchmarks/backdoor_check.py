"""Backdoor check: how close honest institutions come to its threshold, and which planters it catches, by round.

The integrity benchmark's federation (``configs/demo.toml``: digits, 10 institutions, 8 rounds) in the default
configuration, the check on. Honest runs at each Dirichlet α of ``--alphas`` (the skew that brings honest
institutions closest: one or two classes each at α = 0.05), and runs in which hospital-02, -05 and -08 plant the
same trigger (``backdoor``: 30 % of their rows; ``--planters`` names others, one for a lone planter) at each α of
``--planted-alphas``. Every round's checkpoint keeps the check's sums (``ScoredStrategy.check_state``), so each
round's score of every institution, every pair counted (``UnitGrowth.scores(floor=-inf)``), is read back from the
run directory as the run saw it, with each institution's best unit alone (``UnitGrowth.unit_scores``, what a check
without pairs would read). Reported: the highest score of an institution that plants nothing, per α, at any round,
paired and alone; per planter, the first round it was flagged (over the threshold), its score then and at the end,
and the range of its best unit alone from round 3 on.

    .venv/bin/python benchmarks/backdoor_check.py [--seeds 57 58 59 60 61 62] [--alphas 0.05 0.1 0.5]
        [--planted-alphas 0.5] [--planters hospital-02 hospital-05 hospital-08] [--results NAME] [--workers 2]

Writes ``benchmarks/results/backdoor_check.json`` (or NAME.json): ``honest_max`` and ``honest_lone_max`` by α,
``planters_caught`` and ``planters_lone`` by α, ``runs``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from common import ROOT, positive, print_table, whole, write_results  # noqa: I001 - puts the project root on sys.path

PLANTERS = ["hospital-02", "hospital-05", "hospital-08"]


def run_once(job: tuple[float, int, bool, tuple[str, ...]]) -> dict[str, Any]:
    """One federated run; every institution's score after each round, every pair counted, and its best unit alone."""
    alpha, seed, planted, planters = job
    import numpy as np
    import torch

    from fedlearn.config import RunConfig
    from fedlearn.federation.simulation import run_federation
    from fedlearn.records.checkpoint import CHECKPOINT_DIR, completed_rounds

    torch.set_num_threads(1)
    behaviours = ", ".join(f"{name}=backdoor" for name in planters) if planted else ""
    config = RunConfig.load(ROOT / "configs" / "demo.toml", overrides=[
        f"run.seed={seed}", "run.rounds=8", "simulation.engine='local'", f"data.alpha={alpha}",
        f"integrity.behaviours=\"{behaviours}\""])
    scores: dict[int, dict[str, float]] = {}
    lone: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run_federation(config, run_dir=run_dir, progress=False)
        for server_round in completed_rounds(run_dir):
            with open(run_dir / CHECKPOINT_DIR / f"state-{server_round:04d}.pkl", "rb") as fh:
                growth = pickle.load(fh)["checks"]["growth"]
            scores[server_round] = {name: float(v) for name, v in growth.scores(floor=-np.inf).items()}
            lone[server_round] = {name: float(units.max()) for name, units in growth.unit_scores().items()}
    return {"alpha": alpha, "seed": seed, "planted": planted, "planters": list(planters) if planted else [],
            "threshold": config.integrity.backdoor_threshold, "scores": scores, "lone": lone}


def _highest(best: dict[str, Any], key: str, run: dict[str, Any], table: str, mine: set[str]) -> None:
    """Keeps in ``best[key]`` the highest of ``run[table]``'s scores of an institution not in ``mine``."""
    for server_round, by_name in run[table].items():
        for name, score in by_name.items():
            if name not in mine and score > best.get(key, {}).get("score", -1.0):
                best[key] = {"score": score, "seed": run["seed"], "institution": name, "round": server_round,
                             "beside_planters": run["planted"]}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per α: the highest score of an institution planting nothing, paired and alone, with where; the planters
    caught; and the range of the planters' best units alone from round 3 (the check's first full reading) on."""
    honest: dict[str, Any] = {}
    honest_lone: dict[str, Any] = {}
    planters: dict[str, Any] = {}
    planters_lone: dict[str, Any] = {}
    for run in runs:
        key = str(run["alpha"])
        mine = set(run["planters"])
        _highest(honest, key, run, "scores", mine)
        _highest(honest_lone, key, run, "lone", mine)
        if not run["planted"]:
            continue
        entry = planters.setdefault(key, {"flagged": 0, "planters": 0, "first_rounds": [], "cases": []})
        last = max(run["scores"])
        for name in run["planters"]:
            over = [r for r, by_name in run["scores"].items() if by_name.get(name, 0.0) > run["threshold"]]
            first = min(over) if over else None
            entry["planters"] += 1
            entry["flagged"] += first is not None
            entry["first_rounds"].append(first)
            entry["cases"].append({"seed": run["seed"], "institution": name, "first_flagged_round": first,
                                   "score_when_first_flagged": None if first is None else run["scores"][first][name],
                                   "final_score": run["scores"][last].get(name, 0.0)})
            alone = [by_name[name] for r, by_name in run["lone"].items() if int(r) >= 3 and name in by_name]
            if alone:
                span = planters_lone.setdefault(key, {"lowest": min(alone), "highest": max(alone)})
                span["lowest"], span["highest"] = min(span["lowest"], *alone), max(span["highest"], *alone)
    return {"honest_max": honest, "honest_lone_max": honest_lone, "planters_caught": planters,
            "planters_lone": planters_lone}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=whole(0), nargs="+", default=[57, 58, 59, 60, 61, 62])
    parser.add_argument("--alphas", type=positive, nargs="+", default=[0.05, 0.1, 0.5])
    parser.add_argument("--planted-alphas", type=positive, nargs="*", default=[0.5])
    parser.add_argument("--planters", nargs="+", default=PLANTERS, metavar="INSTITUTION")
    parser.add_argument("--results", default="backdoor_check", metavar="NAME",
                        help="write benchmarks/results/NAME.json (the default's file keeps its seeds)")
    parser.add_argument("--workers", type=whole(1), default=max(1, min(2, os.cpu_count() or 1)))
    args = parser.parse_args()
    planters = tuple(args.planters)
    jobs = [(alpha, seed, False, planters) for alpha in args.alphas for seed in args.seeds]
    jobs += [(alpha, seed, True, planters) for alpha in args.planted_alphas for seed in args.seeds]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = list(pool.map(run_once, jobs))
    found = summarise(runs)
    print(f"seeds {args.seeds}, 8 rounds, threshold {runs[0]['threshold']:g}, planting: {', '.join(planters)}; "
          f"{len(jobs)} runs in {time.perf_counter() - started:.0f} s")
    print_table(["alpha", "highest score planting nothing", "seed", "institution", "round", "beside planters",
                 "highest unit alone", "seed", "institution", "round"],
                [[a, h["score"], h["seed"], h["institution"], h["round"], h["beside_planters"],
                  found["honest_lone_max"][a]["score"], found["honest_lone_max"][a]["seed"],
                  found["honest_lone_max"][a]["institution"], found["honest_lone_max"][a]["round"]]
                 for a, h in sorted(found["honest_max"].items())])
    print_table(["alpha", "planters flagged", "of", "first rounds (None: never)", "best unit alone, rounds 3+"],
                [[a, p["flagged"], p["planters"], sorted(p["first_rounds"], key=lambda r: 99 if r is None else r),
                  f"{found['planters_lone'][a]['lowest']:.2f}-{found['planters_lone'][a]['highest']:.2f}"
                  if a in found["planters_lone"] else ""]
                 for a, p in sorted(found["planters_caught"].items())])
    path = write_results(args.results, {"seeds": args.seeds, "alphas": args.alphas,
                                        "planted_alphas": args.planted_alphas, "planters": list(planters),
                                        **found, "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
