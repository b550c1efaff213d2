"""Gas of the license: acquiring a license, paying a fee, withdrawing a fee share and sweeping a closed epoch, at
several federation sizes.

A fee is one addition whatever the number of contributors (the first fee of a new claimable root also closes the
previous epoch); a withdrawal verifies one Merkle proof, so it grows with log2(contributors). Runs on
eth-tester (py-evm); gas is deterministic, so one run is the figure. Prints a
table and writes benchmarks/results/gas_license.json.

    .venv/bin/python benchmarks/gas_license.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from common import measure_and_write  # noqa: I001 - puts the project root on sys.path
from eth_account import Account
from eth_utils import keccak

from fedlearn import chain
from fedlearn.chain import governance as gov
from fedlearn.chain import license as lic
from fedlearn.chain.build import EVM_VERSION, OPTIMIZER_RUNS, pinned_solc_version
from fedlearn.chain.deployment import token_contract
from fedlearn.chain.license import UNIT
from fedlearn.chain.transactions import send_eth, transact

SIZES = (10, 100, 1_000)
RESULTS = Path(__file__).resolve().parent / "results" / "gas_license.json"


def _accounts(prefix: str, n: int) -> list[Account]:
    return [Account.from_key(keccak(f"{prefix}/{i}".encode())) for i in range(n)]


def measure() -> dict[str, Any]:
    admin = chain.connect(chain.ETH_TESTER)
    # Roots claimable at once and no per-round cap binding: the license's gas is what is measured here.
    deployment = chain.deploy(admin, root_delay=0, reward_per_round=10**27, token_cap=10**15 * UNIT)
    ld = gov.deploy_governed_license(admin, deployment)
    contributors = [a.address for a in _accounts("gas/contributor", max(SIZES))]
    companies = [admin.as_account(a) for a in _accounts("gas/company", 2)]
    for company in companies:
        send_eth(admin, company.address, 10**18)  # gas money
    chain.fund(admin, deployment, 10**12 * UNIT)
    token = token_contract(admin, deployment)

    acquire: dict[str, int] = {}
    company = companies[0]
    lic.attest_revenue(admin, ld, company.address, 5_000_000 * UNIT)
    chain.mint(admin, deployment, company.address, 10_000 * UNIT)
    transact(company, token.functions.approve(ld.license, 2**256 - 1), "approve")
    acquire["first acquire (4,000 tokens locked for 365 days)"] = lic.acquire(company, ld).tx.gas_used
    lic.attest_revenue(admin, ld, company.address, 6_000_000 * UNIT)
    acquire["top-up after a higher revenue (1,000 more)"] = lic.acquire(company, ld).tx.gas_used
    acquire["attestRevenue (attester)"] = lic.attest_revenue(admin, ld, companies[1].address, 2 * 10**6 * UNIT).gas_used

    payer = companies[1]
    chain.mint(admin, deployment, payer.address, 10**9 * UNIT)
    transact(payer, token.functions.approve(ld.license, 2**256 - 1), "approve")
    fee: dict[str, dict[str, int]] = {}
    withdraw: dict[str, dict[str, int]] = {}
    for round_, n in enumerate(SIZES, start=1):
        cumulative = {a: round_ * (i + 1) * UNIT for i, a in enumerate(contributors[:n])}
        settled = chain.settle_round(admin, deployment, round_, keccak(f"model {round_}".encode()), cumulative)
        first = lic.pay_fee(payer, ld, 1_000 * UNIT).tx.gas_used
        later = lic.pay_fee(payer, ld, 1_000 * UNIT).tx.gas_used
        fee[str(n)] = {"first fee of a new round (starts its epoch)": first, "later fee, same round": later}
        new_holder = lic.withdraw_fee_share(admin, ld, round_, settled.tree, contributors[n - 1]).tx.gas_used
        chain.mint(admin, deployment, contributors[n - 2], 1)
        holder = lic.withdraw_fee_share(admin, ld, round_, settled.tree, contributors[n - 2]).tx.gas_used
        withdraw[str(n)] = {"account holding no tokens": new_holder, "account already holding tokens": holder}
    # Round 3's epoch is open; a fourth root closes it, and after the claim period anyone sweeps what is left.
    chain.settle_round(admin, deployment, len(SIZES) + 1, keccak(b"model last"), {contributors[0]: 10**9 * UNIT})
    lic.pay_fee(payer, ld, 1)
    chain.advance_time(admin, lic.parameters(admin, ld).fee_claim_period + 1)
    sweep = {"sweepDust (closed epoch, after the claim period)": lic.sweep_dust(admin, ld, len(SIZES)).tx.gas_used}
    return {
        "backend": "eth-tester (py-evm)",
        "solc": pinned_solc_version(),
        "evm_version": EVM_VERSION,
        "optimizer_runs": OPTIMIZER_RUNS,
        "acquire_gas": acquire,
        "pay_fee_gas": fee,
        "withdraw_fee_share_gas": withdraw,
        "sweep_gas": sweep,
    }


def table(r: dict[str, Any]) -> str:
    lines = [f"{k:<52} {v:>8,}" for k, v in {**r["acquire_gas"], **r["sweep_gas"]}.items()]
    lines.append("")
    lines.append(
        f"{'contributors':>12}  {'payFee first':>12}  {'payFee later':>12}  {'withdraw new':>12}"
        f"  {'withdraw holder':>15}"
    )
    for n in SIZES:
        f, w = r["pay_fee_gas"][str(n)], r["withdraw_fee_share_gas"][str(n)]
        fv, wv = list(f.values()), list(w.values())
        lines.append(f"{n:>12,}  {fv[0]:>12,}  {fv[1]:>12,}  {wv[0]:>12,}  {wv[1]:>15,}")
    return "\n".join(lines)


def main() -> int:
    return measure_and_write(__doc__, RESULTS, measure, table)


if __name__ == "__main__":
    sys.exit(main())
