"""Token-holder governance of the federation: a Governor with a TimelockController that holds every admin role.

`deploy_governed` deploys token, distributor, timelock, governor and license, mints the initial allocation (the
reward pool and named recipients, never the deployer), hands the token's admin and minter roles and the
distributor's and license's admin roles to the timelock, and has the deployer renounce every role it held: no
externally owned account keeps an admin, minter or pauser role. What stays with keys is bounded by the contracts:
the coordinator settles rate-limited roots that wait out a challenge window and proposes slashes that wait out a
veto window; a guardian can only revoke pending roots and veto slashes; an attester only moves the stake a
licensee must lock.

Proposals change the distributor's parameters (reward per round, root delay, slash delay) and the license's (stake
rate, revenue threshold, lock period, attestation lifetime, fee claim period) under one name space, and can pause
or unpause either contract. Out-of-range values are refused here before anything is sent, and would revert with
ParameterOutOfRange at execution anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import Enum, IntEnum
from typing import Any

from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from fedlearn.chain.addresses import address_of
from fedlearn.chain.artifacts import GOVERNOR, TIMELOCK, contract_at, load_artifact
from fedlearn.chain.deployment import (
    DEFAULT_REWARD_PER_ROUND,
    DEFAULT_ROOT_DELAY_S,
    DEFAULT_SLASH_DELAY_S,
    DEFAULT_TOKEN_CAP,
    DEFAULT_UNSTAKE_DELAY_S,
    Deployment,
    check_parameters,
    deploy,
    distributor_contract,
    token_contract,
)
from fedlearn.chain.license import (
    BOUNDS,
    DURATIONS,
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

ADMIN_ROLE = b"\x00" * 32
MINTER_ROLE = bytes(Web3.keccak(text="MINTER_ROLE"))
GUARDIAN_ROLE = bytes(Web3.keccak(text="GUARDIAN_ROLE"))


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


class GovParameter(Enum):
    """Every governed parameter of the federation, one name space: (contract, index in its `Parameter` enum)."""

    REWARD_PER_ROUND = ("distributor", 0)
    ROOT_DELAY = ("distributor", 1)
    SLASH_DELAY = ("distributor", 2)
    STAKE_RATE = ("license", int(Parameter.STAKE_RATE))
    REVENUE_THRESHOLD = ("license", int(Parameter.REVENUE_THRESHOLD))
    LOCK_PERIOD = ("license", int(Parameter.LOCK_PERIOD))
    ATTESTATION_TTL = ("license", int(Parameter.ATTESTATION_TTL))
    FEE_CLAIM_PERIOD = ("license", int(Parameter.FEE_CLAIM_PERIOD))

    @property
    def target(self) -> str:
        return str(self.value[0])

    @property
    def index(self) -> int:
        return int(self.value[1])

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @property
    def is_duration(self) -> bool:
        """Seconds (the CLI reads a duration); else token units, or X for the stake rate."""
        if self.target == "distributor":
            return self is not GovParameter.REWARD_PER_ROUND
        return Parameter(self.index) in DURATIONS

    @classmethod
    def of(cls, p: GovParameter | Parameter) -> GovParameter:
        """The governed name of a license `Parameter` (a GovParameter passes through)."""
        return p if isinstance(p, GovParameter) else cls[Parameter(p).name]

    @classmethod
    def parse(cls, text: str) -> GovParameter:
        return _by_label(cls, text, "parameter")


class Action(Enum):
    """Proposal actions that are not parameter changes: (contract, function)."""

    PAUSE_LICENSE = ("license", "pause")
    UNPAUSE_LICENSE = ("license", "unpause")
    PAUSE_DISTRIBUTOR = ("distributor", "pause")
    UNPAUSE_DISTRIBUTOR = ("distributor", "unpause")

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> Action:
        return _by_label(cls, text, "action")


def _by_label(kind: Any, text: str, what: str) -> Any:
    """The member of enum `kind` whose label (lower case, hyphens) `text` names, underscores or hyphens."""
    key = text.strip().lower().replace("_", "-")
    for member in kind:
        if key == member.label:
            return member
    raise ChainError(f"unknown {what} {text!r}; known: {', '.join(m.label for m in kind)}")


def _target_contract(session: ChainSession, ld: LicenseDeployment, target: str) -> Contract:
    if target == "license":
        return license_contract(session, ld)
    return distributor_contract(session, ld.base())


def parameter_bounds(session: ChainSession, ld: LicenseDeployment, p: GovParameter) -> tuple[int, int]:
    """`[min, max]` for `p`: the license's are fixed (mirrored in BOUNDS); the distributor's are read from it (the
    slash delay is bounded by the unstake delay)."""
    if p.target == "license":
        return BOUNDS[Parameter(p.index)]
    low, high = call(distributor_contract(session, ld.base()).functions.parameterBounds(p.index), "reading bounds")
    return int(low), int(high)


def check_value(session: ChainSession, ld: LicenseDeployment, p: GovParameter | Parameter, value: int) -> int:
    """`value` if it lies within the bounds of `p` on its contract, else one ChainError line."""
    p = GovParameter.of(p)
    if p.target == "license":
        return check_parameter(Parameter(p.index), value)
    low, high = parameter_bounds(session, ld, p)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ChainError(f"{p.label} {value!r} is outside [{low}, {high}] (ParameterOutOfRange)")
    return value


def governed_parameters(session: ChainSession, ld: LicenseDeployment) -> dict[str, int]:
    """Every governed parameter's current value on chain, by label."""
    dist = distributor_contract(session, ld.base()).functions
    lic = license_contract(session, ld).functions
    out = {
        GovParameter.REWARD_PER_ROUND.label: int(call(dist.rewardPerRound(), "reading parameters")),
        GovParameter.ROOT_DELAY.label: int(call(dist.rootDelay(), "reading parameters")),
        GovParameter.SLASH_DELAY.label: int(call(dist.slashDelay(), "reading parameters")),
    }
    for p in GovParameter:
        if p.target == "license":
            out[p.label] = int(call(lic.parameter(p.index), "reading parameters"))
    return out


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


def _deploy_governance(
    session: ChainSession, token: str, settings: GovernanceSettings
) -> tuple[str, str, dict[str, str]]:
    """Timelock (the governor its only proposer and canceller, anyone executes, no admin but itself) and governor
    over `token`'s votes. Returns (timelock, governor, artifact hashes)."""
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
        [token, timelock, settings.voting_delay, settings.voting_period, settings.proposal_threshold,
         settings.quorum_percent],
        "deploying governor",
    )
    governor = to_checksum_address(gov_tx.receipt["contractAddress"])
    if governor != governor_at:
        raise ChainError(
            f"governor landed at {governor}, not {governor_at}: another transaction from {session.address} "
            "interleaved; the timelock has no proposer, deploy again"
        )
    return timelock, governor, {GOVERNOR: gov_art.sha256, TIMELOCK: tl_art.sha256}


def deploy_governed_license(
    session: ChainSession,
    deployment: Deployment,
    *,
    attester: str | None = None,
    dust_recipient: str | None = None,
    params: LicenseParameters | None = None,
    settings: GovernanceSettings = GovernanceSettings(),
) -> LicenseDeployment:
    """Deploys timelock, governor and license over an existing token and distributor; the timelock (driven by
    votes of delegated tokens) is the license's admin and, by default, its dust recipient. The token's and the
    distributor's roles stay where they are: `deploy_governed` is the deployment where no key keeps power.
    `params` defaults to LicenseParameters()."""
    if params is None:
        params = LicenseParameters()
    params.check()
    settings.check()
    timelock, governor, artifacts = _deploy_governance(session, deployment.token, settings)
    ld = deploy_license(session, deployment, admin=timelock, attester=attester,
                        dust_recipient=dust_recipient or timelock, params=params)
    return replace(ld, governor=governor, timelock=timelock, artifacts={**ld.artifacts, **artifacts})


@dataclass(frozen=True)
class GovernedDeployment:
    """A federation deployed with no externally owned account holding power: the base deployment (its admin is
    the timelock), the license with its governor and timelock, and what the deployer kept (bounded roles only)."""

    deployment: Deployment
    license: LicenseDeployment
    deployer: str
    deployer_roles: list[str]  # roles the deployer still holds, e.g. COORDINATOR_ROLE when it coordinates


def _nonnegative(amount: int, what: str) -> int:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        raise ChainError(f"{what} must be a non-negative integer number of token units, got {amount!r}")
    return amount


def _nonzero_address(value: str, what: str) -> str:
    address = address_of(value, what)
    if int(address, 16) == 0:
        raise ChainError(f"{what} cannot be the zero address")
    return address


def deploy_governed(
    session: ChainSession,
    *,
    coordinator: str | None = None,
    guardian: str | None = None,
    attester: str | None = None,
    dust_recipient: str | None = None,
    reward_pool: int = 0,
    allocations: Mapping[str, int] | None = None,
    unstake_delay: int = DEFAULT_UNSTAKE_DELAY_S,
    reward_per_round: int = DEFAULT_REWARD_PER_ROUND,
    root_delay: int = DEFAULT_ROOT_DELAY_S,
    slash_delay: int = DEFAULT_SLASH_DELAY_S,
    token_cap: int = DEFAULT_TOKEN_CAP,
    params: LicenseParameters | None = None,
    settings: GovernanceSettings = GovernanceSettings(),
) -> GovernedDeployment:
    """Deploys a federation that no key governs.

    In order, signed by the session's account (the deployer): token and distributor (the deployer their admin for
    now), timelock and governor, the license (the timelock its admin from the start); mints `reward_pool` into the
    distributor's pool and each of `allocations` (address -> token units: stake allowances, a treasury) to its
    recipient, never to the deployer, so that it has no votes; grants the token's DEFAULT_ADMIN_ROLE and
    MINTER_ROLE and the distributor's DEFAULT_ADMIN_ROLE to the timelock and GUARDIAN_ROLE to `guardian` (if
    named); then renounces every admin and minter role it held, and checks that it holds none.

    The coordinator (default: the deployer) keeps COORDINATOR_ROLE and the attester (default: the deployer)
    ATTESTER_ROLE: both are bounded by the contracts (rate-limited roots pending for the root delay, slashes held
    for the veto window; attestations move only the stake a licensee must lock), and governance can revoke them.
    Every bad input is refused before anything is sent."""
    me = session.address
    coordinator = _nonzero_address(coordinator, "coordinator") if coordinator else me
    guardian = _nonzero_address(guardian, "guardian") if guardian else None
    attester = _nonzero_address(attester, "attester") if attester else me
    dust = _nonzero_address(dust_recipient, "dust recipient") if dust_recipient else None
    params = (params or LicenseParameters()).check()
    settings.check()
    check_parameters(unstake_delay=unstake_delay, reward_per_round=reward_per_round, root_delay=root_delay,
                     slash_delay=slash_delay, token_cap=token_cap)
    _nonnegative(reward_pool, "reward pool")
    minted: dict[str, int] = {}
    for account, amount in (allocations or {}).items():
        to = _nonzero_address(account, "allocation recipient")
        if to == me:
            raise ChainError(f"allocation to the deployer {me} refused: it would vote with what it minted itself; "
                             "allocate to the institutions or the treasury")
        minted[to] = minted.get(to, 0) + _nonnegative(amount, f"allocation to {to}")
    total = reward_pool + sum(minted.values())
    if total > token_cap:
        raise ChainError(f"the initial allocation {total} exceeds the token cap {token_cap} (ERC20ExceededCap)")

    base = deploy(session, admin=me, coordinator=coordinator, unstake_delay=unstake_delay,
                  reward_per_round=reward_per_round, root_delay=root_delay, slash_delay=slash_delay,
                  token_cap=token_cap)
    timelock, governor, artifacts = _deploy_governance(session, base.token, settings)
    ld = deploy_license(session, base, admin=timelock, attester=attester, dust_recipient=dust or timelock,
                        params=params)
    ld = replace(ld, governor=governor, timelock=timelock, artifacts={**ld.artifacts, **artifacts})

    token = token_contract(session, base).functions
    dist = distributor_contract(session, base).functions
    if reward_pool:
        transact(session, token.mint(me, reward_pool), "minting the reward pool")
        transact(session, token.approve(base.distributor, reward_pool), "approving the distributor")
        transact(session, dist.fund(reward_pool), "funding the reward pool")
    for to, amount in minted.items():
        if amount:
            transact(session, token.mint(to, amount), f"minting the allocation of {to}")
    if guardian:
        transact(session, dist.grantRole(GUARDIAN_ROLE, guardian), "granting the guardian role")
    for fn, what in (
        (token.grantRole(ADMIN_ROLE, timelock), "granting the token's admin role to the timelock"),
        (token.grantRole(MINTER_ROLE, timelock), "granting the token's minter role to the timelock"),
        (dist.grantRole(ADMIN_ROLE, timelock), "granting the distributor's admin role to the timelock"),
        # Admin last: renouncing it first would leave nobody to renounce the minter role for.
        (token.renounceRole(MINTER_ROLE, me), "renouncing the token's minter role"),
        (token.renounceRole(ADMIN_ROLE, me), "renouncing the token's admin role"),
        (dist.renounceRole(ADMIN_ROLE, me), "renouncing the distributor's admin role"),
    ):
        transact(session, fn, what)

    kept = deployer_roles(session, base, ld, me)
    powerful = [r for r in kept if r not in ("distributor COORDINATOR_ROLE", "license ATTESTER_ROLE")]
    if powerful:
        raise ChainError(f"governed deployment incomplete: the deployer still holds {', '.join(powerful)}")
    governed = replace(base, admin=timelock, governor=governor, timelock=timelock, license=ld.license,
                       artifacts={**base.artifacts, **ld.artifacts})
    return GovernedDeployment(governed, ld, me, kept)


ROLE_NAMES = ("DEFAULT_ADMIN_ROLE", "MINTER_ROLE", "COORDINATOR_ROLE", "GUARDIAN_ROLE", "ATTESTER_ROLE")


def role_id(name: str) -> bytes:
    return ADMIN_ROLE if name == "DEFAULT_ADMIN_ROLE" else bytes(Web3.keccak(text=name))


def deployer_roles(session: ChainSession, base: Deployment, ld: LicenseDeployment, account: str) -> list[str]:
    """The roles `account` holds on the token, the distributor and the license, as 'contract ROLE'."""
    contracts = {
        "token": token_contract(session, base),
        "distributor": distributor_contract(session, base),
        "license": license_contract(session, ld),
    }
    held = []
    for where, contract in contracts.items():
        for name in ROLE_NAMES:
            if call(contract.functions.hasRole(role_id(name), account), "reading roles"):
                held.append(f"{where} {name}")
    return held


def governor_contract(session: ChainSession, ld: LicenseDeployment) -> Contract:
    if ld.governor is None:
        raise ChainError("this license has no governance: its parameters are set by its admin directly")
    return contract_at(session.w3, GOVERNOR, ld.governor)


def delegate(session: ChainSession, ld: LicenseDeployment, to: str | None = None) -> TxResult:
    """Delegates the signer's votes to `to` (default: itself); tokens vote only once delegated."""
    to = address_of(to, "delegate") if to else session.address
    token = token_contract(session, ld.base())
    return transact(session, token.functions.delegate(to), f"delegating votes to {to}")


def voting_power(session: ChainSession, ld: LicenseDeployment, account: str) -> int:
    fn = token_contract(session, ld.base()).functions.getVotes(address_of(account, "account"))
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
    actions: list[str] = field(default_factory=list)  # pause-license, ..., decoded from the calldata

    @property
    def description_hash(self) -> bytes:
        return keccak(text=self.description)


Changes = Mapping[GovParameter, int] | Mapping[Parameter, int] | Mapping[GovParameter | Parameter, int]


def _calls(
    session: ChainSession, ld: LicenseDeployment, changes: Changes, actions: Iterable[Action]
) -> tuple[list[str], list[bytes]]:
    targets: list[str] = []
    calldatas: list[bytes] = []
    for p, value in changes.items():
        g = GovParameter.of(p)
        contract = _target_contract(session, ld, g.target)
        targets.append(contract.address)
        calldatas.append(bytes.fromhex(contract.encode_abi("setParameter", [g.index, value])[2:]))
    for action in actions:
        target, fn = action.value
        contract = _target_contract(session, ld, target)
        targets.append(contract.address)
        calldatas.append(bytes.fromhex(contract.encode_abi(fn, [])[2:]))
    return targets, calldatas


def propose_calls(
    session: ChainSession,
    ld: LicenseDeployment,
    changes: Changes,
    description: str,
    actions: Iterable[Action] = (),
) -> Proposal:
    """Proposes `changes` and `actions` without checking ranges or roles (tests use it to see the contracts
    refuse them)."""
    actions = list(actions)
    if not changes and not actions:
        raise ChainError("a proposal needs at least one parameter change or action")
    if not description.strip():
        raise ChainError("a proposal needs a description")
    gov = governor_contract(session, ld)
    targets, calldatas = _calls(session, ld, changes, actions)
    values = [0] * len(calldatas)
    # The governor identifies a proposal by its calls and description: the same again would revert with
    # GovernorUnexpectedProposalState, which says nothing of why.
    same = int(call(gov.functions.hashProposal(targets, values, calldatas, Web3.keccak(text=description)),
                    "reading the proposal id"))
    if int(call(gov.functions.proposalSnapshot(same), "reading the proposal")) != 0:
        raise ChainError(f"propose: proposal {same} makes these changes with this description already (`fedlearn "
                         "gov status` shows it); vote on it, or describe the new one differently")
    tx = transact(session, gov.functions.propose(targets, values, calldatas, description), "propose")
    proposal_id = int(gov.events.ProposalCreated().process_receipt(tx.receipt, errors=DISCARD)[0]["args"]["proposalId"])
    return Proposal(proposal_id, targets, values, calldatas, description,
                    {GovParameter.of(p).label: v for p, v in changes.items()}, [a.label for a in actions])


def propose(
    session: ChainSession,
    ld: LicenseDeployment,
    changes: Changes,
    description: str,
    actions: Iterable[Action] = (),
) -> Proposal:
    """Proposes setting each parameter of `changes` (license or distributor) to its value, and `actions`
    (pausing, unpausing). Refused here: an out-of-range value, and a contract whose admin is not this governor's
    timelock (the proposal could never execute)."""
    actions = list(actions)
    targets = {GovParameter.of(p).target for p in changes} | {a.value[0] for a in actions}
    for p, value in changes.items():
        check_value(session, ld, p, value)
    if ld.timelock is None:
        raise ChainError("this license has no governance: its parameters are set by its admin directly")
    for target in sorted(targets):
        contract = _target_contract(session, ld, target)
        if not call(contract.functions.hasRole(ADMIN_ROLE, ld.timelock), "reading roles"):
            raise ChainError(f"propose: the timelock {ld.timelock} is not the {target}'s admin, so this proposal "
                             "could never execute; deploy with `fedlearn chain deploy --governed`")
    gov = governor_contract(session, ld)
    threshold = call(gov.functions.proposalThreshold(), "reading threshold")
    if threshold:
        now = int(session.w3.eth.get_block("latest")["timestamp"])
        votes = call(gov.functions.getVotes(session.address, now - 1), "reading votes")
        if votes < threshold:
            raise ChainError(f"propose: {session.address} has {votes} votes, the proposal threshold is {threshold}")
    return propose_calls(session, ld, changes, description, actions)


def find_proposal(session: ChainSession, ld: LicenseDeployment, proposal_id: int) -> Proposal:
    """A proposal's actions, read back from its ProposalCreated event."""
    gov = governor_contract(session, ld)
    contracts = {c.address: (t, c) for t in ("license", "distributor") for c in [_target_contract(session, ld, t)]}
    for log in gov.events.ProposalCreated().get_logs(from_block=ld.block):
        a = log["args"]
        if int(a["proposalId"]) != proposal_id:
            continue
        changes: dict[str, int] = {}
        actions: list[str] = []
        for target, data in zip(a["targets"], a["calldatas"]):
            found = contracts.get(to_checksum_address(target))
            if found is None:
                continue
            where, contract = found
            fn, args = contract.decode_function_input(bytes(data))
            if fn.fn_name == "setParameter":
                index = int(next(iter(args.values())))
                p = next(g for g in GovParameter if g.target == where and g.index == index)
                changes[p.label] = int(args["value"])
            elif fn.fn_name in ("pause", "unpause"):
                actions.append(Action((where, fn.fn_name)).label)
        return Proposal(
            proposal_id, list(a["targets"]), [int(v) for v in a["values"]], [bytes(c) for c in a["calldatas"]],
            a["description"], changes, actions,
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
    snapshot = int(call(gov.functions.proposalSnapshot(proposal_id), "reading the snapshot"))
    if int(call(gov.functions.getVotes(session.address, snapshot), "reading votes")) == 0:
        # A vote of no weight would be recorded and count for nothing: the signer could not vote on it again.
        raise ChainError(f"vote: {session.address} had no voting power at proposal {proposal_id}'s snapshot "
                         f"({snapshot}): votes count from a `fedlearn gov delegate` made before a proposal")
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
    actions: list[str]
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
        actions=p.actions,
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
