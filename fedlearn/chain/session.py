"""Connections to a chain: the embedded eth-tester (py-evm) by default, or any JSON-RPC node with a local key."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import keccak
from web3 import Web3

from fedlearn.errors import ChainError

ETH_TESTER = "eth-tester"
DEFAULT_KEY_ENV = "FEDLEARN_PRIVATE_KEY"
DEFAULT_PASSWORD_ENV = "FEDLEARN_KEYSTORE_PASSWORD"
DEV_ACCOUNTS = 10
# What every simulated account starts with on eth-tester: gas for a lifetime of transactions.
GAS_ETH = Web3.to_wei(1_000, "ether")


@dataclass(frozen=True)
class ChainSession:
    """A web3 connection and the account that signs this session's transactions."""

    w3: Web3
    account: LocalAccount
    chain_id: int
    backend: str  # "eth-tester" or the RPC URL

    @property
    def address(self) -> ChecksumAddress:
        return self.account.address

    @property
    def is_eth_tester(self) -> bool:
        return self.backend == ETH_TESTER

    def as_account(self, account: LocalAccount) -> ChainSession:
        """The same connection, signing with `account`."""
        return replace(self, account=account)


def dev_account(index: int) -> LocalAccount:
    """eth-tester's funded development account `index` (its keys are 1, 2, ... 10)."""
    if not 0 <= index < DEV_ACCOUNTS:
        raise ChainError(f"eth-tester has dev accounts 0..{DEV_ACCOUNTS - 1}, not {index}")
    return Account.from_key((index + 1).to_bytes(32, "big"))


def institution_key(index: int) -> bytes:
    """Deterministic private key of simulated institution `index`: the same run gives the same addresses."""
    if index < 0:
        raise ChainError(f"institution index must be >= 0, got {index}")
    return keccak(f"fedlearn/institution/{index}".encode())


def institution_accounts(n: int) -> list[LocalAccount]:
    """Accounts of simulated institutions 0..n-1 (``transactions.fund_gas`` gives them gas on eth-tester)."""
    return [Account.from_key(institution_key(i)) for i in range(n)]


def load_private_key(
    key_env: str | None = None,
    keystore: str | Path | None = None,
    password_env: str | None = None,
    password_file: str | Path | None = None,
) -> LocalAccount:
    """The signing account: a keystore file (password from a file or an environment variable) or a hex key in
    an environment variable."""
    if keystore is not None:
        try:
            encrypted = json.loads(Path(keystore).read_text())
        except OSError as exc:
            raise ChainError(f"cannot read keystore {keystore}: {exc.strerror}") from None
        except ValueError:
            raise ChainError(f"keystore {keystore} is not JSON") from None
        if password_file is not None:
            try:
                password = Path(password_file).read_text().rstrip("\n")
            except OSError as exc:
                raise ChainError(f"cannot read password file {password_file}: {exc.strerror}") from None
        else:
            env = password_env or DEFAULT_PASSWORD_ENV
            if env not in os.environ:
                raise ChainError(f"keystore {keystore} needs its password in ${env} or --password-file")
            password = os.environ[env]
        try:
            return Account.from_key(Account.decrypt(encrypted, password))
        except ValueError as exc:
            if "MAC mismatch" in str(exc):
                raise ChainError(f"wrong password for keystore {keystore}") from None
            raise ChainError(f"malformed keystore {keystore}: {exc}") from None
        except (KeyError, TypeError) as exc:
            raise ChainError(f"malformed keystore {keystore}: missing {exc}") from None
    env = key_env or DEFAULT_KEY_ENV
    value = os.environ.get(env)
    if not value:
        raise ChainError(f"no signing key: set ${env} to a hex private key or pass --keystore")
    try:
        raw = bytes.fromhex(value.strip().removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ChainError(f"private key in ${env} is malformed: expected 32 bytes of hex")
    try:
        return Account.from_key(raw)
    except ValueError:  # zero, or not below the curve's order
        raise ChainError(f"private key in ${env} is not a valid secp256k1 key (zero, or beyond the curve's "
                         "order)") from None


def save_state(session: ChainSession, path: str | Path) -> Path:
    """Writes an eth-tester chain's whole database to `path` (JSON), so a later process can go on with it."""
    if not session.is_eth_tester:
        raise ChainError("only an eth-tester chain has a state file; a JSON-RPC node keeps its own state")
    backend = session.w3.provider.ethereum_tester.backend  # type: ignore[attr-defined]
    store = backend.chain.chaindb.db.wrapped_db.kv_store
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"chain_id": session.chain_id, "kv": {k.hex(): v.hex() for k, v in store.items()}}))
    tmp.replace(path)
    return path


def _load_state(w3: Web3, path: Path) -> None:
    try:
        data = json.loads(path.read_text())
        kv = {bytes.fromhex(k): bytes.fromhex(v) for k, v in data["kv"].items()}
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise ChainError(f"cannot read eth-tester state file {path}: {exc}") from None
    backend = w3.provider.ethereum_tester.backend  # type: ignore[attr-defined]
    db = backend.chain.chaindb.db
    db.wrapped_db.kv_store.clear()
    db.wrapped_db.kv_store.update(kv)
    # A chain object reads its head from the database it is built on.
    backend.chain = type(backend.chain)(db)
    backend.chain.gas_estimator = _one_run_gas_estimate


def _one_run_gas_estimate(state: Any, transaction: Any) -> int:
    """Gas enough for `transaction`, in two executions where py-evm's default binary search takes ~13.

    That search was most of a paid run's chain time on the embedded chain. Here: one execution at the block gas
    limit measures what the transaction consumes (a revert raises its error there, as in the search); the guess
    adds what must be left over, not consumed (the 2,300 an SSTORE requires remaining, EIP-2200; the 1/64 a call
    keeps back, EIP-150); a second execution confirms it. Should the guess fall short, the default search runs."""
    from eth.estimators.gas import binary_gas_search_intrinsic_tolerance
    from eth.vm.spoof import SpoofTransaction

    def run(gas: int, **costless: int) -> Any:
        snapshot = state.snapshot()
        try:
            return state.apply_transaction(SpoofTransaction(transaction, gas=gas, **costless))
        finally:
            state.revert(snapshot)

    computation = run(state.gas_limit, gas_price=0)
    if computation.is_error:
        raise computation.error
    consumed = state.gas_limit - computation.get_gas_remaining()
    guess = min(consumed + consumed // 16 + 2_300, state.gas_limit)
    if not run(guess).is_error:
        return int(guess)
    return int(binary_gas_search_intrinsic_tolerance(state, transaction))


def _eth_tester_web3(institutions: int) -> Web3:
    from eth_tester import EthereumTester, PyEVMBackend
    from eth_tester.backends.pyevm.main import get_default_account_state
    from web3 import EthereumTesterProvider

    state: dict[bytes, Any] = {}
    dev = [dev_account(i) for i in range(DEV_ACCOUNTS)]
    for account in dev + [Account.from_key(institution_key(i)) for i in range(institutions)]:
        balance = None if account in dev else {"balance": GAS_ETH}
        state[bytes.fromhex(account.address[2:])] = get_default_account_state(balance)
    backend = PyEVMBackend(genesis_state=state)
    backend.chain.gas_estimator = _one_run_gas_estimate
    tester = EthereumTester(backend)
    w3 = Web3(EthereumTesterProvider(tester))
    # A read without a sender makes eth-tester's middleware list every account (checksumming each) to pick the
    # first; with a default sender, the one it would pick, a read costs one call, however many accounts there are.
    w3.eth.default_account = dev[0].address
    return w3


def connect(
    backend: str = ETH_TESTER,
    *,
    account: LocalAccount | None = None,
    key_env: str | None = None,
    keystore: str | Path | None = None,
    password_env: str | None = None,
    password_file: str | Path | None = None,
    expected_chain_id: int | None = None,
    institutions: int = 0,
    state_file: str | Path | None = None,
    timeout: float = 10.0,
) -> ChainSession:
    """Connects to `backend`: "eth-tester" (a fresh in-memory chain whose dev account 0 signs, with the first
    `institutions` simulated institution accounts funded in the genesis, or the chain saved in `state_file` when
    that exists, see save_state) or an http(s) JSON-RPC URL, signing with
    `account` or the key from `key_env` / `keystore`. Raises ChainError when the node cannot be reached or its
    chain id is not `expected_chain_id`."""
    if backend == ETH_TESTER:
        w3 = _eth_tester_web3(institutions)
        if state_file is not None and Path(state_file).exists():
            _load_state(w3, Path(state_file))
        signer = account or dev_account(0)
    else:
        if not backend.startswith(("http://", "https://")):
            raise ChainError(f"backend must be 'eth-tester' or an http(s) JSON-RPC URL such as "
                             f"http://127.0.0.1:8545, got {backend!r}")
        signer = account or load_private_key(key_env, keystore, password_env, password_file)
        w3 = Web3(Web3.HTTPProvider(backend, request_kwargs={"timeout": timeout}))
    try:
        chain_id = int(w3.eth.chain_id)
    except Exception as exc:  # requests' connection errors, JSON-RPC errors, timeouts
        import requests

        if isinstance(exc, requests.exceptions.Timeout):
            reason = f"no answer within {timeout:g} s"
        elif isinstance(exc, requests.exceptions.ConnectionError):
            reason = "connection refused or host unreachable"
        else:
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ChainError(f"cannot reach JSON-RPC node at {backend}: {reason}") from None
    if expected_chain_id is not None and chain_id != expected_chain_id:
        raise ChainError(f"wrong chain: {backend} has chain id {chain_id}, expected {expected_chain_id}")
    return ChainSession(w3=w3, account=signer, chain_id=chain_id, backend=backend)


def advance_time(session: ChainSession, seconds: int) -> None:
    """Moves the chain's clock forward (eth-tester, or a dev node such as anvil) and mines a block."""
    if session.is_eth_tester:
        tester = session.w3.provider.ethereum_tester  # type: ignore[attr-defined]
        now = session.w3.eth.get_block("latest")["timestamp"]
        tester.time_travel(now + seconds)
    else:
        session.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        session.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
