"""Sends transactions signed locally; every failure becomes one ChainError line.

A transaction is first estimated, which executes it against the latest state: a revert surfaces there with its
custom error, before anything is signed or sent, so a refused action leaves nothing half-done on chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.contract.contract import ContractFunction
from web3.exceptions import TimeExhausted

from fedlearn.chain.reverts import ChainRevertError, decode_revert, revert_data
from fedlearn.chain.session import GAS_ETH, ChainSession, institution_accounts
from fedlearn.errors import ChainError

RECEIPT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction."""

    tx_hash: str
    gas_used: int
    block: int
    receipt: Any


def _raise_from(action: str, exc: BaseException) -> None:
    data = revert_data(exc)
    if data is not None:
        raise ChainRevertError(action, decode_revert(data)) from None
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "insufficient funds" in message.lower():
        raise ChainError(f"{action} failed: the sending account has too little ETH for gas") from None
    raise ChainError(f"{action} failed: {message[:200]}") from None


def call(fn: ContractFunction, action: str) -> Any:
    """A read-only call; reverts are decoded like those of transactions."""
    try:
        return fn.call()
    except Exception as exc:  # web3's, eth-tester's and requests' errors alike
        _raise_from(action, exc)


def _fees(session: ChainSession) -> dict[str, int]:
    base = session.w3.eth.get_block("latest").get("baseFeePerGas")
    if base is None:  # a pre-London node
        return {"gasPrice": int(session.w3.eth.gas_price)}
    tip = 10**9
    return {"maxFeePerGas": int(base) * 2 + tip, "maxPriorityFeePerGas": tip}


def _send(session: ChainSession, tx: dict[str, Any], action: str) -> TxResult:
    address = session.address
    balance = session.w3.eth.get_balance(address)
    if balance == 0:
        raise ChainError(f"{action}: account {address} has no ETH to pay for gas")
    tx = {**tx, "from": address, "chainId": session.chain_id, **_fees(session)}
    try:
        gas = session.w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
    except Exception as exc:  # web3's, eth-tester's and requests' errors alike
        _raise_from(action, exc)
    # Headroom over the estimate: refunds and warm/cold slot differences between estimate and inclusion.
    tx["gas"] = gas + gas // 5 + 10_000
    price = tx.get("maxFeePerGas", tx.get("gasPrice", 0))
    needed = tx["gas"] * price + int(tx.get("value", 0))
    if balance < needed:
        raise ChainError(f"{action}: account {address} has {balance} wei, needs {needed} for value and gas")
    tx["nonce"] = session.w3.eth.get_transaction_count(address, "pending")
    signed = session.account.sign_transaction(tx)
    try:
        tx_hash = session.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = session.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_S)
    except TimeExhausted:
        raise ChainError(f"{action}: transaction not mined within {RECEIPT_TIMEOUT_S:.0f} s") from None
    except Exception as exc:  # web3's, eth-tester's and requests' errors alike
        _raise_from(action, exc)
    if receipt["status"] != 1:
        raise ChainError(f"{action}: transaction {tx_hash.hex()} reverted after it was sent (state changed meanwhile)")
    return TxResult(
        "0x" + bytes(tx_hash).hex().removeprefix("0x"), int(receipt["gasUsed"]), int(receipt["blockNumber"]), receipt
    )


def transact(session: ChainSession, fn: ContractFunction, action: str) -> TxResult:
    """Sends `fn` as a transaction from the session's account and waits for its receipt."""
    try:
        tx = fn.build_transaction({"from": session.address, "gas": 0, "chainId": session.chain_id})
    except Exception as exc:  # web3's, eth-tester's and requests' errors alike
        _raise_from(action, exc)
    return _send(session, {"to": tx["to"], "data": tx["data"]}, action)


def deploy_contract(session: ChainSession, factory: Any, args: list[Any], action: str) -> TxResult:
    """Deploys a contract (web3 contract factory) with constructor `args`."""
    data = factory.constructor(*args).data_in_transaction
    return _send(session, {"data": data}, action)


def send_eth(session: ChainSession, to: str, value: int) -> TxResult:
    """Transfers `value` wei of ETH from the session's account."""
    return _send(session, {"to": to, "value": value}, f"sending {value} wei to {to}")


def funded_institution_accounts(session: ChainSession, n: int) -> list[LocalAccount]:
    """Simulated institutions 0..n-1 on eth-tester, each holding gas ETH (genesis accounts already do;
    later ones get one transfer each, once)."""
    if not session.is_eth_tester:
        raise ChainError("simulated institution accounts are only funded on eth-tester; use real keys on RPC")
    accounts = institution_accounts(n)
    for account in accounts:
        if session.w3.eth.get_balance(account.address) == 0:
            send_eth(session, account.address, GAS_ETH)
    return accounts
