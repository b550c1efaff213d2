"""What a federation does on chain: fund the pool, settle rounds, claim, stake, unstake, withdraw and slash.

Each function checks what it can before sending, so that a refused action leaves nothing half-done, and
raises ChainError with one line (the custom error name and arguments when the chain refused).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address
from web3 import Web3
from web3.logs import DISCARD

from fedlearn.chain.addresses import address_of
from fedlearn.chain.deployment import Deployment, distributor_contract, token_contract, token_units
from fedlearn.chain.merkle import RewardTree
from fedlearn.chain.session import ChainSession
from fedlearn.chain.transactions import TxResult, call, transact
from fedlearn.errors import ChainError

ZERO32 = b"\x00" * 32
ADMIN_ROLE = ZERO32
COORDINATOR_ROLE = Web3.keccak(text="COORDINATOR_ROLE")
GUARDIAN_ROLE = Web3.keccak(text="GUARDIAN_ROLE")
MINTER_ROLE = Web3.keccak(text="MINTER_ROLE")


def as_bytes32(value: bytes | str, what: str) -> bytes:
    """A 32-byte value from bytes or 0x-hex, or a ChainError naming `what`."""
    try:
        raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)
    except ValueError:
        raise ChainError(f"{what} must be 32 bytes of hex, got {value!r}") from None
    if len(raw) != 32:
        raise ChainError(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


def _positive(amount: int, what: str) -> int:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise ChainError(f"{what} must be a positive integer number of token units, got {amount!r}")
    return amount


def _address(value: str, what: str) -> str:
    return address_of(value, what)


def _ensure_allowance(session: ChainSession, deployment: Deployment, amount: int) -> None:
    token = token_contract(session, deployment)
    balance = call(token.functions.balanceOf(session.address), "reading balance")
    if balance < amount:
        raise ChainError(f"account {session.address} holds {token_units(balance)}, needs {token_units(amount)}")
    allowance = call(token.functions.allowance(session.address, deployment.distributor), "reading allowance")
    if allowance < amount:
        transact(session, token.functions.approve(deployment.distributor, amount), "approving the distributor")


def mint(session: ChainSession, deployment: Deployment, to: str, amount: int) -> TxResult:
    """Mints `amount` tokens to `to` (the session's account needs MINTER_ROLE on the token)."""
    token = token_contract(session, deployment)
    return transact(session, token.functions.mint(_address(to, "recipient"), _positive(amount, "amount")), "mint")


def fund(session: ChainSession, deployment: Deployment, amount: int, *, mint_missing: bool = True) -> TxResult:
    """Adds `amount` tokens to the reward pool from the session's account (anyone may fund); with
    `mint_missing`, a minter first mints what its balance lacks."""
    _positive(amount, "fund amount")
    dist = distributor_contract(session, deployment)
    token = token_contract(session, deployment)
    balance = call(token.functions.balanceOf(session.address), "reading balance")
    if balance < amount and mint_missing and call(token.functions.hasRole(MINTER_ROLE, session.address), "roles"):
        mint(session, deployment, session.address, amount - balance)
    _ensure_allowance(session, deployment, amount)
    return transact(session, dist.functions.fund(amount), "fund")


def defund(session: ChainSession, deployment: Deployment, to: str, amount: int) -> TxResult:
    """Returns `amount` unsettled tokens from the reward pool to `to` (the session's account needs the admin
    role); what settled rounds committed can never leave this way."""
    _positive(amount, "defund amount")
    dist = distributor_contract(session, deployment)
    if not call(dist.functions.hasRole(ADMIN_ROLE, session.address), "reading roles"):
        raise ChainError(f"defund: account {session.address} lacks the distributor's DEFAULT_ADMIN_ROLE")
    return transact(session, dist.functions.defund(_address(to, "recipient"), amount), "defund")


MAX_ROUND_STEP = 1000  # RewardDistributor.MAX_ROUND_STEP


@dataclass(frozen=True)
class Settlement:
    """A settled round: `tx` is None when the chain already had it (settling is idempotent)."""

    round: int
    model_hash: bytes
    root: bytes
    round_total: int
    tree: RewardTree
    tx: TxResult | None


def _round_logs(session: ChainSession, deployment: Deployment, round: int) -> list[Any]:
    dist = distributor_contract(session, deployment)
    return list(dist.events.RoundSettled().get_logs(from_block=deployment.block, argument_filters={"round": round}))


def check_round(round: Any) -> int:
    """A round number the distributor can hold (uint64, from 1); ChainError otherwise."""
    if not isinstance(round, int) or isinstance(round, bool) or not 0 < round < 2**64:
        raise ChainError(f"round must be an integer in [1, 2**64), got {round!r}")
    return round


def settle_round(
    session: ChainSession,
    deployment: Deployment,
    round: int,
    model_hash: bytes | str,
    cumulative: Mapping[str, int],
    previous: RewardTree | None = None,
) -> Settlement:
    """Settles `round` in one transaction: the Merkle root of `cumulative` (account → cumulative reward over
    every round so far) and the sum of its leaves. Idempotent: if the chain already has this round with the same
    root and model hash, returns without sending; with anything else, raises. Everything the contract would
    refuse (a lower total, a total above the allowance or the funds, a round out of step) is refused here first,
    and, given the `previous` live tree, a root that would lower or drop any account's cumulative amount (what a
    challenge or a guardian would revoke)."""
    check_round(round)
    model_hash = as_bytes32(model_hash, "model hash")
    tree = RewardTree.of(cumulative)
    dist = distributor_contract(session, deployment)
    f = dist.functions
    last = call(f.lastRound(), "reading round")
    if round <= last:
        logs = _round_logs(session, deployment, round)
        if logs:
            args = logs[-1]["args"]
            if call(f.roundOf(round), "reading round") == ZERO32:
                raise ChainError(f"round {round}'s root 0x{bytes(args['rewardsRoot']).hex()} was revoked on chain and "
                                 f"round numbers are never reused: settle the corrected tree as a round after {last}")
            if bytes(args["rewardsRoot"]) == tree.root and bytes(args["modelHash"]) == model_hash:
                return Settlement(round, model_hash, tree.root, int(args["roundTotal"]), tree, None)
            raise ChainError(
                f"round {round} is already settled with root 0x{bytes(args['rewardsRoot']).hex()} and model hash "
                f"0x{bytes(args['modelHash']).hex()}, not 0x{tree.root.hex()} and 0x{model_hash.hex()}"
            )
        raise ChainError(f"round {round} is not after the chain's latest round {last}: rounds are numbered across "
                         "every run of a deployment and never reused")
    if round - last > MAX_ROUND_STEP:
        raise ChainError(f"round {round} is more than {MAX_ROUND_STEP} after the chain's latest round {last}")
    if previous is not None:
        live = live_root(session, deployment)
        if live not in (None, previous.root):
            raise ChainError(f"the previous tree's root 0x{previous.root.hex()} is not the chain's live root "
                             f"0x{live.hex()} (round {last})")
        for account, amount in previous.leaves().items():
            now = tree.amount_of(account)
            if now is None or now < amount:
                raise ChainError(f"round {round} would lower {account}'s cumulative amount from {amount} to "
                                 f"{now or 0}: cumulative amounts only grow")
    settled = call(f.totalSettled(), "reading totals")
    round_total = tree.total - settled
    if round_total < 0:
        raise ChainError(
            f"cumulative rewards sum to {tree.total}, below the {settled} already settled: cumulative amounts only grow"
        )
    allowance = call(f.roundAllowance(), "reading allowance") + call(f.rewardPerRound(), "reading reward per round")
    if round_total > allowance:
        raise ChainError(f"round {round} adds {round_total} token units, above the {allowance} the governed reward "
                         "per round allows")
    available = call(f.availableFunds(), "reading funds")
    if round_total > available:
        raise ChainError(f"round {round} adds {round_total} token units, above the {available} the distributor "
                         "holds unsettled; fund it first")
    tx = transact(session, f.settleRound(round, model_hash, tree.root, tree.total), f"settling round {round}")
    return Settlement(round, model_hash, tree.root, round_total, tree, tx)


def live_root(session: ChainSession, deployment: Deployment) -> bytes | None:
    """The root the chain's settled total stands for: the latest round's, or the accepted one's when the latest
    was revoked; None before any settlement."""
    f = distributor_contract(session, deployment).functions
    last = int(call(f.lastRound(), "reading the latest round"))
    if last == 0:
        return None
    root = bytes(call(f.roundOf(last), "reading the latest root"))
    if root != ZERO32:
        return root
    accepted = bytes(call(f.rewardsRoot(), "reading the claimable root"))
    return accepted if accepted != ZERO32 else None


@dataclass(frozen=True)
class PendingRoot:
    """The root waiting out its delay (round 0: none)."""

    round: int
    root: bytes
    leaves_total: int
    ready_at: int


def pending_root(session: ChainSession, deployment: Deployment) -> PendingRoot:
    round, root, total, ready_at = call(distributor_contract(session, deployment).functions.pendingRoot(), "reading")
    return PendingRoot(int(round), bytes(root), int(total), int(ready_at))


def accept_root(session: ChainSession, deployment: Deployment) -> TxResult:
    """Makes a pending root whose delay passed the claimable one (claims and settlements also do this)."""
    return transact(session, distributor_contract(session, deployment).functions.acceptRoot(), "accepting the root")


def revoke_pending_root(session: ChainSession, deployment: Deployment) -> TxResult:
    """Revokes the pending root (the session's account must be a guardian or the admin)."""
    dist = distributor_contract(session, deployment)
    if pending_root(session, deployment).round == 0:
        raise ChainError("revoke: no root is pending")
    if not (call(dist.functions.hasRole(GUARDIAN_ROLE, session.address), "reading roles")
            or call(dist.functions.hasRole(ADMIN_ROLE, session.address), "reading roles")):
        raise ChainError(f"revoke: account {session.address} is neither a guardian nor the admin of the distributor")
    return transact(session, dist.functions.revokePendingRoot(), "revoking the pending root")


def challenge_root(
    session: ChainSession, deployment: Deployment, account: str, accepted: RewardTree, pending: RewardTree
) -> TxResult:
    """Revokes the pending root with proof that it lowers `account`'s cumulative amount: `accepted` is the tree
    of the claimable root, `pending` the tree of the pending one. Anyone may send it."""
    account = _address(account, "account")
    dist = distributor_contract(session, deployment)
    waiting = pending_root(session, deployment)
    if waiting.round == 0:
        raise ChainError("challenge: no root is pending")
    claimable = call(dist.functions.rewardsRoot(), "reading root")
    if accepted.root != claimable:
        raise ChainError(f"challenge: the accepted tree's root 0x{accepted.root.hex()} is not the claimable root "
                         f"0x{claimable.hex()}")
    if pending.root != waiting.root:
        raise ChainError(f"challenge: the pending tree's root 0x{pending.root.hex()} is not the pending root "
                         f"0x{waiting.root.hex()}")
    before, after = accepted.amount_of(account), pending.amount_of(account) or 0
    if before is None:
        raise ChainError(f"challenge: {account} has no leaf in the accepted tree")
    if after >= before:
        raise ChainError(f"challenge: {account}'s amount does not decrease ({before} -> {after})")
    if pending.amount_of(account) is None:
        raise ChainError(f"challenge: {account} has no leaf in the pending tree (a dropped leaf cannot be proven "
                         "on chain; ask a guardian to revoke)")
    fn = dist.functions.challengeRoot(account, before, accepted.proof(account), after, pending.proof(account))
    return transact(session, fn, f"challenging round {waiting.round}")


@dataclass(frozen=True)
class ClaimResult:
    account: str
    amount: int
    cumulative_amount: int
    tx: TxResult


def claim(
    session: ChainSession,
    deployment: Deployment,
    account: str,
    cumulative_amount: int,
    proof: list[bytes],
) -> ClaimResult:
    """Claims for `account` (tokens go to it, whoever sends) with its leaf in the latest root."""
    account = _address(account, "account")
    dist = distributor_contract(session, deployment)
    tx = transact(session, dist.functions.claim(account, cumulative_amount, proof), f"claim for {account}")
    # What was paid, as the contract says it paid it (no read before the claim, which another could race).
    (event,) = dist.events.Claimed().process_receipt(tx.receipt, errors=DISCARD)  # the Transfer log too
    return ClaimResult(account, int(event["args"]["amount"]), cumulative_amount, tx)


def claim_from_tree(
    session: ChainSession,
    deployment: Deployment,
    tree: RewardTree,
    account: str,
    amount: int | None = None,
) -> ClaimResult:
    """Claims what `tree` (the claimable root's) owes `account`; `amount`, when given, must not exceed it."""
    account = _address(account, "account")
    dist = distributor_contract(session, deployment)
    latest = call(dist.functions.rewardsRoot(), "reading root")
    if latest == ZERO32:
        waiting = pending_root(session, deployment)
        if waiting.round:
            raise ChainError(f"claim: round {waiting.round}'s root is pending until {waiting.ready_at} (unix time); "
                             "claims use it from then on")
        raise ChainError("claim: no round is settled yet")
    if latest != tree.root:
        waiting = pending_root(session, deployment)
        if waiting.root == tree.root:
            raise ChainError(f"claim: the tree's root (round {waiting.round}) is pending until {waiting.ready_at} "
                             f"(unix time); claims use the accepted root 0x{latest.hex()} until then")
        raise ChainError(f"claim: tree root 0x{tree.root.hex()} is not the claimable root 0x{latest.hex()}")
    owed = tree.amount_of(account)
    if owed is None:
        raise ChainError(f"claim: account {account} has no reward in the latest round's tree")
    if amount is not None and amount > owed:
        raise ChainError(f"claim: {amount} is above the cumulative {owed} owed to {account}")
    if amount is not None and amount < owed:
        raise ChainError(f"claim: a claim pays the whole cumulative {owed} owed to {account}, not {amount}")
    return claim(session, deployment, account, owed, tree.proof(account))


def stake(session: ChainSession, deployment: Deployment, amount: int) -> TxResult:
    """Stakes `amount` of the session account's tokens (approving the distributor first when needed)."""
    _positive(amount, "stake amount")
    _ensure_allowance(session, deployment, amount)
    return transact(session, distributor_contract(session, deployment).functions.stake(amount), "stake")


def request_unstake(session: ChainSession, deployment: Deployment, amount: int) -> TxResult:
    """Starts unstaking `amount`; withdrawable after the deployment's unstake delay."""
    _positive(amount, "unstake amount")
    return transact(session, distributor_contract(session, deployment).functions.requestUnstake(amount), "unstake")


def withdraw(session: ChainSession, deployment: Deployment) -> TxResult:
    """Withdraws the session account's unstaked tokens once the delay has passed."""
    return transact(session, distributor_contract(session, deployment).functions.withdraw(), "withdraw")


@dataclass(frozen=True)
class SlashProposal:
    id: int
    account: str
    amount: int
    evidence_hash: bytes
    executable_at: int
    closed: bool


def slash_proposal(session: ChainSession, deployment: Deployment, slash_id: int) -> SlashProposal:
    p = call(distributor_contract(session, deployment).functions.slashOf(slash_id), "reading slash")
    account, executable_at, closed, amount, evidence = p
    if int(str(account), 16) == 0:
        raise ChainError(f"slash {slash_id} was never proposed")
    return SlashProposal(slash_id, to_checksum_address(account), int(amount), bytes(evidence), int(executable_at),
                         bool(closed))


def stake_of(session: ChainSession, deployment: Deployment, account: str) -> dict[str, int]:
    """`account`'s stake: active, pending (unstaked, still slashable), held (under a proposed slash), unlock_at."""
    active, pending, unlock_at, held = call(
        distributor_contract(session, deployment).functions.stakeOf(_address(account, "account")), "reading stake")
    return {"active": int(active), "pending": int(pending), "held": int(held), "unlock_at": int(unlock_at)}


def propose_slash(
    session: ChainSession, deployment: Deployment, account: str, amount: int, evidence_hash: bytes | str
) -> tuple[int, TxResult]:
    """Proposes slashing `amount` of `account`'s stake (the session's account must be coordinator): the tokens
    are held at once and taken after the slash delay unless vetoed. Returns the proposal id and the transaction."""
    _positive(amount, "slash amount")
    evidence = as_bytes32(evidence_hash, "evidence hash")
    if evidence == ZERO32:
        raise ChainError("slash: the evidence hash must not be zero")
    account = _address(account, "account")
    stake = stake_of(session, deployment, account)
    if amount > stake["active"] + stake["pending"]:
        raise ChainError(f"slash: {amount} exceeds {account}'s slashable stake {stake['active'] + stake['pending']}")
    dist = distributor_contract(session, deployment)
    tx = transact(session, dist.functions.proposeSlash(account, amount, evidence), f"proposing to slash {account}")
    events = dist.events.SlashProposed().process_receipt(tx.receipt, errors=DISCARD)
    return int(events[0]["args"]["id"]), tx


def slashes_proposed(session: ChainSession, deployment: Deployment, account: str,
                     evidence_hash: bytes | str) -> list[tuple[int, str]]:
    """(id, transaction hash) of each slash proposed against `account` with this evidence (vetoed or not): the
    distributor takes one piece of evidence against an account once, so there is at most one."""
    evidence, account = as_bytes32(evidence_hash, "evidence hash"), _address(account, "account")
    # The events, not the evidenceUsed view: a distributor deployed before that view answers them too.
    logs = distributor_contract(session, deployment).events.SlashProposed().get_logs(from_block=deployment.block)
    return [(int(e["args"]["id"]), "0x" + bytes(e["transactionHash"]).hex().removeprefix("0x")) for e in logs
            if e["args"]["account"] == account and bytes(e["args"]["evidenceHash"]) == evidence]


def _close_slash(session: ChainSession, deployment: Deployment, slash_id: int, function: str, what: str) -> TxResult:
    if slash_proposal(session, deployment, slash_id).closed:
        raise ChainError(f"slash {slash_id} was already executed or vetoed")
    fn = getattr(distributor_contract(session, deployment).functions, function)(slash_id)
    return transact(session, fn, f"{what} slash {slash_id}")


def execute_slash(session: ChainSession, deployment: Deployment, slash_id: int) -> TxResult:
    """Takes the held tokens of slash `slash_id` into the reward pool once its veto window passed (anyone)."""
    return _close_slash(session, deployment, slash_id, "executeSlash", "executing")


def veto_slash(session: ChainSession, deployment: Deployment, slash_id: int) -> TxResult:
    """Vetoes slash `slash_id` within its window (the session's account must be a guardian or the admin)."""
    return _close_slash(session, deployment, slash_id, "vetoSlash", "vetoing")


def pause(session: ChainSession, deployment: Deployment) -> TxResult:
    return transact(session, distributor_contract(session, deployment).functions.pause(), "pause")


def unpause(session: ChainSession, deployment: Deployment) -> TxResult:
    return transact(session, distributor_contract(session, deployment).functions.unpause(), "unpause")


@dataclass(frozen=True)
class RoundRecord:
    round: int
    model_hash: str
    rewards_root: str
    round_total: int
    leaves_total: int
    ready_at: int
    block: int


@dataclass(frozen=True)
class ChainStatus:
    """What the distributor holds and records."""

    chain_id: int
    block: int
    paused: bool
    last_round: int
    claimable_round: int
    rewards_root: str
    pending_round: int
    pending_ready_at: int
    reward_per_round: int
    round_allowance: int
    root_delay: int
    slash_delay: int
    total_funded: int
    total_slashed: int
    total_defunded: int
    total_settled: int
    total_claimed: int
    total_staked: int
    available: int
    balance: int
    rounds: list[RoundRecord] = field(default_factory=list)
    stakes: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def status(session: ChainSession, deployment: Deployment, accounts: list[str] | None = None) -> ChainStatus:
    """Reads totals, every settled round (from RoundSettled events) and the stakes of `accounts` (default: every
    account that ever staked)."""
    deployment.check(session)
    dist = distributor_contract(session, deployment)
    f = dist.functions
    rounds = [
        RoundRecord(
            round=int(e["args"]["round"]),
            model_hash="0x" + bytes(e["args"]["modelHash"]).hex(),
            rewards_root="0x" + bytes(e["args"]["rewardsRoot"]).hex(),
            round_total=int(e["args"]["roundTotal"]),
            leaves_total=int(e["args"]["leavesTotal"]),
            ready_at=int(e["args"]["readyAt"]),
            block=int(e["blockNumber"]),
        )
        for e in dist.events.RoundSettled().get_logs(from_block=deployment.block)
    ]
    if accounts is None:
        stakers = dist.events.Staked().get_logs(from_block=deployment.block)
        accounts = sorted({e["args"]["account"] for e in stakers})
    waiting = pending_root(session, deployment)
    stakes = {address_of(account, "account"): stake_of(session, deployment, account) for account in accounts}
    return ChainStatus(
        chain_id=session.chain_id,
        block=int(session.w3.eth.block_number),
        paused=call(f.paused(), "reading"),
        last_round=call(f.lastRound(), "reading"),
        claimable_round=call(f.claimableRound(), "reading"),
        rewards_root="0x" + call(f.rewardsRoot(), "reading").hex(),
        pending_round=waiting.round,
        pending_ready_at=waiting.ready_at,
        reward_per_round=call(f.rewardPerRound(), "reading"),
        round_allowance=call(f.roundAllowance(), "reading"),
        root_delay=call(f.rootDelay(), "reading"),
        slash_delay=call(f.slashDelay(), "reading"),
        total_funded=call(f.totalFunded(), "reading"),
        total_slashed=call(f.totalSlashed(), "reading"),
        total_defunded=call(f.totalDefunded(), "reading"),
        total_settled=call(f.totalSettled(), "reading"),
        total_claimed=call(f.totalClaimed(), "reading"),
        total_staked=call(f.totalStaked(), "reading"),
        available=call(f.availableFunds(), "reading"),
        balance=call(token_contract(session, deployment).functions.balanceOf(deployment.distributor), "reading"),
        rounds=rounds,
        stakes=stakes,
    )
