"""The model license on chain: deploy it, attest revenue, quote and acquire licenses, pay fees, withdraw shares,
sweep what closed epochs left, pause.

Units: revenue, threshold, stakes and fees are integers in the token's smallest unit (18 decimals; one currency
unit of revenue is 10**18, like one token); the stake rate X is 18-decimal fixed point (10**15 is 0.001); the
lock period, the attestation lifetime and the fee claim period are in seconds. Every check the contract makes is
also made here first, so that a refused action is one ChainError line and nothing is sent.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from eth_utils import is_address, to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from fedlearn.chain.addresses import address_of
from fedlearn.chain.artifacts import (
    DISTRIBUTOR,
    GOVERNOR,
    LICENSE,
    TIMELOCK,
    TOKEN,
    check_build,
    contract_at,
    load_artifact,
)
from fedlearn.chain.deployment import Deployment, distributor_contract, token_contract, token_units
from fedlearn.chain.merkle import RewardTree
from fedlearn.chain.session import ChainSession
from fedlearn.chain.transactions import TxResult, call, deploy_contract, transact
from fedlearn.errors import ChainError

UNIT = 10**18
WAD = 10**18
MAX_REVENUE = 10**36
DAY = 86_400
ZERO_ADDRESS = "0x" + "00" * 20
FORMAT = "fedlearn-license-1"


class Parameter(IntEnum):
    """The governed parameters, numbered as the contract's `Parameter` enum."""

    STAKE_RATE = 0
    REVENUE_THRESHOLD = 1
    LOCK_PERIOD = 2
    ATTESTATION_TTL = 3
    FEE_CLAIM_PERIOD = 4

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> Parameter:
        for p in cls:
            if text.strip().lower().replace("_", "-") == p.label:
                return p
        raise ChainError(f"unknown parameter {text!r}; known: {', '.join(p.label for p in cls)}")


# The contract's parameterBounds, mirrored so that a bad value is refused before anything is sent.
BOUNDS: dict[Parameter, tuple[int, int]] = {
    Parameter.STAKE_RATE: (0, WAD),
    Parameter.REVENUE_THRESHOLD: (0, MAX_REVENUE),
    Parameter.LOCK_PERIOD: (DAY, 3650 * DAY),
    Parameter.ATTESTATION_TTL: (30 * DAY, 3650 * DAY),
    Parameter.FEE_CLAIM_PERIOD: (30 * DAY, 3650 * DAY),
}
# Parameters in seconds: the CLI reads them as durations.
DURATIONS = frozenset({Parameter.LOCK_PERIOD, Parameter.ATTESTATION_TTL, Parameter.FEE_CLAIM_PERIOD})


def check_parameter(p: Parameter, value: int) -> int:
    """`value` if it lies within `p`'s bounds, else a ChainError naming ParameterOutOfRange."""
    low, high = BOUNDS[p]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ChainError(f"{p.label} {value!r} is outside [{low}, {high}] (ParameterOutOfRange)")
    return value


@dataclass(frozen=True)
class LicenseParameters:
    """X (18-decimal fixed point), the revenue threshold (token units), the lock period, how long an attestation
    stays live and how long contributors have to withdraw a closed epoch's fees before it is swept (seconds)."""

    stake_rate: int = 10**15
    revenue_threshold: int = 1_000_000 * UNIT
    lock_period: int = 365 * DAY
    attestation_ttl: int = 365 * DAY
    fee_claim_period: int = 365 * DAY

    def values(self) -> tuple[int, int, int, int, int]:
        return (self.stake_rate, self.revenue_threshold, self.lock_period, self.attestation_ttl,
                self.fee_claim_period)

    def check(self) -> LicenseParameters:
        for p, value in zip(Parameter, self.values()):
            check_parameter(p, value)
        return self


def check_revenue(revenue: int) -> int:
    """`revenue` if the contract accepts it; a ChainError for a negative or absurd one."""
    if not isinstance(revenue, int) or isinstance(revenue, bool):
        raise ChainError(f"revenue must be an integer number of units, got {revenue!r}")
    if revenue < 0:
        raise ChainError(f"revenue cannot be negative, got {revenue}")
    if revenue > MAX_REVENUE:
        raise ChainError(f"revenue {revenue} is above the largest accepted {MAX_REVENUE} (RevenueTooLarge)")
    return revenue


def required_stake(revenue: int, params: LicenseParameters) -> int:
    """`X · max(0, revenue − threshold)`, rounded up, as the contract computes it."""
    above = check_revenue(revenue) - params.revenue_threshold
    return 0 if above <= 0 else -(-above * params.stake_rate // WAD)


def license_file_of(deployment_file: str | Path) -> Path:
    """Where a deployment's license file lives by default: beside it, named after it (``d.json`` →
    ``d.license.json``), as its embedded chain's state is; so deployments sharing a directory keep their own."""
    return Path(deployment_file).with_suffix(".license.json")


@dataclass(frozen=True)
class LicenseDeployment:
    """Where a federation's license (and its governance, when it has one) lives."""

    chain_id: int
    token: str
    distributor: str
    license: str
    admin: str  # the timelock of a governed license, else the account that sets parameters
    attester: str
    block: int
    governor: str | None = None
    timelock: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    backend: str = ""

    @property
    def governed(self) -> bool:
        return self.governor is not None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, **asdict(self)}, indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, chain_id: int | None = None) -> LicenseDeployment:
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ChainError(
                f"cannot read license file {path}: {exc.strerror} (run `fedlearn license deploy`)"
            ) from None
        except ValueError:
            raise ChainError(f"license file {path} is not JSON") from None
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
            raise ChainError(f"{path} is not a fedlearn license file")
        try:
            ld = cls(**data)
        except TypeError as exc:
            raise ChainError(f"license file {path} is malformed: {exc}") from None
        for name in ("token", "distributor", "license", "admin", "attester", "governor", "timelock"):
            value = getattr(ld, name)
            if value is not None and not is_address(value):
                raise ChainError(f"license file {path} has an invalid {name} address")
        if chain_id is not None and ld.chain_id != chain_id:
            raise ChainError(f"license file {path} is for chain id {ld.chain_id}, connected to {chain_id}")
        return ld

    def check(self, session: ChainSession) -> None:
        if session.chain_id != self.chain_id:
            raise ChainError(f"license is on chain id {self.chain_id}, connected to chain id {session.chain_id}")
        check_build(session.w3, session.chain_id, self.license, LICENSE, "license contract")
        # What license and governance commands call through: the base deployment, and the governance if any.
        for address, name, what in ((self.token, TOKEN, "token contract"), (self.distributor, DISTRIBUTOR,
                                    "contract"), (self.governor, GOVERNOR, "governor"),
                                    (self.timelock, TIMELOCK, "timelock")):
            if address is not None:
                check_build(session.w3, session.chain_id, address, name, what)

    def base(self) -> Deployment:
        """Enough of the base deployment for token calls."""
        return Deployment(self.chain_id, self.token, self.distributor, self.block, self.admin, self.admin, 0)


def license_contract(session: ChainSession, ld: LicenseDeployment) -> Contract:
    return contract_at(session.w3, LICENSE, ld.license)


def _address(value: str, what: str) -> str:
    return address_of(value, what)


def deploy_license(
    session: ChainSession,
    deployment: Deployment,
    *,
    admin: str | None = None,
    attester: str | None = None,
    dust_recipient: str | None = None,
    params: LicenseParameters = LicenseParameters(),
) -> LicenseDeployment:
    """Deploys the license over `deployment`'s token and distributor. `admin` sets parameters and roles and
    pauses (a timelock when governed; defaults to the signer); `attester` attests revenue (defaults to the
    signer); `dust_recipient` receives what closed epochs' contributors left (defaults to `admin`)."""
    params.check()
    admin = _address(admin, "admin") if admin else session.address
    attester = _address(attester, "attester") if attester else session.address
    dust_recipient = _address(dust_recipient, "dust recipient") if dust_recipient else admin
    if int(dust_recipient, 16) == 0:
        raise ChainError("dust recipient cannot be the zero address (ZeroAddress)")
    art = load_artifact(LICENSE)
    factory = session.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    tx = deploy_contract(
        session,
        factory,
        [deployment.token, deployment.distributor, admin, attester, dust_recipient, params.values()],
        "deploying license",
    )
    return LicenseDeployment(
        chain_id=session.chain_id,
        token=deployment.token,
        distributor=deployment.distributor,
        license=to_checksum_address(tx.receipt["contractAddress"]),
        admin=admin,
        attester=attester,
        block=tx.block,
        artifacts={LICENSE: art.sha256},
        backend=session.backend,
    )


def parameters(session: ChainSession, ld: LicenseDeployment) -> LicenseParameters:
    values = call(license_contract(session, ld).functions.parameters(), "reading parameters")
    return LicenseParameters(*(int(v) for v in values))


@dataclass(frozen=True)
class Quote:
    revenue: int
    required: int
    params: LicenseParameters


def quote(session: ChainSession, ld: LicenseDeployment, revenue: int) -> Quote:
    """The stake `revenue` requires under the parameters on chain (computed by the contract)."""
    check_revenue(revenue)
    required = call(license_contract(session, ld).functions.requiredStake(revenue), "quote")
    return Quote(revenue, int(required), parameters(session, ld))


ATTESTER_ROLE = bytes(Web3.keccak(text="ATTESTER_ROLE"))
ADMIN_ROLE = b"\x00" * 32


def attest_revenue(session: ChainSession, ld: LicenseDeployment, licensee: str, revenue: int) -> TxResult:
    """Records `licensee`'s annual revenue (the signer needs the attester role)."""
    licensee = _address(licensee, "licensee")
    if int(licensee, 16) == 0:
        raise ChainError("attest: the licensee cannot be the zero address (ZeroAddress)")
    check_revenue(revenue)
    _check_not_paused(session, ld, "attest")
    lic = license_contract(session, ld)
    if not call(lic.functions.hasRole(ATTESTER_ROLE, session.address), "reading roles"):
        raise ChainError(f"attest: account {session.address} lacks the license's ATTESTER_ROLE")
    return transact(session, lic.functions.attestRevenue(licensee, revenue), f"attesting revenue of {licensee}")


@dataclass(frozen=True)
class LicenseStatus:
    licensee: str
    revenue: int
    attested_at: int
    expires_at: int  # when the attestation stops counting (0: never attested)
    locked: int
    unlock_at: int
    required: int
    licensed: bool
    now: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def license_status(session: ChainSession, ld: LicenseDeployment, licensee: str) -> LicenseStatus:
    licensee = _address(licensee, "licensee")
    values = call(license_contract(session, ld).functions.licenseOf(licensee), "reading license")
    now = int(session.w3.eth.get_block("latest")["timestamp"])
    revenue, attested_at, expires_at, locked, unlock_at, required, licensed = values
    return LicenseStatus(licensee, revenue, attested_at, expires_at, locked, unlock_at, required, bool(licensed), now)


def _ensure_allowance(session: ChainSession, ld: LicenseDeployment, amount: int, what: str) -> None:
    token = token_contract(session, ld.base())
    balance = call(token.functions.balanceOf(session.address), "reading balance")
    if balance < amount:
        raise ChainError(f"{what}: account {session.address} holds {token_units(balance)}, needs "
                         f"{token_units(amount)}")
    allowance = call(token.functions.allowance(session.address, ld.license), "reading allowance")
    if allowance < amount:
        transact(session, token.functions.approve(ld.license, amount), "approving the license contract")


@dataclass(frozen=True)
class Acquired:
    amount: int
    status: LicenseStatus
    tx: TxResult


def acquire(
    session: ChainSession, ld: LicenseDeployment, *, amount: int | None = None, lock_duration: int | None = None
) -> Acquired:
    """Locks `amount` more tokens (default: what the required stake lacks) for `lock_duration` seconds (default:
    the lock period) so that the signer is licensed. Refuses, before sending, a missing attestation, a lock
    shorter than the lock period, a stake below the required one and a balance below `amount`."""
    _check_not_paused(session, ld, "acquire")
    before = license_status(session, ld, session.address)
    if before.attested_at == 0:
        raise ChainError(f"acquire: no revenue attested for {session.address} (RevenueNotAttested); ask the attester")
    # The next block is at least one second later: an attestation expiring then is already dead.
    if before.now + 1 >= before.expires_at:
        raise ChainError(f"acquire: the attestation of {session.address} expired at {before.expires_at} "
                         "(AttestationExpired); ask the attester to record its revenue again")
    params = parameters(session, ld)
    lock = params.lock_period if lock_duration is None else lock_duration
    if not isinstance(lock, int) or lock < params.lock_period:
        raise ChainError(
            f"acquire: a lock of {lock} s is shorter than the lock period {params.lock_period} s (LockTooShort)"
        )
    if lock > BOUNDS[Parameter.LOCK_PERIOD][1]:
        raise ChainError(
            f"acquire: a lock of {lock} s is longer than {BOUNDS[Parameter.LOCK_PERIOD][1]} s (LockTooLong)"
        )
    if amount is None:
        amount = max(0, before.required - before.locked)
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        raise ChainError(f"acquire: amount must be a non-negative integer, got {amount!r}")
    if before.locked + amount < before.required:
        raise ChainError(
            f"acquire: a stake of {before.locked + amount} is below the {before.required} required for revenue "
            f"{before.revenue} (InsufficientStake)"
        )
    if amount:
        _ensure_allowance(session, ld, amount, "acquire")
    tx = transact(session, license_contract(session, ld).functions.acquire(amount, lock), "acquire")
    return Acquired(amount, license_status(session, ld, session.address), tx)


def release(session: ChainSession, ld: LicenseDeployment) -> TxResult:
    """Takes the signer's locked stake back once its lock has ended (the license lapses)."""
    return transact(session, license_contract(session, ld).functions.release(), "release")


@dataclass(frozen=True)
class FeePaid:
    round: int
    amount: int
    tx: TxResult


def pay_fee(session: ChainSession, ld: LicenseDeployment, amount: int) -> FeePaid:
    """Pays a license fee, shared by the contributors of the distributor's claimable round (a root still in its
    challenge window gets no fee)."""
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise ChainError(f"fee must be a positive integer number of token units, got {amount!r}")
    _check_not_paused(session, ld, "pay fee")
    dist = distributor_contract(session, ld.base()).functions
    if call(dist.claimableRound(), "reading rounds") == 0 or call(dist.rewardsTotal(), "reading totals") == 0:
        raise ChainError("pay fee: the distributor has no claimable root with rewards yet (a settled root waits out "
                         "its challenge window), so no contribution to share it by (NoContributions)")
    _ensure_allowance(session, ld, amount, "pay fee")
    lic = license_contract(session, ld)
    tx = transact(session, lic.functions.payFee(amount), "pay fee")
    logs = lic.events.FeePaid().process_receipt(tx.receipt, errors=DISCARD)  # the token's Transfer too
    return FeePaid(int(logs[0]["args"]["round"]), amount, tx)


@dataclass(frozen=True)
class Epoch:
    round: int
    weights_root: str
    total_weight: int
    fees: int
    paid_out: int  # withdrawn shares, plus the remainder once swept
    closed_at: int  # when the next epoch started (0: open, fees still accrue to it)
    swept: bool
    sweepable_at: int  # closed_at plus the fee claim period (0 while open)


def epoch(session: ChainSession, ld: LicenseDeployment, round: int) -> Epoch:
    lic = license_contract(session, ld).functions
    root, total, fees, paid, closed_at, swept = call(lic.epochOf(round), "reading fees")
    sweepable = int(call(lic.sweepableAt(round), "reading fees"))
    return Epoch(int(round), "0x" + bytes(root).hex(), int(total), int(fees), int(paid), int(closed_at), bool(swept),
                 sweepable)


def epochs(session: ChainSession, ld: LicenseDeployment) -> list[Epoch]:
    """Every round fees accrued to, oldest first."""
    rounds = call(license_contract(session, ld).functions.feeRounds(), "reading fee rounds")
    return [epoch(session, ld, int(r)) for r in rounds]


def fee_share(session: ChainSession, ld: LicenseDeployment, round: int, tree: RewardTree, account: str) -> int:
    """What `account` may still withdraw of `round`'s fees, its weight read from `tree` (that round's)."""
    weight = tree.amount_of(account) or 0
    fn = license_contract(session, ld).functions.feeShareOf(round, _address(account, "account"), weight)
    return int(call(fn, "reading share"))


@dataclass(frozen=True)
class Withdrawal:
    account: str
    round: int
    amount: int
    tx: TxResult


def withdraw_fee_share(
    session: ChainSession, ld: LicenseDeployment, round: int, tree: RewardTree, account: str
) -> Withdrawal:
    """Pays `account` its share of `round`'s fees (anyone may send; tokens go to `account`), proving its weight
    with `tree`, the rewards tree the distributor settled for `round`."""
    account = _address(account, "account")
    _check_not_paused(session, ld, "withdraw")
    lic = license_contract(session, ld)
    e = epoch(session, ld, round)
    if e.weights_root == "0x" + "00" * 32:
        raise ChainError(f"withdraw: no fee accrued to round {round} (NoFeesForRound)")
    if e.swept:
        raise ChainError(f"withdraw: round {round}'s fees were swept to the dust recipient after the claim period "
                         "(EpochSwept)")
    if e.weights_root != "0x" + tree.root.hex():
        raise ChainError(
            f"withdraw: tree root 0x{tree.root.hex()} is not round {round}'s weights root {e.weights_root}"
        )
    weight = tree.amount_of(account)
    if weight is None:
        raise ChainError(f"withdraw: account {account} has no weight in round {round}'s tree")
    owed = fee_share(session, ld, round, tree, account)
    if owed == 0:
        raise ChainError(f"withdraw: account {account} has no fee share of round {round} left (NoFeeShare)")
    tx = transact(
        session, lic.functions.withdrawFeeShare(round, account, weight, tree.proof(account)), "withdraw fee share"
    )
    return Withdrawal(account, round, owed, tx)


def _check_not_paused(session: ChainSession, ld: LicenseDeployment, action: str) -> None:
    if call(license_contract(session, ld).functions.paused(), "reading pause"):
        raise ChainError(f"{action}: the license is paused by governance (EnforcedPause)")


def dust_recipient(session: ChainSession, ld: LicenseDeployment) -> str:
    return to_checksum_address(call(license_contract(session, ld).functions.dustRecipient(), "reading recipient"))


def paused(session: ChainSession, ld: LicenseDeployment) -> bool:
    return bool(call(license_contract(session, ld).functions.paused(), "reading pause"))


@dataclass(frozen=True)
class Sweep:
    round: int
    recipient: str
    amount: int
    tx: TxResult


def sweep_dust(session: ChainSession, ld: LicenseDeployment, round: int) -> Sweep:
    """Sends what `round`'s contributors left of its fees to the dust recipient (anyone may), once the epoch has
    been closed for the fee claim period; its shares can no longer be withdrawn afterwards."""
    if not isinstance(round, int) or isinstance(round, bool) or not 0 < round < 2**64:
        raise ChainError(f"round must be an integer in [1, 2**64), got {round!r}")
    _check_not_paused(session, ld, "sweep")
    e = epoch(session, ld, round)
    if e.weights_root == "0x" + "00" * 32:
        raise ChainError(f"sweep: no fee accrued to round {round} (NoFeesForRound)")
    if e.swept:
        raise ChainError(f"sweep: round {round} was already swept (EpochSwept)")
    if e.closed_at == 0:
        raise ChainError(f"sweep: round {round}'s epoch still receives fees (EpochOpen); it closes when a later root "
                         "becomes claimable and a fee or `syncWeights` starts the next epoch")
    now = int(session.w3.eth.get_block("latest")["timestamp"])
    if now + 1 < e.sweepable_at:  # the next block is at least one second later
        raise ChainError(f"sweep: round {round} can be swept from {e.sweepable_at} (now {now}): contributors have the "
                         "fee claim period to withdraw (SweepNotDue)")
    if e.fees == e.paid_out:
        raise ChainError(f"sweep: round {round}'s contributors withdrew all its fees (NothingToSweep)")
    recipient = dust_recipient(session, ld)
    tx = transact(session, license_contract(session, ld).functions.sweepDust(round), f"sweeping round {round}")
    return Sweep(round, recipient, e.fees - e.paid_out, tx)


def set_paused(session: ChainSession, ld: LicenseDeployment, pause: bool) -> TxResult:
    """Pauses or unpauses the license directly (the signer needs its admin role: an ungoverned license; a governed
    one is paused by a proposal)."""
    lic = license_contract(session, ld)
    if not call(lic.functions.hasRole(ADMIN_ROLE, session.address), "reading roles"):
        raise ChainError(f"{'pause' if pause else 'unpause'}: account {session.address} lacks the license's "
                         "DEFAULT_ADMIN_ROLE" + (" (it is the timelock's: propose it with `fedlearn gov propose`)"
                                                 if ld.governed else ""))
    if paused(session, ld) == pause:
        raise ChainError(f"the license is already {'paused' if pause else 'running'}")
    fn = lic.functions.pause() if pause else lic.functions.unpause()
    return transact(session, fn, "pause" if pause else "unpause")
