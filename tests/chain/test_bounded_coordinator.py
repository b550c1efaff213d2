"""The coordinator key is bounded: each exploit of a trusted coordinator now fails, on eth-tester.

Roots wait out a challenge window; a root that lowers an account is revoked by anyone with two proofs, or by a
guardian; the leaf sum only grows, by at most the governed reward per round; slashes wait out a veto window and
hold the tokens meanwhile; round numbers move in bounded steps.
"""

from __future__ import annotations

import pytest
from web3 import Web3

from fedlearn import chain
from fedlearn.chain.deployment import distributor_contract, token_contract
from fedlearn.chain.transactions import transact
from fedlearn.errors import ChainError
from tests.chain.conftest import UNSTAKE_DELAY

DAY = 86_400
PER_ROUND = 1_000
MODEL = b"\x11" * 32
EVIDENCE = b"\xee" * 32
GUARDIAN_ROLE = Web3.keccak(text="GUARDIAN_ROLE")


@pytest.fixture
def bounded(session: chain.ChainSession) -> chain.Deployment:
    """Dev account 0 admin, 1 coordinator, 2 guardian; a day's root and slash windows; 1,000 units a round."""
    deployment = chain.deploy(session, coordinator=chain.dev_account(1).address, unstake_delay=UNSTAKE_DELAY,
                              reward_per_round=PER_ROUND, root_delay=DAY, slash_delay=DAY)
    grant = distributor_contract(session, deployment).functions.grantRole(GUARDIAN_ROLE, chain.dev_account(2).address)
    transact(session, grant, "granting the guardian role")
    chain.fund(session, deployment, 10_000)
    return deployment


@pytest.fixture
def guardian(session: chain.ChainSession) -> chain.ChainSession:
    return session.as_account(chain.dev_account(2))


def _balance(session: chain.ChainSession, deployment: chain.Deployment, account: str) -> int:
    return int(token_contract(session, deployment).functions.balanceOf(account).call())


def _raw_settle(coordinator: chain.ChainSession, deployment: chain.Deployment, round: int,
                tree: chain.RewardTree, leaves_total: int | None = None) -> None:
    """Settle straight through the contract, as a compromised coordinator key would, skipping every local check."""
    fn = distributor_contract(coordinator, deployment).functions.settleRound(
        round, MODEL, tree.root, tree.total if leaves_total is None else leaves_total)
    transact(coordinator, fn, f"settling round {round}")


def test_a_root_is_claimable_only_after_its_window(session, coordinator, bounded, institutions) -> None:
    a = institutions[0].address
    settled = chain.settle_round(coordinator, bounded, 1, MODEL, {a: 600})
    with pytest.raises(ChainError, match=r"claim: round 1's root is pending until \d+ \(unix time\)"):
        chain.claim_from_tree(session, bounded, settled.tree, a)
    assert chain.pending_root(session, bounded).round == 1
    chain.advance_time(session, DAY + 1)
    assert chain.pending_root(session, bounded).round == 0  # its window passed: claims use it
    assert chain.claim_from_tree(session, bounded, settled.tree, a).amount == 600


def test_zero_total_root_giving_the_coordinator_unclaimed_rewards_is_challenged_by_anyone(
    session, coordinator, bounded, institutions
) -> None:
    """The exploit: a round adding nothing whose root moves every unclaimed reward to the coordinator."""
    a, b, thief = institutions[0].address, institutions[1].address, coordinator.address
    honest = chain.settle_round(coordinator, bounded, 1, MODEL, {a: 600, b: 400})
    chain.advance_time(session, DAY)
    stolen = chain.RewardTree.of({a: 0, b: 0, thief: 1_000})
    _raw_settle(coordinator, bounded, 2, stolen)  # same leaf sum: no round total, no cap, no funds check trips
    with pytest.raises(ChainError, match=r"the tree's root \(round 2\) is pending until"):
        chain.claim_from_tree(coordinator, bounded, stolen, thief)  # the window holds it back
    # Any institution proves its amount fell and revokes the root; nothing of the pending root survives.
    chain.challenge_root(institutions[5], bounded, a, honest.tree, stolen)
    assert chain.pending_root(session, bounded).round == 0
    assert distributor_contract(session, bounded).functions.roundOf(2).call() == b"\x00" * 32
    chain.advance_time(session, DAY)
    with pytest.raises(ChainError, match="is not the claimable root"):
        chain.claim_from_tree(coordinator, bounded, stolen, thief)
    assert chain.claim_from_tree(session, bounded, honest.tree, a).amount == 600
    assert chain.claim_from_tree(session, bounded, honest.tree, b).amount == 400
    assert _balance(session, bounded, thief) == 0
    # The round number stays used; the coordinator re-settles honestly under a new one.
    with pytest.raises(ChainError, match="round 2's root 0x[0-9a-f]{64} was revoked on chain and round numbers are"):
        chain.settle_round(coordinator, bounded, 2, MODEL, {a: 700, b: 400})
    chain.settle_round(coordinator, bounded, 3, MODEL, {a: 700, b: 400})


def test_a_challenge_without_a_decrease_or_with_a_bad_proof_fails(session, coordinator, bounded, institutions) -> None:
    a, b = institutions[0].address, institutions[1].address
    first = chain.settle_round(coordinator, bounded, 1, MODEL, {a: 600, b: 400})
    chain.advance_time(session, DAY)
    second = chain.settle_round(coordinator, bounded, 2, MODEL, {a: 650, b: 400})
    with pytest.raises(ChainError, match=r"does not decrease \(600 -> 650\)"):
        chain.challenge_root(institutions[5], bounded, a, first.tree, second.tree)
    dist = distributor_contract(session, bounded)
    raw = dist.functions.challengeRoot(a, 600, first.tree.proof(a), 500, second.tree.proof(a))
    with pytest.raises(ChainError, match=rf"InvalidProof\(account={a}, cumulativeAmount=500\)"):
        transact(institutions[5], raw, "challenge")
    raw = dist.functions.challengeRoot(a, 600, first.tree.proof(a), 650, second.tree.proof(a))
    with pytest.raises(ChainError, match=r"NotADecrease\(acceptedAmount=600, pendingAmount=650\)"):
        transact(institutions[5], raw, "challenge")
    assert chain.pending_root(session, bounded).round == 2


def test_a_guardian_revokes_a_root_that_drops_a_leaf_and_nobody_else_can(
    session, coordinator, guardian, bounded, institutions
) -> None:
    a, b = institutions[0].address, institutions[1].address
    chain.settle_round(coordinator, bounded, 1, MODEL, {a: 600, b: 400})
    chain.advance_time(session, DAY)
    dropped = chain.RewardTree.of({b: 400, coordinator.address: 600})  # a's leaf is gone: no proof to give
    _raw_settle(coordinator, bounded, 2, dropped)
    with pytest.raises(ChainError, match="is neither a guardian nor the admin"):
        chain.revoke_pending_root(institutions[0], bounded)
    with pytest.raises(ChainError, match="NotGuardian"):
        transact(coordinator, distributor_contract(coordinator, bounded).functions.revokePendingRoot(), "revoke")
    chain.revoke_pending_root(guardian, bounded)
    state = chain.status(session, bounded)
    assert (state.pending_round, state.claimable_round, state.total_settled) == (0, 1, 1_000)
    with pytest.raises(ChainError, match="revoke: no root is pending"):
        chain.revoke_pending_root(guardian, bounded)


def test_the_leaf_sum_never_decreases_and_no_leaf_is_lowered_before_sending(
    session, coordinator, bounded, institutions
) -> None:
    a, b = institutions[0].address, institutions[1].address
    first = chain.settle_round(coordinator, bounded, 1, MODEL, {a: 600, b: 400})
    block = session.w3.eth.block_number
    with pytest.raises(ChainError, match=f"round 2 would lower {a}'s cumulative amount from 600 to 500"):
        chain.settle_round(coordinator, bounded, 2, MODEL, {a: 500, b: 500}, previous=first.tree)
    with pytest.raises(ChainError, match=f"round 2 would lower {b}'s cumulative amount from 400 to 0"):
        chain.settle_round(coordinator, bounded, 2, MODEL, {a: 1_000}, previous=first.tree)  # a dropped leaf
    assert session.w3.eth.block_number == block
    with pytest.raises(ChainError, match="sum to 900, below the 1000 already settled"):
        chain.settle_round(coordinator, bounded, 2, MODEL, {a: 500, b: 400})
    lowered = chain.RewardTree.of({a: 500, b: 400})
    with pytest.raises(ChainError, match=r"CumulativeTotalDecreased\(leavesTotal=900, settled=1000\)"):
        _raw_settle(coordinator, bounded, 2, lowered)


def test_the_governed_reward_per_round_caps_what_each_settlement_adds(
    session, coordinator, bounded, institutions
) -> None:
    a = institutions[0].address
    with pytest.raises(ChainError, match="adds 1001 token units, above the 1000 the governed reward per round allows"):
        chain.settle_round(coordinator, bounded, 1, MODEL, {a: 1_001})
    with pytest.raises(ChainError, match=r"RoundCapExceeded\(roundTotal=1001, allowance=1000\)"):
        _raw_settle(coordinator, bounded, 1, chain.RewardTree.of({a: 1_001}))
    chain.settle_round(coordinator, bounded, 1, MODEL, {a: 400})  # 600 of the allowance left for later
    chain.settle_round(coordinator, bounded, 2, MODEL, {a: 2_000})  # 600 + 1,000: a final true-up fits
    assert chain.status(session, bounded).round_allowance == 0
    with pytest.raises(ChainError, match=r"RoundCapExceeded\(roundTotal=1001, allowance=1000\)"):
        _raw_settle(coordinator, bounded, 3, chain.RewardTree.of({a: 3_001}))
    # Governance (here the admin of a single-operator deployment) sets it within bounds.
    dist = distributor_contract(session, bounded)
    with pytest.raises(ChainError, match="AccessControlUnauthorizedAccount"):
        transact(coordinator, dist.functions.setParameter(0, 10**9), "set")
    with pytest.raises(ChainError, match=r"ParameterOutOfRange\(parameter=0, value=\d+, min=0, max=\d+\)"):
        transact(session, dist.functions.setParameter(0, 10**27 + 1), "set")
    transact(session, dist.functions.setParameter(0, 5_000), "set")
    chain.settle_round(coordinator, bounded, 3, MODEL, {a: 7_000})


def test_round_numbers_move_in_bounded_steps(session, coordinator, bounded, institutions) -> None:
    """Round 2**64 - 1 used to brick the distributor: it can no longer be reached in one step."""
    a = institutions[0].address
    with pytest.raises(ChainError, match="round 1001 is more than 1000 after the chain's latest round 0"):
        chain.settle_round(coordinator, bounded, 1_001, MODEL, {a: 1})
    with pytest.raises(ChainError, match=r"RoundStepTooLarge\(round=18446744073709551615, lastRound=0\)"):
        _raw_settle(coordinator, bounded, 2**64 - 1, chain.RewardTree.of({a: 1}))
    chain.settle_round(coordinator, bounded, 1_000, MODEL, {a: 1})


def test_slashes_wait_out_a_veto_window_and_hold_the_stake_meanwhile(
    session, coordinator, guardian, bounded, institutions
) -> None:
    inst = institutions[0]
    chain.mint(session, bounded, inst.address, 1_000)
    chain.stake(inst, bounded, 1_000)
    # An institution that asks for its stake back at once is still slashable: pending unstakes count.
    chain.request_unstake(inst, bounded, 1_000)
    first, _ = chain.propose_slash(coordinator, bounded, inst.address, 300, EVIDENCE)
    with pytest.raises(ChainError, match=rf"SlashNotDue\(id={first}, executableAt=\d+\)"):
        chain.execute_slash(institutions[3], bounded, first)
    chain.veto_slash(guardian, bounded, first)  # a guardian finds the evidence wanting
    assert chain.stake_of(session, bounded, inst.address)["held"] == 0
    with pytest.raises(ChainError, match=f"slash {first} was already executed or vetoed"):
        chain.execute_slash(institutions[3], bounded, first)
    # Evidence found wanting stays spent: a second slash needs evidence of its own.
    again = distributor_contract(coordinator, bounded).functions.proposeSlash(inst.address, 500, EVIDENCE)
    with pytest.raises(ChainError, match=rf"EvidenceAlreadyUsed\(account={inst.address}, evidenceHash=0x(ee){{32}}\)"):
        transact(coordinator, again, "slash")
    second, _ = chain.propose_slash(coordinator, bounded, inst.address, 500, b"\xef" * 32)
    # The institution cannot run ahead of the slash: the held tokens stay when the unstake delay ends.
    chain.advance_time(session, UNSTAKE_DELAY)
    with pytest.raises(ChainError, match=rf"VetoWindowClosed\(id={second}, executableAt=\d+\)"):
        chain.veto_slash(guardian, bounded, second)
    # The vetoed 300 went back to active; the second slash held those 300 and 200 of the pending 700.
    chain.withdraw(inst, bounded)
    assert _balance(session, bounded, inst.address) == 500
    chain.execute_slash(institutions[3], bounded, second)  # anyone executes a due slash
    state = chain.status(session, bounded, [inst.address])
    assert {k: v for k, v in state.stakes[inst.address].items() if k != "unlock_at"} == {
        "active": 0, "pending": 0, "held": 0}
    assert state.total_slashed == 500 and state.total_staked == 0


def test_slashes_need_evidence_and_the_unstake_delay_covers_the_slash_window(session) -> None:
    with pytest.raises(ChainError, match=r"slash delay must be in \[0, unstake delay 172800\] seconds"):
        chain.deploy(session, unstake_delay=2 * DAY, slash_delay=3 * DAY)
    with pytest.raises(ChainError, match=r"unstake delay must be in \[86400, 31536000\] seconds"):
        chain.deploy(session, unstake_delay=0)
    from fedlearn.chain.artifacts import DISTRIBUTOR, TOKEN, load_artifact
    from fedlearn.chain.transactions import deploy_contract

    token = chain.deploy(session).token
    art = load_artifact(DISTRIBUTOR)
    assert load_artifact(TOKEN).abi  # the token artifact exists beside it
    factory = session.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    with pytest.raises(ChainError, match=r"UnstakeDelayOutOfRange\(unstakeDelay=0, slashDelay=0\)"):
        deploy_contract(session, factory, [token, session.address, session.address, 0, 1, 0, 0], "deploy")
    with pytest.raises(ChainError, match=r"UnstakeDelayOutOfRange\(unstakeDelay=172800, slashDelay=259200\)"):
        deploy_contract(session, factory, [token, session.address, session.address, 2 * DAY, 1, 0, 3 * DAY], "deploy")
