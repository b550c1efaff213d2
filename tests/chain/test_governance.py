"""Token holders change the distributor's and the license's parameters, and pause them: propose → vote → queue →
execute through the timelock, which holds every admin role of a governed deployment."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from fedlearn import chain
from fedlearn.chain import governance as gov
from fedlearn.chain import license as lic
from fedlearn.chain.deployment import distributor_contract
from fedlearn.chain.governance import Action, GovParameter
from fedlearn.chain.license import UNIT, Parameter
from fedlearn.chain.transactions import transact
from fedlearn.errors import ChainError
from tests.chain.conftest import UNSTAKE_DELAY

SETTINGS = gov.GovernanceSettings(voting_delay=60, voting_period=600, timelock_delay=300, quorum_percent=10)


def _federation(session, allocations: dict[str, int]) -> lic.LicenseDeployment:
    """A governed deployment whose only tokens are `allocations` (whole units): they are all the votes."""
    got = gov.deploy_governed(session, coordinator=chain.dev_account(1).address, unstake_delay=UNSTAKE_DELAY,
                              allocations={a: v * UNIT for a, v in allocations.items()}, settings=SETTINGS)
    return got.license


@pytest.fixture
def governed(session, institutions) -> lic.LicenseDeployment:
    # Three holders: 600, 300 and 100; quorum is 10% of 1,000.
    return _federation(session, {i.address: v for i, v in zip(institutions[:3], (600, 300, 100))})


def test_walk_through_propose_vote_queue_execute(session, governed, institutions) -> None:
    holders = institutions[:3]
    for holder in holders:
        gov.delegate(holder, governed)
    chain.advance_time(session, 1)
    assert gov.voting_power(session, governed, holders[0].address) == 600 * UNIT

    # One name space: the license's parameters and the distributor's.
    changes = {
        GovParameter.STAKE_RATE: 2 * 10**15,  # X = 0.002
        GovParameter.REVENUE_THRESHOLD: 2_000_000 * UNIT,
        GovParameter.LOCK_PERIOD: 400 * 86_400,
        GovParameter.ATTESTATION_TTL: 400 * 86_400,
        GovParameter.FEE_CLAIM_PERIOD: 90 * 86_400,
        GovParameter.REWARD_PER_ROUND: 5_000 * UNIT,
        GovParameter.ROOT_DELAY: 2 * 86_400,
        GovParameter.SLASH_DELAY: 86_400,
    }
    good = gov.propose(holders[0], governed, changes, "Double X, raise the threshold, lengthen locks")
    # The CLI and library refuse an out-of-range value up front; the contract refuses it at execution.
    with pytest.raises(ChainError, match=r"lock-period 3600 is outside \[86400, 315360000\] \(ParameterOutOfRange\)"):
        gov.propose(holders[0], governed, {Parameter.LOCK_PERIOD: 3600}, "Lock for an hour")
    bad = gov.propose_calls(holders[0], governed, {Parameter.LOCK_PERIOD: 3600}, "Lock for an hour")
    assert gov.state(session, governed, good.proposal_id) is gov.ProposalState.PENDING
    with pytest.raises(ChainError, match=r"vote: proposal \d+ is Pending; voting opens at \d+"):
        gov.vote(holders[0], governed, good.proposal_id, "for")
    # An unknown proposal is named by the governor's own error, not shown as raw revert bytes.
    with pytest.raises(ChainError,
                       match=r"^reading proposal 123 reverted: GovernorNonexistentProposal\(proposalId=123\)$"):
        gov.vote(holders[0], governed, 123, "for")

    chain.advance_time(session, SETTINGS.voting_delay + 2)
    for proposal in (good, bad):
        gov.vote(holders[0], governed, proposal.proposal_id, "for")
        gov.vote(holders[1], governed, proposal.proposal_id, "for", "longer locks are fair")
        gov.vote(holders[2], governed, proposal.proposal_id, "against")
    with pytest.raises(ChainError, match="already voted"):
        gov.vote(holders[2], governed, good.proposal_id, "for")
    with pytest.raises(ChainError, match=r"queue: proposal \d+ is Active; voting ends at \d+"):
        gov.queue(session, governed, good.proposal_id)

    chain.advance_time(session, SETTINGS.voting_period + 2)
    status = gov.proposal_status(session, governed, good.proposal_id)
    assert (status.state, status.votes_for, status.votes_against) == ("Succeeded", 900 * UNIT, 100 * UNIT)
    assert status.changes == {p.label: v for p, v in changes.items()}
    gov.queue(session, governed, good.proposal_id)
    gov.queue(session, governed, bad.proposal_id)
    with pytest.raises(ChainError, match=r"waits in the timelock until \d+"):
        gov.execute(session, governed, good.proposal_id)

    chain.advance_time(session, SETTINGS.timelock_delay + 2)
    gov.execute(holders[2], governed, good.proposal_id)  # anyone executes
    assert gov.governed_parameters(session, governed) == {p.label: v for p, v in changes.items()}
    assert lic.parameters(session, governed) == lic.LicenseParameters(2 * 10**15, 2_000_000 * UNIT, 400 * 86_400,
                                                                       400 * 86_400, 90 * 86_400)
    dist = distributor_contract(session, governed.base()).functions
    assert (dist.rewardPerRound().call(), dist.rootDelay().call()) == (5_000 * UNIT, 2 * 86_400)
    assert gov.state(session, governed, good.proposal_id) is gov.ProposalState.EXECUTED
    assert lic.quote(session, governed, 3_000_000 * UNIT).required == 2_000 * UNIT
    with pytest.raises(ChainError, match=r"ParameterOutOfRange\(parameter=2, value=3600, min=86400"):
        gov.execute(session, governed, bad.proposal_id)
    assert lic.parameters(session, governed).lock_period == 400 * 86_400


def test_distributor_parameters_are_checked_against_its_bounds_before_sending(session, governed, institutions) -> None:
    with pytest.raises(ChainError, match=rf"slash-delay {UNSTAKE_DELAY + 1} is outside \[0, {UNSTAKE_DELAY}\] "
                                         r"\(ParameterOutOfRange\)"):
        gov.propose(institutions[0], governed, {GovParameter.SLASH_DELAY: UNSTAKE_DELAY + 1}, "Slow slashes")
    with pytest.raises(ChainError, match=r"reward-per-round 10{28} is outside|reward-per-round \d+ is outside"):
        gov.propose(institutions[0], governed, {GovParameter.REWARD_PER_ROUND: 10**28}, "More")
    with pytest.raises(ChainError, match=r"root-delay .* is outside \[0, 2592000\]"):
        gov.propose(institutions[0], governed, {GovParameter.ROOT_DELAY: 31 * 86_400}, "Slow roots")
    assert GovParameter.parse("reward_per_round") is GovParameter.parse("Reward-Per-Round")
    with pytest.raises(ChainError, match="unknown parameter 'colour'; known: reward-per-round, root-delay"):
        GovParameter.parse("colour")


def test_a_license_only_governor_cannot_propose_distributor_changes(session, deployment, institutions) -> None:
    """Over a single-operator deployment the timelock is not the distributor's admin: refused before sending."""
    ld = gov.deploy_governed_license(session, deployment, settings=SETTINGS)
    with pytest.raises(ChainError, match=r"the timelock 0x[0-9a-fA-F]{40} is not the distributor's admin"):
        gov.propose(session, ld, {GovParameter.REWARD_PER_ROUND: 1}, "Lower rewards")
    gov.propose(session, ld, {Parameter.STAKE_RATE: 1}, "License parameters still work")


def test_governance_pauses_and_unpauses_the_license_and_the_distributor(session, governed, institutions) -> None:
    holders = institutions[:2]
    for holder in holders:
        gov.delegate(holder, governed)
    chain.advance_time(session, 1)

    def passed(actions: list[Action], text: str) -> None:
        proposal = gov.propose(holders[0], governed, {}, text, actions)
        assert proposal.actions == [a.label for a in actions]
        chain.advance_time(session, SETTINGS.voting_delay + 2)
        for holder in holders:
            gov.vote(holder, governed, proposal.proposal_id, "for")
        chain.advance_time(session, SETTINGS.voting_period + 2)
        gov.queue(session, governed, proposal.proposal_id)
        chain.advance_time(session, SETTINGS.timelock_delay + 2)
        gov.execute(session, governed, proposal.proposal_id)
        assert gov.proposal_status(session, governed, proposal.proposal_id).actions == [a.label for a in actions]

    passed([Action.PAUSE_LICENSE, Action.PAUSE_DISTRIBUTOR], "Stop everything while we look at round 7")
    assert lic.paused(session, governed)
    assert distributor_contract(session, governed.base()).functions.paused().call()
    with pytest.raises(ChainError, match="license is paused by governance"):
        lic.pay_fee(holders[0], governed, 1)
    passed([Action.UNPAUSE_LICENSE, Action.UNPAUSE_DISTRIBUTOR], "Resume")
    assert not lic.paused(session, governed)
    with pytest.raises(ChainError, match="unknown action 'stop'"):
        Action.parse("stop")


def test_governed_license_has_no_other_admin(session, governed, caplog) -> None:
    assert governed.admin == governed.timelock
    with caplog.at_level(logging.WARNING, logger="fedlearn"):
        governed.check(session)  # all five contracts are this build's, immutables and all: nothing to warn about
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING, logger="fedlearn"):
        dataclasses.replace(governed, governor=governed.timelock).check(session)
    assert f"the governor at {governed.timelock} runs other code than this fedlearn's FederationGovernor" in caplog.text
    contract = lic.license_contract(session, governed)
    with pytest.raises(ChainError, match=rf"AccessControlUnauthorizedAccount\(account={session.address}"):
        transact(session, contract.functions.setParameter(int(Parameter.STAKE_RATE), 1), "set")
    timelock = session.w3.eth.contract(address=governed.timelock, abi=contract.abi)
    assert not contract.functions.hasRole(b"\x00" * 32, session.address).call()
    assert timelock.address == governed.admin


def test_a_proposal_without_quorum_is_defeated(session, institutions) -> None:
    big, small = institutions[:2]
    governed = _federation(session, {big.address: 950, small.address: 50})
    gov.delegate(small, governed)
    chain.advance_time(session, 1)
    proposal = gov.propose(small, governed, {GovParameter.REWARD_PER_ROUND: 0}, "Stop paying rewards")
    chain.advance_time(session, SETTINGS.voting_delay + 2)
    gov.vote(small, governed, proposal.proposal_id, "for")
    chain.advance_time(session, SETTINGS.voting_period + 2)
    assert gov.state(session, governed, proposal.proposal_id) is gov.ProposalState.DEFEATED  # 5% < 10% quorum
    with pytest.raises(ChainError, match=r"queue: proposal \d+ is Defeated; queue needs Succeeded"):
        gov.queue(session, governed, proposal.proposal_id)
