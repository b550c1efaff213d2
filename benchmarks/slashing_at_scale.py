"""Honest institutions at scale: does the free-rider check, or slashing, touch them?

n honest institutions (default 100) on the scale benchmark's generated data (``benchmarks/scale.py``), 8 rounds,
the default configuration with the demo's stakes (10 tokens each, slashing on) on the embedded chain. Everyone is
honest, so every update set aside, every update left out and every slash is a false positive. Reported per round:
updates set aside as free riders and left out as harmful; then the institutions slashed and the final accuracy.

    .venv/bin/python benchmarks/slashing_at_scale.py [--institutions 100] [--rounds 8]

Writes benchmarks/results/slashing_at_scale.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from common import write_results  # noqa: I001 - puts the project root on sys.path
from scale import make_data, settings

from fedlearn.config import RunConfig
from fedlearn.federation.simulation import run_federation
from fedlearn.payout.ledger import Ledger

STAKE = 10.0  # configs/demo.toml's integrity.min_stake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--institutions", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp) / "data.npz")
        overrides = settings(args.institutions, data, "incentivized", args.rounds, Path(tmp) / "runs")
        config = RunConfig.load(overrides=[*overrides, f"integrity.min_stake={STAKE}"])
        summary = run_federation(config, quiet=True, progress=False)
        run_dir = Path(summary["run_dir"])
        scored = [r.get("scores") or {} for r in json.loads((run_dir / "rounds.json").read_text())[1:]]
        ledger = Ledger.open(run_dir / "ledger.sqlite")
        slashed = sorted({name for _, name, _, _ in ledger.slashes()})
        ledger.close()
    set_aside = [sum("training signal" in why for why in s.get("rejected", {}).values()) for s in scored]
    left_out = [len(s.get("excluded", {})) for s in scored]
    print(f"{args.institutions} honest institutions, {args.rounds} rounds, stakes of {STAKE:g}:")
    print(f"  set aside as free riders per round {set_aside}")
    print(f"  left out as harmful per round      {left_out}")
    print(f"  slashed {len(slashed)}; final test accuracy {summary['final_test_accuracy']:.4f}; "
          f"{time.perf_counter() - started:.0f} s")
    write_results("slashing_at_scale", {
        "institutions": args.institutions, "rounds": args.rounds, "stake": STAKE,
        "set_aside_per_round": set_aside, "excluded_per_round": left_out,
        "honest_slashed": len(slashed), "slashed": slashed,
        "final_test_accuracy": summary["final_test_accuracy"],
    })


if __name__ == "__main__":
    main()
