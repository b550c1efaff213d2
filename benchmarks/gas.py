"""Gas of settling a round and claiming, against the naive payout of one ERC-20 transfer per contributor.

Runs on eth-tester (py-evm, the chain's default backend); gas is deterministic, so one run is the figure.
Prints a table and writes benchmarks/results/gas.json.

    .venv/bin/python benchmarks/gas.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils import keccak

from fedlearn import chain
from fedlearn.chain.build import EVM_VERSION, OPTIMIZER_RUNS, pinned_solc_version
from fedlearn.chain.deployment import token_contract
from fedlearn.chain.transactions import transact

SIZES = (10, 100, 1_000)
UNIT = 10**18
RESULTS = Path(__file__).resolve().parent / "results" / "gas.json"


def _addresses(prefix: str, n: int) -> list[str]:
    return [Account.from_key(keccak(f"{prefix}/{i}".encode())).address for i in range(n)]


def _cumulative(accounts: list[str], n: int, round_: int) -> dict[str, int]:
    # Everyone in the first n accounts earns round_ * (i + 1) tokens so far: amounts grow every round.
    return {a: round_ * (i + 1) * UNIT for i, a in enumerate(accounts[:n])}


def measure() -> dict[str, Any]:
    admin = chain.connect(chain.ETH_TESTER)
    deployment = chain.deploy(admin)
    contributors = _addresses("gas/contributor", max(SIZES))
    chain.fund(admin, deployment, 10**12 * UNIT)

    settle: dict[str, int] = {}
    first = chain.settle_round(admin, deployment, 1, keccak(b"model 1"), _cumulative(contributors, 10, 1))
    settle["first round ever (10 contributors)"] = first.tx.gas_used
    claim: dict[str, int] = {}
    # Contributor 1 claims after round 1 and again after three more rounds.
    claim["first claim, 10-leaf tree, account holding no tokens"] = chain.claim_from_tree(
        admin, deployment, first.tree, contributors[1]
    ).tx.gas_used
    tree = first.tree
    for round_, n in enumerate(SIZES, start=2):
        result = chain.settle_round(admin, deployment, round_, keccak(f"model {round_}".encode()),
                                    _cumulative(contributors, n, round_))
        settle[str(n)] = result.tx.gas_used
        tree = result.tree
    claim["later claim covering 3 rounds, 1,000-leaf tree"] = chain.claim_from_tree(
        admin, deployment, tree, contributors[1]
    ).tx.gas_used
    claim["first claim, 1,000-leaf tree, account holding no tokens"] = chain.claim_from_tree(
        admin, deployment, tree, contributors[2]
    ).tx.gas_used
    chain.mint(admin, deployment, contributors[3], 1)
    claim["first claim, 1,000-leaf tree, account already holding tokens"] = chain.claim_from_tree(
        admin, deployment, tree, contributors[3]
    ).tx.gas_used

    # The naive payout: one transfer per contributor per round, first to new holders, then to existing ones.
    token = token_contract(admin, deployment)
    chain.mint(admin, deployment, admin.address, 10**12 * UNIT)
    naive: dict[str, dict[str, int]] = {}
    for n in SIZES:
        recipients = _addresses(f"gas/naive-{n}", n)
        totals = []
        for _ in range(2):
            totals.append(
                sum(transact(admin, token.functions.transfer(r, UNIT), "transfer").gas_used for r in recipients)
            )
        naive[str(n)] = {"first_round_new_holders": totals[0], "later_round_existing_holders": totals[1]}
    return {
        "backend": "eth-tester (py-evm)",
        "solc": pinned_solc_version(),
        "evm_version": EVM_VERSION,
        "optimizer_runs": OPTIMIZER_RUNS,
        "settle_round_gas": settle,
        "claim_gas": claim,
        "naive_transfers_gas": naive,
        "targets": {"settle_round_max": 100_000, "claim_max": 85_000},
    }


def table(r: dict[str, Any]) -> str:
    lines = [f"{'contributors':>12}  {'settleRound':>11}  {'naive, new holders':>18}  {'naive, existing':>15}"]
    for n in SIZES:
        nv = r["naive_transfers_gas"][str(n)]
        lines.append(f"{n:>12,}  {r['settle_round_gas'][str(n)]:>11,}  {nv['first_round_new_holders']:>18,}"
                     f"  {nv['later_round_existing_holders']:>15,}")
    lines.append(f"settleRound, first round ever: {r['settle_round_gas']['first round ever (10 contributors)']:,}")
    lines.append("")
    lines += [f"claim: {k:<58} {v:>7,}" for k, v in r["claim_gas"].items()]
    return "\n".join(lines)


def main() -> int:
    results = measure()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
