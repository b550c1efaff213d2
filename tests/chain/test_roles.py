"""Who holds which role after `deploy_governed`: every role of every contract, read from the events since block 0.

No externally owned account (an address without code) keeps an admin, minter or pauser role: the timelock holds
them, driven by the governor. The deployer cannot mint itself a majority and pass a proposal alone; the supply cap
holds.
"""

from __future__ import annotations

import pytest
from web3 import Web3

from fedlearn import chain
from fedlearn.chain import governance as gov
from fedlearn.chain import license as lic
from fedlearn.chain.artifacts import TIMELOCK, load_artifact
from fedlearn.chain.deployment import distributor_contract, token_contract
from fedlearn.chain.governance import GovParameter
from fedlearn.chain.license import UNIT
from fedlearn.chain.transactions import transact
from fedlearn.errors import ChainError
from tests.chain.conftest import UNSTAKE_DELAY

SETTINGS = gov.GovernanceSettings(voting_delay=60, voting_period=600, timelock_delay=300, quorum_percent=10)
ADMIN = b"\x00" * 32
ZERO = "0x" + "00" * 20


def _role(name: str) -> bytes:
    return ADMIN if name == "DEFAULT_ADMIN_ROLE" else bytes(Web3.keccak(text=name))


ROLES = {_role(n): n for n in ("DEFAULT_ADMIN_ROLE", "MINTER_ROLE", "COORDINATOR_ROLE", "GUARDIAN_ROLE",
                                "ATTESTER_ROLE", "PROPOSER_ROLE", "CANCELLER_ROLE", "EXECUTOR_ROLE")}
# Roles that govern (admin, mint, pause, propose or cancel governance): never an externally owned account's.
POWER = {"DEFAULT_ADMIN_ROLE", "MINTER_ROLE", "PROPOSER_ROLE", "CANCELLER_ROLE"}


@pytest.fixture
def governed(session: chain.ChainSession, institutions) -> gov.GovernedDeployment:
    """Dev account 1 coordinates, 2 guards, 3 attests; institutions 0 and 1 get stake allowances."""
    return gov.deploy_governed(
        session, coordinator=chain.dev_account(1).address, guardian=chain.dev_account(2).address,
        attester=chain.dev_account(3).address, reward_pool=10_000 * UNIT,
        allocations={institutions[0].address: 500 * UNIT, institutions[1].address: 500 * UNIT},
        unstake_delay=UNSTAKE_DELAY, root_delay=0, slash_delay=0, settings=SETTINGS,
    )


def _holders(session: chain.ChainSession, contract) -> dict[str, set[str]]:
    """Every role anyone holds now: each RoleGranted since block 0, kept if hasRole still says so."""
    seen = {(bytes(log["args"]["role"]), log["args"]["account"])
            for log in contract.events.RoleGranted().get_logs(from_block=0)}
    out: dict[str, set[str]] = {}
    for role, account in seen:
        if contract.functions.hasRole(role, account).call():
            out.setdefault(ROLES.get(role, "0x" + role.hex()), set()).add(account)
    return out


def test_every_role_of_every_contract_after_a_governed_deployment(session, governed) -> None:
    d, ld = governed.deployment, governed.license
    timelock, governor = d.timelock, d.governor
    assert d.admin == timelock == ld.timelock and d.license == ld.license and governor == ld.governor
    contracts = {
        "token": token_contract(session, d),
        "distributor": distributor_contract(session, d),
        "license": lic.license_contract(session, ld),
        "timelock": session.w3.eth.contract(address=timelock, abi=load_artifact(TIMELOCK).abi),
    }
    expected = {
        "token": {"DEFAULT_ADMIN_ROLE": {timelock}, "MINTER_ROLE": {timelock}},
        "distributor": {"DEFAULT_ADMIN_ROLE": {timelock}, "COORDINATOR_ROLE": {chain.dev_account(1).address},
                        "GUARDIAN_ROLE": {chain.dev_account(2).address}},
        "license": {"DEFAULT_ADMIN_ROLE": {timelock}, "ATTESTER_ROLE": {chain.dev_account(3).address}},
        # The timelock administers itself; only the governor proposes and cancels; anyone (0x0) executes.
        "timelock": {"DEFAULT_ADMIN_ROLE": {timelock}, "PROPOSER_ROLE": {governor}, "CANCELLER_ROLE": {governor},
                     "EXECUTOR_ROLE": {ZERO}},
    }
    for name, contract in contracts.items():
        holders = _holders(session, contract)
        assert holders == expected[name], name
        for role, accounts in holders.items():
            # Every role is administered by DEFAULT_ADMIN_ROLE, itself the timelock's.
            assert bytes(contract.functions.getRoleAdmin(_role(role)).call()) == ADMIN, (name, role)
            if role in POWER:
                for account in accounts:
                    assert session.w3.eth.get_code(account), f"{name} {role} held by {account}, which has no code"
    # The governor itself has no roles to hand out, and the deployer renounced all it held.
    assert not any(f["name"] == "hasRole" for f in gov.governor_contract(session, ld).abi if "name" in f)
    assert governed.deployer_roles == [] and gov.deployer_roles(session, d, ld, session.address) == []
    revoked = {(bytes(log["args"]["role"]), log["args"]["account"])
               for c in contracts.values() for log in c.events.RoleRevoked().get_logs(from_block=0)}
    assert revoked == {(ADMIN, session.address), (_role("MINTER_ROLE"), session.address)}
    # The initial allocation went to the pool and the named recipients; the deployer holds no tokens.
    token = contracts["token"].functions
    assert token.balanceOf(session.address).call() == 0
    assert distributor_contract(session, d).functions.totalFunded().call() == 10_000 * UNIT
    assert token.totalSupply().call() == 11_000 * UNIT


def test_a_coordinating_deployer_keeps_only_the_bounded_coordinator_and_attester_roles(session) -> None:
    got = gov.deploy_governed(session, unstake_delay=UNSTAKE_DELAY, settings=SETTINGS)
    assert got.deployer_roles == ["distributor COORDINATOR_ROLE", "license ATTESTER_ROLE"]


def test_the_deployer_cannot_mint_itself_a_majority_or_pass_a_proposal_alone(session, governed, institutions) -> None:
    """The exploit of issue 11: the deployer minted itself a majority and passed a proposal alone. Now it holds
    no minter role, no admin role and no votes."""
    d, ld = governed.deployment, governed.license
    me = session.address
    token = token_contract(session, d)
    unauthorized = rf"AccessControlUnauthorizedAccount\(account={me}"
    with pytest.raises(ChainError, match=unauthorized + r", neededRole=0x9f2df0fed2c77648"):
        transact(session, token.functions.mint(me, 10**27), "mint")
    with pytest.raises(ChainError, match=unauthorized):
        chain.mint(session, d, me, 1)
    with pytest.raises(ChainError, match=unauthorized):
        transact(session, token.functions.grantRole(_role("MINTER_ROLE"), me), "grant")
    dist = distributor_contract(session, d).functions
    license_ = lic.license_contract(session, ld).functions
    for fn in (dist.setParameter(0, 10**27), dist.pause(), dist.defund(me, 1), dist.grantRole(ADMIN, me),
               license_.setParameter(0, 0), license_.pause(), license_.setDustRecipient(me)):
        with pytest.raises(ChainError, match=unauthorized):
            transact(session, fn, "admin call")

    gov.delegate(session, ld)
    chain.advance_time(session, 1)
    assert gov.voting_power(session, ld, me) == 0
    grab = gov.propose(session, ld, {GovParameter.REWARD_PER_ROUND: 10**27}, "Pay the deployer")
    chain.advance_time(session, SETTINGS.voting_delay + 2)
    with pytest.raises(ChainError, match="had no voting power at proposal"):  # refused before it is sent
        gov.vote(session, ld, grab.proposal_id, "for")
    chain.advance_time(session, SETTINGS.voting_period + 2)
    assert gov.state(session, ld, grab.proposal_id) is gov.ProposalState.DEFEATED
    with pytest.raises(ChainError, match=r"queue: proposal \d+ is Defeated"):
        gov.queue(session, ld, grab.proposal_id)
    assert dist.rewardPerRound().call() != 10**27


def test_the_token_cap_holds(session, institutions) -> None:
    capped = chain.deploy(session, token_cap=1_000)
    chain.mint(session, capped, institutions[0].address, 1_000)
    with pytest.raises(ChainError, match=r"ERC20ExceededCap\(increasedSupply=1001, cap=1000\)"):
        chain.mint(session, capped, institutions[0].address, 1)
    assert token_contract(session, capped).functions.cap().call() == 1_000
    # A governed deployment refuses an allocation above the cap before sending anything.
    nonce = session.w3.eth.get_transaction_count(session.address)
    with pytest.raises(ChainError, match=r"initial allocation 1001 exceeds the token cap 1000 \(ERC20ExceededCap\)"):
        gov.deploy_governed(session, reward_pool=1_000, allocations={institutions[1].address: 1}, token_cap=1_000)
    with pytest.raises(ChainError, match="allocation to the deployer .* refused"):
        gov.deploy_governed(session, allocations={session.address: 1})
    assert session.w3.eth.get_transaction_count(session.address) == nonce
