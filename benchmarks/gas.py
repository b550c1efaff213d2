"""Gas of settling a round and claiming, against the naive payout of one ERC-20 transfer per contributor.

Runs on eth-tester (py-evm, the chain's default backend); gas is deterministic, so one run is the figure.
Prints a table and writes benchmarks/results/gas.json.

    .venv/bin/python benchmarks/gas.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from common import measure_and_write  # noqa: I001 - puts the project root on sys.path
from eth_account import Account
from eth_utils import keccak

from fedlearn import chain
from fedlearn.chain.build import EVM_VERSION, OPTIMIZER_RUNS, pinned_solc_version
from fedlearn.chain.deployment import token_contract
from fedlearn.chain.transactions import transact

SIZES = (10, 100, 1_000)
UNIT = 10**18
DAY = 86_400
RESULTS = Path(__file__).resolve().parent / "results" / "gas.json"


def _addresses(prefix: str, n: int) -> list[str]:
    return [Account.from_key(keccak(f"{prefix}/{i}".encode())).address for i in range(n)]


def _cumulative(accounts: list[str], n: int, round_: int) -> dict[str, int]:
    # Everyone in the first n accounts earns round_ * (i + 1) tokens so far: amounts grow every round.
    return {a: round_ * (i + 1) * UNIT for i, a in enumerate(accounts[:n])}


def measure() -> dict[str, Any]:
    admin = chain.connect(chain.ETH_TESTER)
    # The real path: roots wait out a day's challenge window, slashes a day's veto window.
    deployment = chain.deploy(admin, reward_per_round=10**9 * UNIT, root_delay=DAY, slash_delay=DAY,
                              token_cap=10**15 * UNIT)
    contributors = _addresses("gas/contributor", max(SIZES))
    chain.fund(admin, deployment, 10**12 * UNIT)

    settle: dict[str, int] = {}
    first = chain.settle_round(admin, deployment, 1, keccak(b"model 1"), _cumulative(contributors, 10, 1))
    settle["first round ever (10 contributors)"] = first.tx.gas_used
    chain.advance_time(admin, DAY + 1)
    claim: dict[str, int] = {}
    # Contributor 1 claims after round 1 (its claim accepts the root) and again after three more rounds.
    claim["first claim, 10-leaf tree, account holding no tokens, accepting the root"] = chain.claim_from_tree(
        admin, deployment, first.tree, contributors[1]
    ).tx.gas_used
    tree = first.tree
    for round_, n in enumerate(SIZES, start=2):
        # Each settles while the previous root waits out its window, and replaces it.
        result = chain.settle_round(admin, deployment, round_, keccak(f"model {round_}".encode()),
                                    _cumulative(contributors, n, round_))
        settle[str(n)] = result.tx.gas_used
        tree = result.tree
    chain.advance_time(admin, DAY + 1)
    accepted = tree
    result = chain.settle_round(admin, deployment, 5, keccak(b"model 5"), _cumulative(contributors, 1_000, 5))
    settle["1,000 contributors, accepting the previous root in the same transaction"] = result.tx.gas_used
    claim["later claim covering 3 rounds, 1,000-leaf tree"] = chain.claim_from_tree(
        admin, deployment, accepted, contributors[1]
    ).tx.gas_used
    claim["first claim, 1,000-leaf tree, account holding no tokens"] = chain.claim_from_tree(
        admin, deployment, accepted, contributors[2]
    ).tx.gas_used
    chain.mint(admin, deployment, contributors[3], 1)
    claim["first claim, 1,000-leaf tree, account already holding tokens"] = chain.claim_from_tree(
        admin, deployment, accepted, contributors[3]
    ).tx.gas_used

    # The bounds on the coordinator: challenging a root that lowers a leaf (two proofs in a 1,000-leaf tree),
    # revoking one as the guardian, and a slash proposed, executed after its window, or vetoed.
    bounds: dict[str, int] = {}
    chain.revoke_pending_root(admin, deployment)  # round 5's root
    lowered = {**_cumulative(contributors, 1_000, 4), contributors[7]: 0, admin.address: 8 * 4 * UNIT}
    hostile = chain.settle_round(admin, deployment, 6, keccak(b"model 6"), lowered)
    bounds["challengeRoot (two proofs, 1,000-leaf trees)"] = chain.challenge_root(
        admin, deployment, contributors[7], accepted, hostile.tree).gas_used
    chain.settle_round(admin, deployment, 7, keccak(b"model 7"), _cumulative(contributors, 1_000, 7))
    bounds["revokePendingRoot (guardian or admin)"] = chain.revoke_pending_root(admin, deployment).gas_used
    staker = chain.funded_institution_accounts(admin, 1)[0]
    chain.mint(admin, deployment, staker.address, 10 * UNIT)
    chain.stake(admin.as_account(staker), deployment, 10 * UNIT)
    slash_id, proposed = chain.propose_slash(admin, deployment, staker.address, UNIT, keccak(b"evidence"))
    bounds["proposeSlash"] = proposed.gas_used
    vetoed, _ = chain.propose_slash(admin, deployment, staker.address, UNIT, keccak(b"evidence 2"))
    bounds["vetoSlash"] = chain.veto_slash(admin, deployment, vetoed).gas_used
    chain.advance_time(admin, DAY + 1)
    bounds["executeSlash"] = chain.execute_slash(admin, deployment, slash_id).gas_used

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
        "bounds_gas": bounds,
        "naive_transfers_gas": naive,
        "targets": {"settle_round_max": 100_000, "later_claim_max": 70_000, "first_claim_max": 100_000},
    }


def table(r: dict[str, Any]) -> str:
    lines = [f"{'contributors':>12}  {'settleRound':>11}  {'naive, new holders':>18}  {'naive, existing':>15}"]
    for n in SIZES:
        nv = r["naive_transfers_gas"][str(n)]
        lines.append(f"{n:>12,}  {r['settle_round_gas'][str(n)]:>11,}  {nv['first_round_new_holders']:>18,}"
                     f"  {nv['later_round_existing_holders']:>15,}")
    lines.append("")
    lines += [f"settleRound: {k:<70} {v:>7,}" for k, v in r["settle_round_gas"].items() if not k.isdigit()]
    lines += [f"claim: {k:<76} {v:>7,}" for k, v in r["claim_gas"].items()]
    lines += [f"{k:<83} {v:>7,}" for k, v in r["bounds_gas"].items()]
    return "\n".join(lines)


def main() -> int:
    return measure_and_write(__doc__, RESULTS, measure, table)


if __name__ == "__main__":
    sys.exit(main())
