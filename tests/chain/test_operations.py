"""Deploy, fund, settle, claim, stake and slash on eth-tester; every refusal is one ChainError line."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from fedlearn import chain
from fedlearn.chain.artifacts import DISTRIBUTOR, TOKEN, runs_artifact
from fedlearn.chain.deployment import distributor_contract, token_contract
from fedlearn.chain.operations import slashes_proposed
from fedlearn.chain.transactions import transact
from fedlearn.errors import ChainError
from tests.chain.conftest import UNSTAKE_DELAY

MODEL = b"\x11" * 32
EVIDENCE = b"\xee" * 32


def _balance(session: chain.ChainSession, deployment: chain.Deployment, account: str) -> int:
    return token_contract(session, deployment).functions.balanceOf(account).call()


def test_deployment_file_round_trips_and_checks_chain_id(session, deployment, tmp_path) -> None:
    path = deployment.save(tmp_path / "d.json")
    assert chain.Deployment.load(path, chain_id=session.chain_id) == deployment
    with pytest.raises(ChainError, match=r"is for chain id \d+, connected to 1$"):
        chain.Deployment.load(path, chain_id=1)
    deployment.check(session)
    fresh = chain.connect()  # a new eth-tester chain: same chain id, nothing deployed
    with pytest.raises(ChainError, match=f"no contract at {deployment.distributor}"):
        deployment.check(fresh)
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ChainError, match="is not a fedlearn deployment file"):
        chain.Deployment.load(tmp_path / "bad.json")


def test_two_rounds_settle_once_each_and_one_claim_covers_both(session, coordinator, deployment, institutions) -> None:
    chain.fund(session, deployment, 10_000)
    accounts = [i.address for i in institutions[:4]]
    first = chain.settle_round(coordinator, deployment, 1, MODEL, {a: 100 * (k + 1) for k, a in enumerate(accounts)})
    assert first.tx is not None and first.round_total == 1000
    second_rewards = {a: 100 * (k + 1) + 50 for k, a in enumerate(accounts)}
    second = chain.settle_round(coordinator, deployment, 2, b"\x22" * 32, second_rewards)
    assert second.round_total == 200
    # Settling the same round again with the same data sends nothing.
    again = chain.settle_round(coordinator, deployment, 2, b"\x22" * 32, second_rewards)
    assert again.tx is None and again.root == second.root and again.round_total == 200

    paid = chain.claim_from_tree(session, deployment, second.tree, accounts[2])
    assert paid.amount == 350 and _balance(session, deployment, accounts[2]) == 350
    state = chain.status(session, deployment)
    assert (state.last_round, state.total_settled, state.total_claimed) == (2, 1200, 350)
    assert [r.round for r in state.rounds] == [1, 2]
    assert state.balance == state.total_funded + state.total_slashed - state.total_claimed + state.total_staked


def test_settling_a_different_root_for_a_settled_round_is_refused(
    coordinator, session, deployment, institutions
) -> None:
    chain.fund(session, deployment, 1_000)
    chain.settle_round(coordinator, deployment, 1, MODEL, {institutions[0].address: 10})
    with pytest.raises(ChainError, match="round 1 is already settled with root 0x[0-9a-f]{64}"):
        chain.settle_round(coordinator, deployment, 1, MODEL, {institutions[0].address: 11})


def test_same_or_earlier_round_reverts_with_custom_error(coordinator, session, deployment, institutions) -> None:
    chain.fund(session, deployment, 1_000)
    chain.settle_round(coordinator, deployment, 5, MODEL, {institutions[0].address: 10})
    with pytest.raises(ChainError, match="round 3 is not after the chain's latest round 5"):
        chain.settle_round(coordinator, deployment, 3, MODEL, {institutions[0].address: 20})  # refused before sending
    tree = chain.RewardTree.of({institutions[0].address: 20})
    dist = distributor_contract(coordinator, deployment)
    with pytest.raises(chain.ChainRevertError, match=r"RoundNotIncreasing\(round=3, lastRound=5\)") as err:
        transact(coordinator, dist.functions.settleRound(3, MODEL, tree.root, 20), "settle")
    assert err.value.revert.name == "RoundNotIncreasing" and err.value.revert.args == {"round": 3, "lastRound": 5}


def test_settling_more_than_funded_reverts_and_changes_nothing(coordinator, session, deployment, institutions) -> None:
    chain.fund(session, deployment, 1_000)
    block = session.w3.eth.block_number
    with pytest.raises(ChainError, match="adds 1001 token units, above the 1000 the distributor holds unsettled"):
        chain.settle_round(coordinator, deployment, 1, MODEL, {institutions[0].address: 1001})
    assert session.w3.eth.block_number == block  # refused before sending
    tree = chain.RewardTree.of({institutions[0].address: 1001})
    settle = distributor_contract(coordinator, deployment).functions.settleRound(1, MODEL, tree.root, 1001)
    with pytest.raises(ChainError, match=r"InsufficientFunds\(required=1001, available=1000\)"):
        transact(coordinator, settle, "settle")  # and refused by the contract
    assert chain.status(session, deployment).last_round == 0


def test_defund_returns_only_what_no_settled_round_committed(coordinator, session, deployment, institutions) -> None:
    funder = session.address
    a = institutions[0].address
    chain.fund(session, deployment, 1_000)
    settled = chain.settle_round(coordinator, deployment, 1, MODEL, {a: 600})
    before = token_contract(session, deployment).functions.balanceOf(funder).call()
    with pytest.raises(ChainError, match=r"DefundExceedsAvailable\(amount=401, available=400\)"):
        chain.defund(session, deployment, funder, 401)
    with pytest.raises(ChainError, match="lacks the distributor's DEFAULT_ADMIN_ROLE"):
        chain.defund(institutions[1], deployment, institutions[1].address, 1)
    chain.defund(session, deployment, funder, 400)
    state = chain.status(session, deployment)
    assert (state.total_defunded, state.available) == (400, 0)
    assert token_contract(session, deployment).functions.balanceOf(funder).call() == before + 400
    # What was settled stays claimable, and returned funds cannot be settled again.
    chain.claim(session, deployment, a, 600, settled.tree.proof(a))
    with pytest.raises(ChainError, match="adds 1 token units, above the 0 the distributor holds unsettled"):
        chain.settle_round(coordinator, deployment, 2, MODEL, {a: 601})
    logs = distributor_contract(session, deployment).events.Defunded().get_logs(from_block=deployment.block)
    assert [(e["args"]["to"], e["args"]["amount"]) for e in logs] == [(funder, 400)]


def test_only_the_coordinator_settles_and_slashes_and_anyone_funds(session, deployment, institutions) -> None:
    chain.fund(session, deployment, 1_000)
    with pytest.raises(ChainError, match="AccessControlUnauthorizedAccount"):
        chain.settle_round(institutions[0], deployment, 1, MODEL, {institutions[0].address: 1})
    chain.mint(session, deployment, institutions[1].address, 5)
    chain.stake(institutions[1], deployment, 5)
    with pytest.raises(ChainError, match="AccessControlUnauthorizedAccount"):
        chain.propose_slash(institutions[0], deployment, institutions[1].address, 1, EVIDENCE)
    chain.mint(session, deployment, institutions[0].address, 7)
    chain.fund(institutions[0], deployment, 7)  # funding the pool needs no role
    assert chain.status(session, deployment).total_funded == 1_007


def test_invalid_proof_and_claim_above_owed(coordinator, session, deployment, institutions) -> None:
    chain.fund(session, deployment, 1_000)
    a, b = institutions[0].address, institutions[1].address
    settled = chain.settle_round(coordinator, deployment, 1, MODEL, {a: 100, b: 200})
    with pytest.raises(ChainError, match=rf"InvalidProof\(account={a}, cumulativeAmount=200\)"):
        chain.claim(session, deployment, a, 200, settled.tree.proof(a))
    with pytest.raises(ChainError, match=f"claim: 150 is above the cumulative 100 owed to {a}"):
        chain.claim_from_tree(session, deployment, settled.tree, a, 150)
    stale = chain.RewardTree.of({a: 1})
    with pytest.raises(ChainError, match="is not the claimable root"):
        chain.claim_from_tree(session, deployment, stale, a)
    chain.claim_from_tree(session, deployment, settled.tree, a)
    with pytest.raises(ChainError, match=rf"NothingToClaim\(account={a}, cumulativeAmount=100, claimed=100\)"):
        chain.claim_from_tree(session, deployment, settled.tree, a)


def test_root_promising_more_than_settled_cannot_drain_stakes(coordinator, session, deployment, institutions) -> None:
    """A coordinator's inconsistent root (leaves above the round total) is stopped by ClaimExceedsSettled."""
    chain.fund(session, deployment, 100)
    staker = institutions[1]
    chain.mint(session, deployment, staker.address, 500)
    chain.stake(staker, deployment, 500)
    a = institutions[0].address
    tree = chain.RewardTree.of({a: 400})
    dist = distributor_contract(coordinator, deployment)
    transact(coordinator, dist.functions.settleRound(1, MODEL, tree.root, 100), "settle")
    with pytest.raises(ChainError, match=r"ClaimExceedsSettled\(amount=400, unclaimed=100\)"):
        chain.claim(session, deployment, a, 400, tree.proof(a))


def test_a_deployment_whose_contracts_run_other_code_is_named_in_a_warning(session, deployment, caplog) -> None:
    # Prepare: the deployed code is this build's, immutables filled in by the constructors.
    code = bytes(session.w3.eth.get_code(deployment.distributor))
    assert runs_artifact(code, DISTRIBUTOR) and not runs_artifact(code, TOKEN)
    # Execute / Assert: another build's code (a changed byte where the artifact has none to fill, or one byte more)
    # is not this version's, nor is a deployment file naming the token as its distributor.
    changed = code[:-3] + bytes([code[-3] ^ 0xFF]) + code[-2:]
    assert not runs_artifact(changed, DISTRIBUTOR) and not runs_artifact(code + b"\x00", DISTRIBUTOR)
    swapped = dataclasses.replace(deployment, distributor=deployment.token)
    with caplog.at_level(logging.WARNING, logger="fedlearn"):
        deployment.check(session)
        assert caplog.text == ""  # this build's contracts: nothing to say
        swapped.check(session)  # another build's are still used: their institutions must be able to claim
    assert f"the contract at {deployment.token} runs other code than this fedlearn's RewardDistributor" in caplog.text


def test_stake_unstake_withdraw_and_slash(coordinator, session, deployment, institutions) -> None:
    inst = institutions[0]
    chain.mint(session, deployment, inst.address, 1_000)
    chain.stake(inst, deployment, 600)
    with pytest.raises(ChainError, match=f"slash: 601 exceeds {inst.address}'s slashable stake 600"):
        chain.propose_slash(coordinator, deployment, inst.address, 601, EVIDENCE)  # refused before sending
    over = distributor_contract(coordinator, deployment).functions.proposeSlash(inst.address, 601, EVIDENCE)
    with pytest.raises(ChainError, match=rf"SlashExceedsStake\(account={inst.address}, amount=601, staked=600\)"):
        transact(coordinator, over, "slash")
    chain.request_unstake(inst, deployment, 400)
    with pytest.raises(ChainError, match=r"StakeLocked\(account=0x[0-9a-fA-F]{40}, unlockAt=\d+\)"):
        chain.withdraw(inst, deployment)
    # Pending tokens stay slashable: 200 active + 100 of the pending 400.
    slash_id, _ = chain.propose_slash(coordinator, deployment, inst.address, 300, EVIDENCE)
    chain.execute_slash(session, deployment, slash_id)
    state = chain.status(session, deployment)
    unlock_at = state.stakes[inst.address]["unlock_at"]
    assert state.stakes[inst.address] == {"active": 0, "pending": 300, "held": 0, "unlock_at": unlock_at}
    assert state.total_slashed == 300 and state.available == 300  # slashed tokens return to the pool
    chain.advance_time(session, UNSTAKE_DELAY + 1)
    chain.withdraw(inst, deployment)
    assert _balance(session, deployment, inst.address) == 400 + 300
    with pytest.raises(ChainError, match="NothingToWithdraw"):
        chain.withdraw(inst, deployment)
    with pytest.raises(ChainError, match=r"UnstakeExceedsStake"):
        chain.request_unstake(inst, deployment, 1)
    with pytest.raises(ChainError, match=r"holds 0\.0000000000000007 tokens \(700 base units\), needs "
                       r"0\.000000000000000701 tokens \(701 base units\)"):
        chain.stake(inst, deployment, 701)


def test_one_piece_of_evidence_slashes_an_account_once(coordinator, session, deployment, institutions) -> None:
    # Prepare: two institutions staked; the first slashed on EVIDENCE.
    first, second = institutions[0], institutions[1]
    for inst in (first, second):
        chain.mint(session, deployment, inst.address, 1_000)
        chain.stake(inst, deployment, 1_000)
    assert slashes_proposed(session, deployment, first.address, EVIDENCE) == []
    used = distributor_contract(session, deployment).functions.evidenceUsed
    assert not used(first.address, EVIDENCE).call()
    slash_id, tx = chain.propose_slash(coordinator, deployment, first.address, 100, EVIDENCE)
    assert used(first.address, EVIDENCE).call() and not used(second.address, EVIDENCE).call()
    # Execute: the same proposal again, as a coordinator retrying a lost receipt would send it.
    again = distributor_contract(coordinator, deployment).functions.proposeSlash(first.address, 100, EVIDENCE)
    with pytest.raises(ChainError, match=rf"EvidenceAlreadyUsed\(account={first.address}, evidenceHash=0x(ee){{32}}\)"):
        transact(coordinator, again, "slash")
    # Assert: the stake was taken once; the proposal is found by its evidence; the same evidence (two byte-identical
    # updates hash alike) still slashes another account.
    assert chain.stake_of(session, deployment, first.address)["active"] == 900
    assert slashes_proposed(session, deployment, first.address, EVIDENCE) == [(slash_id, tx.tx_hash)]
    other, _ = chain.propose_slash(coordinator, deployment, second.address, 100, EVIDENCE)
    assert other == slash_id + 1 and chain.stake_of(session, deployment, second.address)["active"] == 900


def test_pause_stops_settlements_and_claims(coordinator, session, deployment, institutions) -> None:
    chain.fund(session, deployment, 100)
    chain.pause(session, deployment)
    with pytest.raises(ChainError, match=r"EnforcedPause\(\)"):
        chain.settle_round(coordinator, deployment, 1, MODEL, {institutions[0].address: 1})
    chain.unpause(session, deployment)
    chain.settle_round(coordinator, deployment, 1, MODEL, {institutions[0].address: 1})


def test_bad_arguments_are_one_line_errors(coordinator, session, deployment, institutions) -> None:
    with pytest.raises(ChainError, match="model hash must be 32 bytes"):
        chain.settle_round(coordinator, deployment, 1, b"\x01", {institutions[0].address: 1})
    with pytest.raises(ChainError, match=r"round must be an integer in \[1, 2\*\*64\)"):
        chain.settle_round(coordinator, deployment, 0, MODEL, {institutions[0].address: 1})
    with pytest.raises(ChainError, match="slash amount must be a positive integer"):
        chain.propose_slash(coordinator, deployment, institutions[0].address, 0, EVIDENCE)
    with pytest.raises(ChainError, match="account is not an address"):
        chain.propose_slash(coordinator, deployment, "bob", 1, EVIDENCE)
    with pytest.raises(ChainError, match="the evidence hash must not be zero"):
        chain.propose_slash(coordinator, deployment, institutions[0].address, 1, b"\x00" * 32)


def test_account_without_gas_is_refused(session, deployment) -> None:
    from eth_account import Account

    broke = session.as_account(Account.from_key(b"\x42" * 32))
    with pytest.raises(ChainError, match=f"account {broke.address} has no ETH to pay for gas"):
        chain.request_unstake(broke, deployment, 1)


def test_institution_accounts_are_deterministic_and_funded(session) -> None:
    first = chain.funded_institution_accounts(session, 10)  # 8 in the genesis, 2 topped up
    assert [a.address for a in first] == [a.address for a in chain.institution_accounts(10)]
    assert all(session.w3.eth.get_balance(a.address) > 0 for a in first)
    assert len({a.address for a in first}) == 10


def test_decode_revert_names_openzeppelin_and_builtin_errors() -> None:
    from eth_abi import encode

    data = bytes.fromhex("e450d38c") + encode(["address", "uint256", "uint256"], ["0x" + "11" * 20, 1, 2])
    decoded = chain.decode_revert(data)
    assert decoded.name == "ERC20InsufficientBalance" and decoded.args["balance"] == 1
    assert str(chain.decode_revert("0x08c379a0" + encode(["string"], ["boom"]).hex())) == "Error(reason=boom)"
    assert chain.decode_revert("0xdeadbeef").name == "UnknownRevert"
