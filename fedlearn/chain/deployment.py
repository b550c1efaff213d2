"""Deploys the token and the distributor and records where they live in a JSON deployment file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_utils import is_address, to_checksum_address
from web3.contract import Contract

from fedlearn.chain.addresses import address_of
from fedlearn.chain.artifacts import DISTRIBUTOR, TOKEN, check_build, contract_at, load_artifact
from fedlearn.chain.session import ChainSession
from fedlearn.chain.transactions import deploy_contract
from fedlearn.errors import ChainError

DEFAULT_UNSTAKE_DELAY_S = 7 * 24 * 3600
DEFAULT_ROOT_DELAY_S = 24 * 3600  # a new root waits a day before claims use it: time to check and revoke it
DEFAULT_SLASH_DELAY_S = 24 * 3600  # a proposed slash waits a day: time to veto it
DEFAULT_TOKEN_CAP = 10**9 * 10**18  # a billion whole tokens
DEFAULT_REWARD_PER_ROUND = 100 * 10**18
MIN_UNSTAKE_DELAY_S = 24 * 3600  # RewardDistributor.MIN_UNSTAKE_DELAY
MAX_UNSTAKE_DELAY_S = 365 * 24 * 3600
MAX_ROOT_DELAY_S = 30 * 24 * 3600
MAX_REWARD_PER_ROUND = 10**27
FORMAT = "fedlearn-deployment-1"


def whole_tokens(amount: int) -> str:
    """18-decimal base units as whole tokens, thousands separated, without trailing zeros: "4,000", "0.5"."""
    text = f"{Decimal(amount) / 10**18:,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def token_count(amount: int) -> str:
    """Base units as a count of tokens: "1 token", "4,000 tokens"."""
    return f"{whole_tokens(amount)} token{'' if amount == 10**18 else 's'}"


def token_units(amount: int) -> str:
    """An amount as a person reads it and as the contracts count it: "4,000 tokens (4000…000 base units)"."""
    return f"{token_count(amount)} ({amount} base units)"


@dataclass(frozen=True)
class Deployment:
    """Where the contracts of one federation live."""

    chain_id: int
    token: str
    distributor: str
    block: int  # the distributor's deployment block: where event scans start
    admin: str
    coordinator: str
    unstake_delay: int
    artifacts: dict[str, str] = field(default_factory=dict)  # contract name -> sha256 of its artifact file
    backend: str = ""
    # A governed deployment (`fedlearn chain deploy --governed`): the timelock is the admin; None when ungoverned.
    governor: str | None = None
    timelock: str | None = None
    license: str | None = None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, **asdict(self)}, indent=2) + "\n")
        tmp.replace(path)  # atomic: a reader never sees half a file
        return path

    @classmethod
    def load(cls, path: str | Path, chain_id: int | None = None) -> Deployment:
        """Reads a deployment file; with `chain_id`, refuses one written for another chain."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ChainError(f"cannot read deployment file {path}: {exc.strerror}") from None
        except ValueError:
            raise ChainError(f"deployment file {path} is not JSON") from None
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
            raise ChainError(f"{path} is not a fedlearn deployment file")
        try:
            deployment = cls(**data)
        except TypeError as exc:
            raise ChainError(f"deployment file {path} is malformed: {exc}") from None
        for name in ("token", "distributor", "admin", "coordinator"):
            if not is_address(getattr(deployment, name)):
                raise ChainError(f"deployment file {path} has an invalid {name} address")
        if chain_id is not None and deployment.chain_id != chain_id:
            raise ChainError(f"deployment {path} is for chain id {deployment.chain_id}, connected to {chain_id}")
        return deployment

    def check(self, session: ChainSession) -> None:
        """Raises unless the session's chain is this deployment's and its token and distributor are this build's
        contracts there."""
        if session.chain_id != self.chain_id:
            raise ChainError(f"deployment is for chain id {self.chain_id}, connected to chain id {session.chain_id}")
        # Another version's contracts would answer this version's calls wrongly, or not at all: refuse them here.
        check_build(session.w3, session.chain_id, self.distributor, DISTRIBUTOR)
        check_build(session.w3, session.chain_id, self.token, TOKEN, "token contract")


def token_contract(session: ChainSession, deployment: Deployment) -> Contract:
    return contract_at(session.w3, TOKEN, deployment.token)


def distributor_contract(session: ChainSession, deployment: Deployment) -> Contract:
    return contract_at(session.w3, DISTRIBUTOR, deployment.distributor)


def deploy(
    session: ChainSession,
    *,
    admin: str | None = None,
    coordinator: str | None = None,
    unstake_delay: int = DEFAULT_UNSTAKE_DELAY_S,
    reward_per_round: int = DEFAULT_REWARD_PER_ROUND,
    root_delay: int = DEFAULT_ROOT_DELAY_S,
    slash_delay: int = DEFAULT_SLASH_DELAY_S,
    token_cap: int = DEFAULT_TOKEN_CAP,
    name: str = "Contribution Token",
    symbol: str = "CTB",
) -> Deployment:
    """Deploys the token (minted by `admin`, up to `token_cap` units) and the distributor (`admin` governs its
    parameters and pauses, `coordinator` settles and proposes slashes); both default to the session's account.
    Rewards per round are in token units; delays in seconds."""
    admin = address_of(admin, "admin") if admin else session.address
    coordinator = address_of(coordinator, "coordinator") if coordinator else session.address
    check_parameters(unstake_delay=unstake_delay, reward_per_round=reward_per_round, root_delay=root_delay,
                     slash_delay=slash_delay, token_cap=token_cap)
    token_art, dist_art = load_artifact(TOKEN), load_artifact(DISTRIBUTOR)
    w3 = session.w3
    token_tx = deploy_contract(
        session,
        w3.eth.contract(abi=token_art.abi, bytecode=token_art.bytecode),
        [name, symbol, token_cap, admin],
        "deploying token",
    )
    token = token_tx.receipt["contractAddress"]
    dist_tx = deploy_contract(
        session,
        w3.eth.contract(abi=dist_art.abi, bytecode=dist_art.bytecode),
        [token, admin, coordinator, unstake_delay, reward_per_round, root_delay, slash_delay],
        "deploying distributor",
    )
    return Deployment(
        chain_id=session.chain_id,
        token=to_checksum_address(token),
        distributor=to_checksum_address(dist_tx.receipt["contractAddress"]),
        block=dist_tx.block,
        admin=admin,
        coordinator=coordinator,
        unstake_delay=unstake_delay,
        artifacts={TOKEN: token_art.sha256, DISTRIBUTOR: dist_art.sha256},
        backend=session.backend,
    )


def check_parameters(*, unstake_delay: int, reward_per_round: int, root_delay: int, slash_delay: int,
                     token_cap: int) -> None:
    """The bounds the contracts enforce, checked before anything is sent."""
    if not MIN_UNSTAKE_DELAY_S <= unstake_delay <= MAX_UNSTAKE_DELAY_S:
        raise ChainError(f"unstake delay must be in [{MIN_UNSTAKE_DELAY_S}, {MAX_UNSTAKE_DELAY_S}] seconds "
                         f"(stakes stay slashable that long), got {unstake_delay}")
    if not 0 <= slash_delay <= unstake_delay:
        raise ChainError(f"slash delay must be in [0, unstake delay {unstake_delay}] seconds, got {slash_delay}")
    if not 0 <= root_delay <= MAX_ROOT_DELAY_S:
        raise ChainError(f"root delay must be in [0, {MAX_ROOT_DELAY_S}] seconds, got {root_delay}")
    if not 0 <= reward_per_round <= MAX_REWARD_PER_ROUND:
        raise ChainError(f"reward per round must be in [0, {MAX_REWARD_PER_ROUND}] token units, got {reward_per_round}")
    if not 0 < token_cap < 2**208:
        raise ChainError(f"token cap must be in (0, 2**208) token units, got {token_cap}")


def as_dict(deployment: Deployment) -> dict[str, Any]:
    return asdict(deployment)
