"""Token-holder governance of the license parameters: a Governor with a TimelockController that owns them.

Deployment needs no trusted admin: the timelock is created with the governor's address (predicted from the
signer's nonce) as its only proposer, anyone as executor and no admin, and the license names the timelock its
admin. Proposals change parameters through `ModelLicense.setParameter`; out-of-range values are refused here
before anything is sent, and would revert with ParameterOutOfRange at execution anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from enum import IntEnum
from typing import Any

from eth_utils import keccak, to_checksum_address
from web3.contract import Contract
from web3.logs import DISCARD

from fedlearn.chain.artifacts import GOVERNOR, TIMELOCK, load_artifact
from fedlearn.chain.deployment import Deployment, token_contract
from fedlearn.chain.license import (
    ZERO_ADDRESS,
    LicenseDeployment,
    LicenseParameters,
    Parameter,
    check_parameter,
    deploy_license,
    license_contract,
)
from fedlearn.chain.session import ChainSession
from fedlearn.chain.transactions import TxResult, call, deploy_contract, transact
from fedlearn.errors import ChainError


@dataclass(frozen=True)
class GovernanceSettings:
    """Seconds before a vote opens, seconds it stays open, seconds a passed proposal waits in the timelock, the
    quorum in percent of the supply and the votes a proposer needs."""

    voting_delay: int = 86_400
    voting_period: int = 7 * 86_400
    timelock_delay: int = 2 * 86_400
    quorum_percent: int = 4
    proposal_threshold: int = 0

    def check(self) -> GovernanceSettings:
        if not 0 <= self.voting_delay < 2**48:
            raise ChainError(f"voting delay must be in [0, 2**48) s, got {self.voting_delay}")
        if not 0 < self.voting_period < 2**32:
            raise ChainError(f"voting period must be in (0, 2**32) s, got {self.voting_period}")
        if not 0 <= self.timelock_delay < 2**64:
            raise ChainError(f"timelock delay must be in [0, 2**64) s, got {self.timelock_delay}")
        if not 0 <= self.quorum_percent <= 100:
            raise ChainError(f"quorum must be a percentage in [0, 100], got {self.quorum_percent}")
        if self.proposal_threshold < 0:
            raise ChainError(f"proposal threshold must be >= 0, got {self.proposal_threshold}")
        return self


class ProposalState(IntEnum):
    """OpenZeppelin's IGovernor.ProposalState."""

    PENDING = 0
    ACTIVE = 1
    CANCELED = 2
    DEFEATED = 3
    SUCCEEDED = 4
    QUEUED = 5
    EXPIRED = 6
    EXECUTED = 7

    @property
    def label(self) -> str:
        return self.name.capitalize()


SUPPORT = {"against": 0, "for": 1, "abstain": 2}


def _create_address(sender: str, nonce: int) -> str:
    """The address a contract created by `sender` with `nonce` gets (CREATE)."""
    # RLP of [address, nonce]: short enough that every length fits its prefix byte.
    if nonce == 0:
        encoded_nonce = b"\x80"
    elif nonce < 0x80:
        encoded_nonce = bytes([nonce])
    else:
        raw = nonce.to_bytes((nonce.bit_length() + 7) // 8, "big")
        encoded_nonce = bytes([0x80 + len(raw)]) + raw
    payload = b"\x94" + bytes.fromhex(sender[2:]) + encoded_nonce
    return to_checksum_address(keccak(bytes([0xC0 + len(payload)]) + payload)[12:])


def deploy_governed_license(
    session: ChainSession,
    deployment: Deployment,
    *,
    attester: str | None = None,
    params: LicenseParameters | None = None,
    settings: GovernanceSettings = GovernanceSettings(),
) -> LicenseDeployment:
    """Deploys timelock, governor and license; the timelock (driven by votes of delegated tokens) is the
    license's admin and the governor its only proposer. The signer keeps no power over the parameters.
    `params` defaults to LicenseParameters()."""
    if params is None:
        params = LicenseParameters()
    params.check()
    settings.check()
    nonce = session.w3.eth.get_transaction_count(session.address, "pending")
    governor_at = _create_address(session.address, nonce + 1)
    w3 = session.w3
    tl_art, gov_art = load_artifact(TIMELOCK), load_artifact(GOVERNOR)
    tl_tx = deploy_contract(
        session,
        w3.eth.contract(abi=tl_art.abi, bytecode=tl_art.bytecode),
        [settings.timelock_delay, [governor_at], [ZERO_ADDRESS], ZERO_ADDRESS],
        "deploying timelock",
    )
    timelock = to_checksum_address(tl_tx.receipt["contractAddress"])
    gov_tx = deploy_contract(
        session,
        w3.eth.contract(abi=gov_art.abi, bytecode=gov_art.bytecode),
        [
            deployment.token,
            timelock,
            settings.voting_delay,
            settings.voting_period,
            settings.proposal_threshold,
            settings.quorum_percent,
        ],
        "deploying governor",
    )
    governor = to_checksum_address(gov_tx.receipt["contractAddress"])
    if governor != governor_at:
        raise ChainError(
            f"governor landed at {governor}, not {governor_at}: another transaction from {session.address} "
            "interleaved; the timelock has no proposer, deploy again"
        )
    ld = deploy_license(session, deployment, admin=timelock, attester=attester, params=params)
    return replace(
        ld,
        governor=governor,
        timelock=timelock,
        artifacts={**ld.artifacts, GOVERNOR: gov_art.sha256, TIMELOCK: tl_art.sha256},
    )


def governor_contract(session: ChainSession, ld: LicenseDeployment) -> Contract:
    if ld.governor is None:
        raise ChainError("this license has no governance: its parameters are set by its admin directly")
    return session.w3.eth.contract(address=to_checksum_address(ld.governor), abi=load_artifact(GOVERNOR).abi)


def delegate(session: ChainSession, ld: LicenseDeployment, to: str | None = None) -> TxResult:
    """Delegates the signer's votes to `to` (default: itself); tokens vote only once delegated."""
    to = to_checksum_address(to) if to else session.address
    token = token_contract(session, ld.base())
    return transact(session, token.functions.delegate(to), f"delegating votes to {to}")


def voting_power(session: ChainSession, ld: LicenseDeployment, account: str) -> int:
    fn = token_contract(session, ld.base()).functions.getVotes(to_checksum_address(account))
    return int(call(fn, "reading votes"))


@dataclass(frozen=True)
class Proposal:
    """A proposal's actions (what the governor needs to queue and execute it) and where it stands."""

    proposal_id: int
    targets: list[str]
    values: list[int]
    calldatas: list[bytes]
    description: str
    changes: dict[str, int]  # parameter label -> value, decoded from the calldata

    @property
    def description_hash(self) -> bytes:
        return keccak(text=self.description)


def _calls(session: ChainSession, ld: LicenseDeployment, changes: Mapping[Parameter, int]) -> list[bytes]:
    lic = license_contract(session, ld)
    return [bytes.fromhex(lic.encode_abi("setParameter", [int(p), v])[2:]) for p, v in changes.items()]


def propose_calls(
    session: ChainSession, ld: LicenseDeployment, changes: Mapping[Parameter, int], description: str
) -> Proposal:
    """Proposes `changes` without checking their range (tests use it to see the contract refuse them)."""
    if not changes:
        raise ChainError("a proposal needs at least one parameter change")
    if not description.strip():
        raise ChainError("a proposal needs a description")
    gov = governor_contract(session, ld)
    calldatas = _calls(session, ld, changes)
    targets = [ld.license] * len(calldatas)
    values = [0] * len(calldatas)
    tx = transact(session, gov.functions.propose(targets, values, calldatas, description), "propose")
    proposal_id = int(gov.events.ProposalCreated().process_receipt(tx.receipt, errors=DISCARD)[0]["args"]["proposalId"])
    return Proposal(proposal_id, targets, values, calldatas, description, {p.label: v for p, v in changes.items()})


def propose(
    session: ChainSession, ld: LicenseDeployment, changes: Mapping[Parameter, int], description: str
) -> Proposal:
    """Proposes setting each parameter of `changes` to its value; an out-of-range value is refused here."""
    for p, value in changes.items():
        check_parameter(p, value)
    gov = governor_contract(session, ld)
    threshold = call(gov.functions.proposalThreshold(), "reading threshold")
    if threshold:
        now = int(session.w3.eth.get_block("latest")["timestamp"])
        votes = call(gov.functions.getVotes(session.address, now - 1), "reading votes")
        if votes < threshold:
            raise ChainError(f"propose: {session.address} has {votes} votes, the proposal threshold is {threshold}")
    return propose_calls(session, ld, changes, description)


def find_proposal(session: ChainSession, ld: LicenseDeployment, proposal_id: int) -> Proposal:
    """A proposal's actions, read back from its ProposalCreated event."""
    gov = governor_contract(session, ld)
    lic = license_contract(session, ld)
    for log in gov.events.ProposalCreated().get_logs(from_block=ld.block):
        a = log["args"]
        if int(a["proposalId"]) != proposal_id:
            continue
        changes = {}
        for target, data in zip(a["targets"], a["calldatas"]):
            if to_checksum_address(target) == to_checksum_address(ld.license):
                fn, args = lic.decode_function_input(bytes(data))
                if fn.fn_name == "setParameter":
                    changes[Parameter(args["p"]).label] = int(args["value"])
        return Proposal(
            proposal_id, list(a["targets"]), [int(v) for v in a["values"]], [bytes(c) for c in a["calldatas"]],
            a["description"], changes,
        )
    raise ChainError(f"no proposal {proposal_id} on governor {ld.governor}")


def state(session: ChainSession, ld: LicenseDeployment, proposal_id: int) -> ProposalState:
    fn = governor_contract(session, ld).functions.state(proposal_id)
    return ProposalState(call(fn, f"reading proposal {proposal_id}"))


def _expect(
    session: ChainSession, ld: LicenseDeployment, proposal_id: int, action: str, *wanted: ProposalState
) -> None:
    now = state(session, ld, proposal_id)
    if now not in wanted:
        gov = governor_contract(session, ld)
        when = ""
        if now is ProposalState.PENDING:
            when = f"; voting opens at {call(gov.functions.proposalSnapshot(proposal_id), 'reading')} (timestamp)"
        elif now is ProposalState.ACTIVE:
            when = f"; voting ends at {call(gov.functions.proposalDeadline(proposal_id), 'reading')} (timestamp)"
        need = " or ".join(w.label for w in wanted)
        raise ChainError(f"{action}: proposal {proposal_id} is {now.label}{when}; {action} needs {need}")


def vote(session: ChainSession, ld: LicenseDeployment, proposal_id: int, support: str, reason: str = "") -> TxResult:
    """Casts the signer's votes (delegated at the proposal's snapshot) for, against or abstaining."""
    if support not in SUPPORT:
        raise ChainError(f"vote must be one of {', '.join(SUPPORT)}, got {support!r}")
    _expect(session, ld, proposal_id, "vote", ProposalState.ACTIVE)
    gov = governor_contract(session, ld)
    if call(gov.functions.hasVoted(proposal_id, session.address), "reading votes"):
        raise ChainError(f"vote: {session.address} already voted on proposal {proposal_id}")
    fn = gov.functions.castVoteWithReason(proposal_id, SUPPORT[support], reason)
    return transact(session, fn, f"vote on proposal {proposal_id}")


def queue(session: ChainSession, ld: LicenseDeployment, proposal_id: int) -> TxResult:
    """Queues a passed proposal in the timelock."""
    _expect(session, ld, proposal_id, "queue", ProposalState.SUCCEEDED)
    p = find_proposal(session, ld, proposal_id)
    fn = governor_contract(session, ld).functions.queue(p.targets, p.values, p.calldatas, p.description_hash)
    return transact(session, fn, f"queue proposal {proposal_id}")


def execute(session: ChainSession, ld: LicenseDeployment, proposal_id: int) -> TxResult:
    """Runs a queued proposal once the timelock delay has passed; anyone may."""
    _expect(session, ld, proposal_id, "execute", ProposalState.QUEUED)
    gov = governor_contract(session, ld)
    eta = int(call(gov.functions.proposalEta(proposal_id), "reading eta"))
    now = int(session.w3.eth.get_block("latest")["timestamp"])
    if now + 1 < eta:  # the next block is at least one second later
        raise ChainError(f"execute: proposal {proposal_id} waits in the timelock until {eta} (now {now})")
    p = find_proposal(session, ld, proposal_id)
    fn = gov.functions.execute(p.targets, p.values, p.calldatas, p.description_hash)
    return transact(session, fn, f"execute proposal {proposal_id}")


@dataclass(frozen=True)
class ProposalStatus:
    proposal_id: int
    state: str
    description: str
    changes: dict[str, int]
    votes_for: int
    votes_against: int
    votes_abstain: int
    quorum: int
    snapshot: int
    deadline: int
    eta: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def proposal_status(session: ChainSession, ld: LicenseDeployment, proposal_id: int) -> ProposalStatus:
    gov = governor_contract(session, ld)
    p = find_proposal(session, ld, proposal_id)
    against, for_, abstain = call(gov.functions.proposalVotes(proposal_id), "reading votes")
    snapshot = int(call(gov.functions.proposalSnapshot(proposal_id), "reading"))
    now = int(session.w3.eth.get_block("latest")["timestamp"])
    quorum = int(call(gov.functions.quorum(min(snapshot, now - 1)), "reading quorum"))
    return ProposalStatus(
        proposal_id=proposal_id,
        state=state(session, ld, proposal_id).label,
        description=p.description,
        changes=p.changes,
        votes_for=int(for_),
        votes_against=int(against),
        votes_abstain=int(abstain),
        quorum=quorum,
        snapshot=snapshot,
        deadline=int(call(gov.functions.proposalDeadline(proposal_id), "reading")),
        eta=int(call(gov.functions.proposalEta(proposal_id), "reading")),
    )


def proposal_ids(session: ChainSession, ld: LicenseDeployment) -> list[int]:
    gov = governor_contract(session, ld)
    return [int(log["args"]["proposalId"]) for log in gov.events.ProposalCreated().get_logs(from_block=ld.block)]
