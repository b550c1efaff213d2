"""``fedlearn verify``: recompute every round's payout and model hash, and compare with what the chain holds.

Checks, per round: the cumulative amounts the payout rule (``fedlearn.payout.schedule``) gives from the journaled
scores and gains; that released + carried + returned is the budget; the root from the cumulative amounts; the
model hash from the round's saved weights; and the chain's record of the round (model hash, root, round total).
Then: the unspent budget returned on chain is what the ledger says, and every slash the ledger records is on chain,
against the same account and amount, on the evidence recomputed from the run's rounds (the round and the offending
update's hash), while every slash on chain resting on this run's evidence is in the ledger. The gains themselves
are the coordinator's measurement on its validation split, read from the ledger. Any mismatch is reported; none may
pass silently.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fedlearn.chain import RewardTree
from fedlearn.chain.deployment import distributor_contract
from fedlearn.errors import ChainError
from fedlearn.payout.ledger import RoundEntry
from fedlearn.payout.schedule import allocate
from fedlearn.payout.settlement import RunChain, measure_of
from fedlearn.records import checkpoint
from fedlearn.records.fingerprint import model_hash
from fedlearn.records.rundir import MODEL_FILE, ROUNDS_FILE, SUMMARY_FILE, RunDirError, saved_rounds

_HOW_TO_REVOKE = ("revoke it: `fedlearn chain challenge --account ADDRESS --accepted-tree FILE --pending-tree FILE` "
                  "with an account whose amount it lowers, or a guardian's `fedlearn chain revoke`")


def _check_later_root(pm: Any, round_: int, root: bytes, ready_at: int, latest: dict[str, int]) -> list[str]:
    """A pending root settled after this run's rounds: it must keep every amount this run's last root gave."""
    try:
        pending = pm.link.load_tree(root)
    except ChainError:
        return [f"chain round {round_}'s pending root 0x{root.hex()} has no tree file in {pm.link.trees_dir}: "
                f"nothing shows it keeps this run's amounts; before {ready_at} (unix time) ask a guardian to "
                "revoke it (`fedlearn chain revoke`) unless its tree is published"]
    problems = []
    claimable = bytes(distributor_contract(pm.link.session, pm.link.deployment).functions.rewardsRoot().call())
    for address, amount in sorted(latest.items()):
        now = pending.amount_of(address)
        if now is None or now < amount:
            problems.append(
                f"chain round {round_}'s pending root lowers {address} from {amount} to {now or 0}: before "
                f"{ready_at} (unix time) revoke it: `fedlearn chain challenge --account {address} --accepted-tree "
                f"{pm.link.trees_dir}/0x{claimable.hex()}.json --pending-tree {pm.link.trees_dir}/0x{root.hex()}.json`"
                + ("" if now is not None else " cannot prove a dropped leaf: a guardian's `fedlearn chain revoke`"))
    return problems


def _check_history(pm: Any, dist: Any, settled: dict[int, Any], offset: int, opening: dict[str, int],
                   ours: dict[int, str], latest: dict[str, int] | None) -> list[str]:
    """The run's place in the deployment's history: it opens on a live root of an earlier run, no other run
    settled among its rounds, and a pending root that the ledger does not explain is flagged with what to do."""
    problems: list[str] = []
    if offset:
        opened = RewardTree.of(opening).root
        live = [r for r, args in settled.items() if r <= offset and bytes(args["rewardsRoot"]) == opened
                and bytes(dist.functions.roundOf(r).call()) == opened]
        if not live:
            problems.append(f"the ledger opens on root 0x{opened.hex()}, which no live round up to the chain's "
                            f"round {offset} holds: its opening amounts do not match the chain's history")
    for chain_round, args in sorted(settled.items()):
        held = "0x" + bytes(args["rewardsRoot"]).hex()
        if offset < chain_round <= max(ours, default=offset) and ours.get(chain_round) != held:
            problems.append(f"chain round {chain_round} holds root {held}, which this run's ledger does not: "
                            "another run settled among this run's rounds")
    pending_round, pending, _, ready_at = dist.functions.pendingRoot().call()
    pending_round, pending = int(pending_round), bytes(pending)
    if pending_round and pending_round in ours and ours[pending_round] != "0x" + pending.hex():
        problems.append(f"chain round {pending_round}'s pending root 0x{pending.hex()} is not the ledger's "
                        f"{ours[pending_round]}: before {ready_at} (unix time) {_HOW_TO_REVOKE}")
    elif pending_round and pending_round > max(ours, default=offset) and latest is not None:
        problems += _check_later_root(pm, pending_round, pending, ready_at, latest)
    return problems


def _check_slashes(pm: Any, dist: Any, run_dir: Path) -> list[str]:
    """The ledger's slashes against the chain's proposals, both ways (see the module's docstring)."""
    evidence = pm.run_evidence(run_dir)
    on_chain = {(e["args"]["account"], "0x" + bytes(e["args"]["evidenceHash"]).hex()): e["args"]
                for e in dist.events.SlashProposed().get_logs(from_block=pm.link.deployment.block)}
    problems: list[str] = []
    for r, name, amount, recorded in pm.ledger.slashes():
        address = pm.addresses.get(name)
        if evidence.get((recorded, name)) != (r, name):
            problems.append(f"round {r}: the slash of {name} rests on evidence {recorded}, not the hash of round {r} "
                            f"and {name}'s update there")
        proposal = on_chain.get((address, recorded))
        if proposal is None:
            problems.append(f"round {r}: the ledger slashes {name} {amount} wei, no slash on chain against {address} "
                            f"with evidence {recorded}")
        elif int(proposal["amount"]) != amount:
            problems.append(f"round {r}: the ledger slashes {name} {amount} wei, slash {int(proposal['id'])} on "
                            f"chain {int(proposal['amount'])} wei")
    for f in pm.unrecorded_slashes(evidence):
        problems.append(f"round {f.round}: slash {f.slash_id} on chain takes {f.amount} wei of {f.institution}'s "
                        f"stake on this run's evidence, and the ledger does not record it (`fedlearn settle "
                        f"{run_dir}` records it)")
    return problems


def _check_measured(run_dir: Path, rounds: list[RoundEntry]) -> list[str]:
    """What each journaled round paid on, against what the run recorded it measured (rounds.json): the scores
    and the round's gain. Slash evidence is rebuilt from rounds.json, so an edit there is a finding too."""
    try:
        measured = {r.get("server_round"): r.get("scores") or {} for r in saved_rounds(run_dir)}
    except RunDirError as exc:
        return [str(exc)]
    problems: list[str] = []
    for record in rounds:
        m = measured.get(record.round)
        if m is None:
            problems.append(f"round {record.round}: {ROUNDS_FILE} does not record what it measured")
            continue
        scores = m.get("scores") or {}
        for e in record.entries:
            if not _same(scores.get(e.institution, 0.0), e.score):  # absent from the round: it scored 0
                problems.append(f"round {record.round}: {e.institution} scored {e.score} in the ledger, "
                                f"{scores.get(e.institution)} in {ROUNDS_FILE}")
        for key, value in (("gain", record.gain), ("gain_low", record.gain_low), ("gain_high", record.gain_high)):
            if key in m and not _same(m[key], value):
                problems.append(f"round {record.round}: {key} {value} in the ledger, {m[key]} in {ROUNDS_FILE}")
        if "significant" in m and bool(m["significant"]) != record.significant:
            problems.append(f"round {record.round}: significant {record.significant} in the ledger, "
                            f"{m['significant']} in {ROUNDS_FILE}")
    return problems


def _same(a: Any, b: float) -> bool:
    return isinstance(a, (int, float)) and not isinstance(a, bool) and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def verify_run(run_dir: Path) -> tuple[list[str], int]:
    """(mismatches, rounds checked)."""
    run = RunChain.open(run_dir)
    pm = run.paymaster
    problems: list[str] = []
    rounds = pm.ledger.rounds()
    if not rounds:
        return ["the ledger holds no round"], 0
    dist = distributor_contract(pm.link.session, pm.link.deployment)
    settled = {int(e["args"]["round"]): e["args"]
               for e in dist.events.RoundSettled().get_logs(from_block=pm.link.deployment.block)}
    offset, opening = pm.opening()
    # The rate the schedule was planned at (absent from ledgers journaled before the rate limit: no cap then).
    journaled_rate = pm.ledger.meta().get("reward_per_round")
    per_round = int(journaled_rate) if journaled_rate is not None else None
    settled_here = [r for r in rounds if r.status == "settled"]
    problems += _check_history(pm, dist, settled, offset, opening, {offset + r.round: r.root for r in rounds},
                               pm.leaves(settled_here[-1]) if settled_here else None)
    problems += _check_measured(Path(run_dir), rounds)
    previous: RoundEntry | None = None
    measures = [measure_of(record) for record in rounds]
    for index, record in enumerate(rounds):
        r = record.round
        if previous is not None and r != previous.round + 1:
            problems.append(f"round {r}: follows round {previous.round} (a round is missing)")
        # Payout: the rule applied to the journaled history gives every cumulative amount.
        before: dict[str, int] = {e.institution: e.cumulative for e in previous.entries} if previous else {}
        plan = allocate(measures[:index + 1], {e.institution: before.get(e.institution, 0) for e in record.entries},
                        record.budget, pm.interim_fraction, pm.best_utility, record.final, per_round,
                        weighting=pm.round_weight)
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
        root = "0x" + RewardTree.of(pm.leaves(record)).root.hex()
        if root != record.root:
            problems.append(f"round {r}: ledger root {record.root}, recomputed {root}")
        # Model: the round's saved weights.
        weights = checkpoint.model_path(Path(run_dir), r)
        if not weights.exists():
            problems.append(f"round {r}: no saved weights at {weights}")
        elif model_hash(checkpoint.read_model(weights)) != record.model_hash:
            problems.append(f"round {r}: model hash {record.model_hash} in the ledger, "
                            f"{model_hash(checkpoint.read_model(weights))} from {weights.name}")
        # Chain: what the distributor recorded for the round (the chain's round offset + r).
        event = settled.get(offset + r)
        on_root = "0x" + bytes(dist.functions.roundOf(offset + r).call()).hex()
        if event is None:
            problems.append(f"round {r}: not settled on chain as round {offset + r} (ledger status {record.status})")
        else:
            if "0x" + bytes(event["rewardsRoot"]).hex() != record.root:
                problems.append(f"round {r}: chain root 0x{bytes(event['rewardsRoot']).hex()}, ledger {record.root}")
            elif on_root != record.root:
                problems.append(f"round {r}: its root was revoked on chain (chain round {offset + r})")
            if "0x" + bytes(event["modelHash"]).hex() != record.model_hash:
                problems.append(f"round {r}: chain model hash 0x{bytes(event['modelHash']).hex()}, "
                                f"ledger {record.model_hash}")
            if int(event["roundTotal"]) != record.round_total:
                problems.append(f"round {r}: chain paid {int(event['roundTotal'])} wei, ledger {record.round_total}")
        previous = record
    # Returns: every unspent budget the ledger says went back to the funder did, on chain, in the transaction it
    # names (other runs and the admin defund the same deployment too: theirs are not this run's).
    defunded = {"0x" + bytes(e["transactionHash"]).hex().removeprefix("0x"): e["args"]
                for e in dist.events.Defunded().get_logs(from_block=pm.link.deployment.block)}
    for r, address, amount, tx_hash in pm.ledger.returns():
        event = defunded.get(tx_hash or "")
        if event is None or (int(event["amount"]), event["to"]) != (amount, address):
            chain_says = "nothing" if event is None else f"{int(event['amount'])} wei to {event['to']}"
            problems.append(f"round {r}: the ledger returns {amount} wei to {address} in transaction {tx_hash}, "
                            f"the chain {chain_says}")
    problems += _check_slashes(pm, dist, Path(run_dir))
    final = Path(run_dir) / MODEL_FILE
    if final.exists() and model_hash(checkpoint.read_model(final)) != rounds[-1].model_hash:
        problems.append(f"{MODEL_FILE}: its hash is not round {rounds[-1].round}'s model hash")
    elif not final.exists() and (Path(run_dir) / SUMMARY_FILE).exists():
        problems.append(f"{MODEL_FILE}: the run finished (it has a summary) but its final model is missing")
    return problems, len(rounds)
