"""Honest institutions at scale: does the free-rider check, or slashing, touch them?

n honest institutions (10, 30 and 100 by default) on the scale benchmark's generated data
(``benchmarks/scale.py``), 8 rounds, the default configuration (10-token stakes, slashing on)
on the embedded chain. Everyone is honest, so every update set aside, every update left out and every slash is a
false positive. Reported per round: updates set aside (as free riders, or as planting a backdoor: the latter also
counted apart) and left out as harmful; then the institutions slashed and the final accuracy.

    .venv/bin/python benchmarks/slashing_at_scale.py [--institutions 10 30 100] [--rounds 8]

Writes benchmarks/results/slashing_at_scale.json (``runs``, one per federation size).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from common import whole, write_results  # noqa: I001 - puts the project root on sys.path
from scale import make_data, one_run

STAKE = 10.0  # the default integrity.min_stake, named: the benchmark's figures are about this stake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--institutions", type=whole(2), nargs="+", default=[10, 30, 100])
    parser.add_argument("--rounds", type=whole(1), default=8)
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp) / "data.npz")
        for n in args.institutions:
            started = time.perf_counter()
            run = one_run(n, data, "incentivized", args.rounds, Path(tmp) / f"runs-{n}",
                          extra=[f"integrity.min_stake={STAKE}"])
            print(f"{n} honest institutions, {args.rounds} rounds, stakes of {STAKE:g}:")
            print(f"  set aside per round                {run['set_aside_per_round']}")
            print(f"  ... of them as planting a backdoor {run['backdoor_set_aside_per_round']}")
            print(f"  left out as harmful per round      {run['excluded_per_round']}")
            print(f"  slashed {len(run['slashed'])}; final test accuracy {run['final_test_accuracy']:.4f}; "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            runs.append({"institutions": n, "set_aside_per_round": run["set_aside_per_round"],
                         "backdoor_set_aside_per_round": run["backdoor_set_aside_per_round"],
                         "excluded_per_round": run["excluded_per_round"], "honest_slashed": len(run["slashed"]),
                         "slashed": run["slashed"], "final_test_accuracy": run["final_test_accuracy"]})
    write_results("slashing_at_scale", {"rounds": args.rounds, "stake": STAKE, "runs": runs,
                                        "honest_slashed": sum(r["honest_slashed"] for r in runs)})


if __name__ == "__main__":
    main()
