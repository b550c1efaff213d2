"""What an institution checks on its own: a published payout tree against the chain, with no run directory, no
data and no key.

The coordinator publishes every round's tree (the @openzeppelin/merkle-tree dump) beside its deployment file.
An institution holding one checks: that the chain settled that root (which round; pending, claimable or revoked),
that the tree's leaves add up to the sum the coordinator committed with it, what the tree gives its own account
against what it already claimed, and, given the tree it checked before, that no account's cumulative amount
went down or disappeared. A pending root that lowers an amount gets the command that revokes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fedlearn.chain.addresses import address_of
from fedlearn.chain.deployment import Deployment, distributor_contract
from fedlearn.chain.merkle import RewardTree
from fedlearn.chain.session import ChainSession
from fedlearn.chain.transactions import call
from fedlearn.errors import ChainError


@dataclass
class TreeAudit:
    """The findings: `problems` is empty when the tree is what the chain holds and nothing went down."""

    round: int
    state: str  # "claimable", "pending", "superseded" (a later root is the claimable one) or "revoked"
    ready_at: int
    leaves_total: int
    account: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def audit_tree(session: ChainSession, deployment: Deployment, tree: RewardTree, *, account: str | None = None,
               previous: RewardTree | None = None, files: tuple[str, str] = ("THIS", "PREVIOUS")) -> TreeAudit:
    """``files``: how the commands a finding names call this tree and the previous one."""
    dist = distributor_contract(session, deployment)
    f = dist.functions
    settled = [e for e in dist.events.RoundSettled().get_logs(from_block=deployment.block)
               if bytes(e["args"]["rewardsRoot"]) == tree.root]
    if not settled:
        raise ChainError(f"the tree's root 0x{tree.root.hex()} was never settled on this deployment")
    args = settled[-1]["args"]
    round_ = int(args["round"])
    live = bytes(call(f.roundOf(round_), "reading round")) == tree.root
    claimable = bytes(call(f.rewardsRoot(), "reading root")) == tree.root
    pending_round = int(call(f.pendingRoot(), "reading the pending root")[0])
    if claimable:
        state = "claimable"
    elif not live:
        state = "revoked"
    else:  # settled and standing, but claims use another root: the one waiting, or a later one
        state = "pending" if pending_round == round_ else "superseded"
    audit = TreeAudit(round_, state, int(args["readyAt"]), int(args["leavesTotal"]))
    if tree.total != audit.leaves_total:
        audit.problems.append(f"the tree's leaves add up to {tree.total}, but the coordinator committed "
                              f"{audit.leaves_total} with round {round_}'s root")
    if state == "revoked":
        audit.problems.append(f"round {round_}'s root was revoked on chain: claims never use it")
    if account is not None:
        mine = address_of(account, "account")
        amount = tree.amount_of(mine)
        audit.account = {"address": mine, "cumulative": amount or 0,
                         "claimed": int(call(f.claimed(mine), "reading claims"))}
        if amount is None:
            audit.problems.append(f"{mine} has no leaf in the tree")
        elif amount < audit.account["claimed"] and state in ("pending", "claimable"):
            # A cumulative amount below what was claimed can never pay the account again: a lowered leaf.
            audit.problems.append(
                f"round {round_}'s root gives {mine} {amount}, below the {audit.account['claimed']} it already "
                "claimed" + (f": before {_when(audit.ready_at)} run `fedlearn chain challenge --account {mine} "
                             f"--accepted-tree <the tree of your last claim> --pending-tree {files[0]}`"
                             if state == "pending" else ""))
    if previous is not None:
        for address, before in sorted(previous.leaves().items()):
            now = tree.amount_of(address)
            if now is not None and now >= before:
                continue
            what = (f"drops {address}'s leaf (it had {before}): a guardian's `fedlearn chain revoke` before "
                    f"{_when(audit.ready_at)}" if now is None else
                    f"lowers {address} from {before} to {now}: before {_when(audit.ready_at)} run `fedlearn "
                    f"chain challenge --account {address} --accepted-tree {files[1]} --pending-tree {files[0]}`")
            audit.problems.append(f"round {round_}'s root {what}")
    return audit


def _when(unix: int) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(unix))} (unix {unix})"
