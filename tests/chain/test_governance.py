"""Token holders change the license parameters: propose → vote → queue → execute through the timelock."""

from __future__ import annotations

import pytest

from fedlearn import chain
from fedlearn.chain import governance as gov
from fedlearn.chain import license as lic
from fedlearn.chain.license import UNIT, Parameter
from fedlearn.chain.transactions import transact
from fedlearn.errors import ChainError

SETTINGS = gov.GovernanceSettings(voting_delay=60, voting_period=600, timelock_delay=300, quorum_percent=10)


@pytest.fixture
def governed(session, deployment) -> lic.LicenseDeployment:
    return gov.deploy_governed_license(session, deployment, settings=SETTINGS)


def test_walk_through_propose_vote_queue_execute(session, deployment, governed, institutions) -> None:
    # Three holders: 600 and 300 vote for, 100 against; quorum is 10% of 1,000.
    holders = institutions[:3]
    for holder, amount in zip(holders, (600, 300, 100)):
        chain.mint(session, deployment, holder.address, amount * UNIT)
        gov.delegate(holder, governed)
    chain.advance_time(session, 1)
    assert gov.voting_power(session, governed, holders[0].address) == 600 * UNIT

    changes = {
        Parameter.STAKE_RATE: 2 * 10**15,  # X = 0.002
        Parameter.REVENUE_THRESHOLD: 2_000_000 * UNIT,
        Parameter.LOCK_PERIOD: 400 * 86_400,
        Parameter.REWARD_PER_ROUND: 5_000 * UNIT,
    }
    good = gov.propose(holders[0], governed, changes, "Double X, raise the threshold, lengthen locks")
    # The CLI and library refuse an out-of-range value up front; the contract refuses it at execution.
    with pytest.raises(ChainError, match=r"lock-period 3600 is outside \[86400, 315360000\] \(ParameterOutOfRange\)"):
        gov.propose(holders[0], governed, {Parameter.LOCK_PERIOD: 3600}, "Lock for an hour")
    bad = gov.propose_calls(holders[0], governed, {Parameter.LOCK_PERIOD: 3600}, "Lock for an hour")
    assert gov.state(session, governed, good.proposal_id) is gov.ProposalState.PENDING
    with pytest.raises(ChainError, match=r"vote: proposal \d+ is Pending; voting opens at \d+"):
        gov.vote(holders[0], governed, good.proposal_id, "for")

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
    assert lic.parameters(session, governed) == lic.LicenseParameters(*changes.values())
    assert gov.state(session, governed, good.proposal_id) is gov.ProposalState.EXECUTED
    assert lic.quote(session, governed, 3_000_000 * UNIT).required == 2_000 * UNIT
    with pytest.raises(ChainError, match=r"ParameterOutOfRange\(parameter=2, value=3600, min=86400"):
        gov.execute(session, governed, bad.proposal_id)
    assert lic.parameters(session, governed).lock_period == 400 * 86_400


def test_governed_license_has_no_other_admin(session, governed) -> None:
    assert governed.admin == governed.timelock
    contract = lic.license_contract(session, governed)
    with pytest.raises(ChainError, match=rf"AccessControlUnauthorizedAccount\(account={session.address}"):
        transact(session, contract.functions.setParameter(int(Parameter.STAKE_RATE), 1), "set")
    timelock = session.w3.eth.contract(address=governed.timelock, abi=contract.abi)
    assert not contract.functions.hasRole(b"\x00" * 32, session.address).call()
    assert timelock.address == governed.admin


def test_a_proposal_without_quorum_is_defeated(session, deployment, governed, institutions) -> None:
    big, small = institutions[:2]
    chain.mint(session, deployment, big.address, 950 * UNIT)
    chain.mint(session, deployment, small.address, 50 * UNIT)
    gov.delegate(small, governed)
    chain.advance_time(session, 1)
    proposal = gov.propose(small, governed, {Parameter.REWARD_PER_ROUND: 0}, "Stop paying rewards")
    chain.advance_time(session, SETTINGS.voting_delay + 2)
    gov.vote(small, governed, proposal.proposal_id, "for")
    chain.advance_time(session, SETTINGS.voting_period + 2)
    assert gov.state(session, governed, proposal.proposal_id) is gov.ProposalState.DEFEATED  # 5% < 10% quorum
    with pytest.raises(ChainError, match=r"queue: proposal \d+ is Defeated; queue needs Succeeded"):
        gov.queue(session, governed, proposal.proposal_id)
