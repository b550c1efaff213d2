"""The distributor's stateful fuzz with a hostile coordinator, at a budget CI cannot afford.

Runs the state machine of ``tests/chain/test_fuzz.py`` (honest and hostile settlements, challenges, revocations,
claims, stakes, slash proposals, executions and vetoes, pauses and role changes, checked against a model after
every step) for ``--examples`` × ``--steps`` and writes benchmarks/results/fuzz.json (`examples`, `steps`,
`failures`, `seconds`, and the falsifying example's message when one fails).

    .venv/bin/python benchmarks/fuzz.py                 # 300 examples x 50 steps
    .venv/bin/python benchmarks/fuzz.py --examples 20   # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "fuzz.json"
sys.path.insert(0, str(ROOT))

from tests.chain.test_fuzz import DistributorMachine  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    if args.examples < 1 or args.steps < 1:
        parser.error("--examples and --steps must be at least 1")
    budget = settings(max_examples=args.examples, stateful_step_count=args.steps, deadline=None,
                      suppress_health_check=list(HealthCheck))
    start = time.perf_counter()
    failure = None
    try:
        run_state_machine_as_test(DistributorMachine, settings=budget)
    except Exception as exc:  # noqa: BLE001 - any failure of the machine is the figure, recorded with its message
        failure = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    result = {"examples": args.examples, "steps": args.steps, "failures": int(failure is not None),
              "seconds": round(seconds, 1), "failure": failure}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"fuzz: {args.examples} examples x up to {args.steps} steps, {result['failures']} failure(s), "
          f"{seconds:.0f} s")
    if failure:
        print(failure)
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
