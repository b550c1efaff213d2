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

from fedlearn.chain.deployment import Deployment, distributor_contract, token_contract
from fedlearn.chain.merkle import RewardTree
from fedlearn.chain.session import ChainSession
from fedlearn.chain.transactions import TxResult, call, transact
from fedlearn.errors import ChainError

ZERO32 = b"\x00" * 32
ADMIN_ROLE = ZERO32
COORDINATOR_ROLE = Web3.keccak(text="COORDINATOR_ROLE")
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
    try:
        return to_checksum_address(value)
    except (ValueError, TypeError):
        raise ChainError(f"{what} is not an address: {value!r}") from None


def _ensure_allowance(session: ChainSession, deployment: Deployment, amount: int) -> None:
    token = token_contract(session, deployment)
    balance = call(token.functions.balanceOf(session.address), "reading balance")
    if balance < amount:
        raise ChainError(f"account {session.address} holds {balance} tokens, needs {amount}")
    allowance = call(token.functions.allowance(session.address, deployment.distributor), "reading allowance")
    if allowance < amount:
        transact(session, token.functions.approve(deployment.distributor, amount), "approving the distributor")


def mint(session: ChainSession, deployment: Deployment, to: str, amount: int) -> TxResult:
    """Mints `amount` tokens to `to` (the session's account needs MINTER_ROLE on the token)."""
    token = token_contract(session, deployment)
    return transact(session, token.functions.mint(_address(to, "recipient"), _positive(amount, "amount")), "mint")


def fund(session: ChainSession, deployment: Deployment, amount: int, *, mint_missing: bool = True) -> TxResult:
    """Adds `amount` tokens to the reward pool from the session's account (which needs the admin role); with
    `mint_missing`, a minter first mints what its balance lacks."""
    _positive(amount, "fund amount")
    dist = distributor_contract(session, deployment)
    if not call(dist.functions.hasRole(ADMIN_ROLE, session.address), "reading roles"):
        raise ChainError(f"fund: account {session.address} lacks the distributor's DEFAULT_ADMIN_ROLE")
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


@dataclass(frozen=True)
class Settlement:
    """A settled round: `tx` is None when the chain already had it (settling is idempotent)."""

    round: int
    model_hash: bytes
    root: bytes
    round_total: int
    tree: RewardTree
    tx: TxResult | None


def settle_round(
    session: ChainSession,
    deployment: Deployment,
    round: int,
    model_hash: bytes | str,
    cumulative: Mapping[str, int],
) -> Settlement:
    """Settles `round` in one transaction: the Merkle root of `cumulative` (account → cumulative reward over
    every round so far) and the increase over what was settled before. Idempotent: if the chain already has
    this round with the same root and model hash, returns without sending; with anything else, raises."""
    if not isinstance(round, int) or isinstance(round, bool) or not 0 < round < 2**64:
        raise ChainError(f"round must be an integer in [1, 2**64), got {round!r}")
    model_hash = as_bytes32(model_hash, "model hash")
    tree = RewardTree.of(cumulative)
    dist = distributor_contract(session, deployment)
    on_chain_hash, on_chain_root = call(dist.functions.roundOf(round), "reading round")
    if on_chain_root != ZERO32:
        if on_chain_root == tree.root and on_chain_hash == model_hash:
            logs = dist.events.RoundSettled().get_logs(from_block=deployment.block, argument_filters={"round": round})
            total = int(logs[0]["args"]["roundTotal"]) if logs else 0
            return Settlement(round, model_hash, tree.root, total, tree, None)
        raise ChainError(
            f"round {round} is already settled with root 0x{on_chain_root.hex()} and model hash "
            f"0x{on_chain_hash.hex()}, not 0x{tree.root.hex()} and 0x{model_hash.hex()}"
        )
    settled = call(dist.functions.totalSettled(), "reading totals")
    round_total = tree.total - settled
    if round_total < 0:
        raise ChainError(
            f"cumulative rewards sum to {tree.total}, below the {settled} already settled: cumulative amounts only grow"
        )
    tx = transact(
        session, dist.functions.settleRound(round, model_hash, tree.root, round_total), f"settling round {round}"
    )
    return Settlement(round, model_hash, tree.root, round_total, tree, tx)


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
    already = call(dist.functions.claimed(account), "reading claims")
    tx = transact(session, dist.functions.claim(account, cumulative_amount, proof), f"claim for {account}")
    return ClaimResult(account, cumulative_amount - already, cumulative_amount, tx)


def claim_from_tree(
    session: ChainSession,
    deployment: Deployment,
    tree: RewardTree,
    account: str,
    amount: int | None = None,
) -> ClaimResult:
    """Claims what `tree` (the latest settled round's) owes `account`; `amount`, when given, must not exceed it."""
    account = _address(account, "account")
    dist = distributor_contract(session, deployment)
    latest = call(dist.functions.rewardsRoot(), "reading root")
    if latest == ZERO32:
        raise ChainError("claim: no round is settled yet")
    if latest != tree.root:
        raise ChainError(f"claim: tree root 0x{tree.root.hex()} is not the latest settled root 0x{latest.hex()}")
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


def slash(
    session: ChainSession, deployment: Deployment, account: str, amount: int, evidence_hash: bytes | str
) -> TxResult:
    """Slashes `amount` of `account`'s stake into the reward pool (the session's account must be coordinator)."""
    _positive(amount, "slash amount")
    evidence = as_bytes32(evidence_hash, "evidence hash")
    fn = distributor_contract(session, deployment).functions.slash(_address(account, "account"), amount, evidence)
    return transact(session, fn, f"slash {account}")


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
    block: int


@dataclass(frozen=True)
class ChainStatus:
    """What the distributor holds and records."""

    chain_id: int
    block: int
    paused: bool
    last_round: int
    rewards_root: str
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
            block=int(e["blockNumber"]),
        )
        for e in dist.events.RoundSettled().get_logs(from_block=deployment.block)
    ]
    if accounts is None:
        stakers = dist.events.Staked().get_logs(from_block=deployment.block)
        accounts = sorted({e["args"]["account"] for e in stakers})
    stakes: dict[str, dict[str, int]] = {}
    for account in accounts:
        active, pending, unlock_at = call(f.stakeOf(_address(account, "account")), "reading stake")
        stakes[to_checksum_address(account)] = {"active": active, "pending": pending, "unlock_at": unlock_at}
    return ChainStatus(
        chain_id=session.chain_id,
        block=int(session.w3.eth.block_number),
        paused=call(f.paused(), "reading"),
        last_round=call(f.lastRound(), "reading"),
        rewards_root="0x" + call(f.rewardsRoot(), "reading").hex(),
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
