"""``fedlearn verify``: recompute every round's payout and model hash, and compare with what the chain holds.

Checks, per round: the cumulative amounts the payout rule (``fedlearn.payout.schedule``) gives from the journaled
scores and gains; that released + carried + returned is the budget; the root from the cumulative amounts; the
model hash from the round's saved weights; and the chain's record of the round (model hash, root, round total).
Then: the unspent budget returned on chain is what the ledger says. The gains themselves are the coordinator's
measurement on its validation split, read from the ledger. Any mismatch is reported; none may pass silently.
"""

from __future__ import annotations

from pathlib import Path

from fedlearn.chain import RewardTree
from fedlearn.chain.deployment import distributor_contract
from fedlearn.payout.ledger import RoundEntry
from fedlearn.payout.schedule import allocate
from fedlearn.payout.settlement import RunChain, measure_of
from fedlearn.records import checkpoint
from fedlearn.records.fingerprint import model_hash
from fedlearn.records.rundir import MODEL_FILE


def verify_run(run_dir: Path) -> tuple[list[str], int]:
    """(mismatches, rounds checked)."""
    run = RunChain.open(run_dir)
    pm = run.paymaster
    problems: list[str] = []
    rounds = pm.ledger.rounds()
    if not rounds:
        return ["the ledger holds no round"], 0
    dist = distributor_contract(pm.link.session, pm.link.deployment)
    totals = {int(e["args"]["round"]): int(e["args"]["roundTotal"])
              for e in dist.events.RoundSettled().get_logs(from_block=pm.link.deployment.block)}
    previous: RoundEntry | None = None
    measures = [measure_of(record) for record in rounds]
    for index, record in enumerate(rounds):
        r = record.round
        if previous is not None and r != previous.round + 1:
            problems.append(f"round {r}: follows round {previous.round} (a round is missing)")
        # Payout: the rule applied to the journaled history gives every cumulative amount.
        before: dict[str, int] = {e.institution: e.cumulative for e in previous.entries} if previous else {}
        plan = allocate(measures[:index + 1], {e.institution: before.get(e.institution, 0) for e in record.entries},
                        record.budget, pm.interim_fraction, pm.best_utility, record.final)
        for e in record.entries:
            if e.cumulative != plan.cumulative.get(e.institution):
                problems.append(f"round {r}: {e.institution} cumulative {e.cumulative} wei, the payout rule gives "
                                f"{plan.cumulative.get(e.institution)}")
            if e.reward != e.cumulative - before.get(e.institution, 0):
                problems.append(f"round {r}: {e.institution} rewarded {e.reward} wei, not its cumulative "
                                f"{e.cumulative} less the previous {before.get(e.institution, 0)}")
            if pm.addresses.get(e.institution) != e.address:
                problems.append(f"round {r}: {e.institution} paid to {e.address}, configured "
                                f"{pm.addresses.get(e.institution)}")
        if (record.released, record.carried, record.returned) != (plan.released, plan.carried, plan.returned):
            problems.append(f"round {r}: released / carried / returned {record.released} / {record.carried} / "
                            f"{record.returned} wei, the payout rule gives {plan.released} / {plan.carried} / "
                            f"{plan.returned}")
        if record.released + record.carried + record.returned != record.budget:
            problems.append(f"round {r}: released + carried + returned is not the budget {record.budget} wei")
        if record.round_total != sum(e.reward for e in record.entries):
            problems.append(f"round {r}: round total {record.round_total} is not the sum of its rewards")
        root = "0x" + RewardTree.of({e.address: e.cumulative for e in record.entries}).root.hex()
        if root != record.root:
            problems.append(f"round {r}: ledger root {record.root}, recomputed {root}")
        # Model: the round's saved weights.
        weights = checkpoint.model_path(Path(run_dir), r)
        if not weights.exists():
            problems.append(f"round {r}: no saved weights at {weights}")
        elif model_hash(checkpoint.read_model(weights)) != record.model_hash:
            problems.append(f"round {r}: model hash {record.model_hash} in the ledger, "
                            f"{model_hash(checkpoint.read_model(weights))} from {weights.name}")
        # Chain: what the distributor recorded for the round.
        on_hash, on_root = dist.functions.roundOf(r).call()
        on_hash, on_root = "0x" + bytes(on_hash).hex(), "0x" + bytes(on_root).hex()
        if on_root == "0x" + "00" * 32:
            problems.append(f"round {r}: not settled on chain (ledger status {record.status})")
        else:
            if on_root != record.root:
                problems.append(f"round {r}: chain root {on_root}, ledger {record.root}")
            if on_hash != record.model_hash:
                problems.append(f"round {r}: chain model hash {on_hash}, ledger {record.model_hash}")
            if totals.get(r) != record.round_total:
                problems.append(f"round {r}: chain paid {totals.get(r)} wei, ledger {record.round_total}")
        previous = record
    # Returns: every unspent budget the ledger says went back to the funder did, on chain.
    returned = sorted((int(e["args"]["amount"]), e["args"]["to"])
                      for e in dist.events.Defunded().get_logs(from_block=pm.link.deployment.block))
    journaled = sorted((amount, address) for _, address, amount, _ in pm.ledger.returns())
    if returned != journaled:
        problems.append(f"returns to the funder: chain {returned}, ledger {journaled}")
    final = Path(run_dir) / MODEL_FILE
    if final.exists() and model_hash(checkpoint.read_model(final)) != rounds[-1].model_hash:
        problems.append(f"{MODEL_FILE}: its hash is not round {rounds[-1].round}'s model hash")
    return problems, len(rounds)
