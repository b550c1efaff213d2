"""The committed contract artifacts (ABI and bytecode): running never needs a compiler."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from eth_utils import to_checksum_address

from fedlearn.errors import ChainError

if TYPE_CHECKING:
    from web3 import Web3
    from web3.contract import Contract

TOKEN = "ContributionToken"
DISTRIBUTOR = "RewardDistributor"
LICENSE = "ModelLicense"
GOVERNOR = "FederationGovernor"
TIMELOCK = "FederationTimelock"
CONTRACT_NAMES: tuple[str, ...] = (TOKEN, DISTRIBUTOR, LICENSE, GOVERNOR, TIMELOCK)


def contracts_dir() -> Path:
    """The contracts/ folder: $FEDLEARN_CONTRACTS_DIR, else the one beside the package."""
    override = os.environ.get("FEDLEARN_CONTRACTS_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "contracts"


def artifacts_dir() -> Path:
    return contracts_dir() / "artifacts"


@dataclass(frozen=True)
class Artifact:
    """One compiled contract."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    sha256: str  # of the artifact file, recorded in deployment files to tell which build was deployed


@cache
def _load(path: Path) -> Artifact:
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
        return Artifact(
            name=data["contractName"],
            abi=data["abi"],
            bytecode=data["bytecode"],
            deployed_bytecode=data["deployedBytecode"],
            sha256=hashlib.sha256(raw).hexdigest(),
        )
    except FileNotFoundError:
        raise ChainError(f"missing contract artifact {path} (run `fedlearn contracts build`)") from None
    except (ValueError, KeyError) as exc:
        raise ChainError(f"unreadable contract artifact {path}: {exc}") from None


def load_artifact(name: str) -> Artifact:
    """The committed artifact of contract `name`."""
    if name not in CONTRACT_NAMES:
        raise ChainError(f"unknown contract {name!r}; known: {', '.join(CONTRACT_NAMES)}")
    return _load(artifacts_dir() / f"{name}.json")


def runs_artifact(code: bytes, name: str) -> bool:
    """Whether `code`, runtime code read from a chain, is this build's contract `name`: the artifact's deployed
    bytecode with its immutables filled in (solc leaves them zero; the constructor writes them into the code), so
    every byte matches except where the artifact has a zero. Any change to a contract's source changes the
    metadata hash at the end of its code, so another version's contract fails here."""
    expected = bytes.fromhex(load_artifact(name).deployed_bytecode.removeprefix("0x"))
    return len(code) == len(expected) and all(a == b or b == 0 for a, b in zip(code, expected))


def check_build(w3: Web3, chain_id: int, address: str, name: str, what: str = "contract") -> None:
    """Raises unless `address` holds code; warns when it is not this build's contract `name` (`what` names it):
    an earlier version's contracts still answer every call this version makes, and their institutions must be
    able to claim and withdraw, so they are used, but what they refuse may differ (the distributor before
    `EvidenceAlreadyUsed` takes a repeated slash proposal; the run never sends one)."""
    code = bytes(w3.eth.get_code(to_checksum_address(address)))
    if not code:
        raise ChainError(f"no {what} at {address} on chain {chain_id}: was the node reset?")
    if not runs_artifact(code, name):
        logging.getLogger("fedlearn").warning(
            "the %s at %s runs other code than this fedlearn's %s (deployed by another version): what it refuses "
            "may differ from what this version documents", what, address, name)


# Per connection: building a web3 contract parses its whole ABI, which costs as much as the call made with it.
_BOUND: WeakKeyDictionary[Web3, dict[tuple[str, str], Contract]] = WeakKeyDictionary()


def contract_at(w3: Web3, name: str, address: str) -> Contract:
    """Contract `name` (its committed ABI) at `address` on `w3`'s chain, built once per connection."""
    bound = _BOUND.setdefault(w3, {})
    key = (name, to_checksum_address(address))
    if key not in bound:
        bound[key] = w3.eth.contract(address=key[1], abi=load_artifact(name).abi)
    return bound[key]


def all_abis() -> list[list[dict[str, Any]]]:
    """Every contract's ABI, for decoding reverts whichever contract raised them."""
    return [load_artifact(name).abi for name in CONTRACT_NAMES]
