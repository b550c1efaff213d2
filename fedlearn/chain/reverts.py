"""Turns revert data into the custom error's name and arguments, whichever of our contracts raised it."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_abi import decode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from fedlearn.chain.artifacts import all_abis
from fedlearn.errors import ChainError

_HEX = re.compile(r"0x[0-9a-fA-F]{8,}")
# eth-tester's calls (not its transactions) carry the revert data only as a bytes literal in the message.
_BYTES_LITERAL = re.compile(r"execution reverted: (b'.*'|b\".*\")$", re.DOTALL)
# Solidity's built-in reverts: `require(cond, "reason")` and `assert` / arithmetic panics.
_BUILTIN = {
    "08c379a0": ("Error", ["reason"], ["string"]),
    "4e487b71": ("Panic", ["code"], ["uint256"]),
}


@dataclass(frozen=True)
class Revert:
    """A decoded revert: the error's name and its arguments by name."""

    name: str
    args: dict[str, Any]

    def __str__(self) -> str:
        shown = ", ".join(f"{k}={_show(v)}" for k, v in self.args.items())
        return f"{self.name}({shown})"


class ChainRevertError(ChainError):
    """A transaction or call reverted; `revert` says with which custom error."""

    def __init__(self, action: str, revert: Revert) -> None:
        super().__init__(f"{action} reverted: {revert}")
        self.revert = revert


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def _abi_type(item: dict[str, Any]) -> str:
    # Tuples in errors are not used by our contracts or OpenZeppelin's; keep them readable anyway.
    if item["type"].startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item["components"]) + ")" + item["type"][5:]
    return item["type"]


@lru_cache(maxsize=1)
def _errors() -> dict[str, tuple[str, list[str], list[str]]]:
    table = dict(_BUILTIN)
    for abi in all_abis():
        for item in abi:
            if item.get("type") != "error":
                continue
            types = [_abi_type(i) for i in item["inputs"]]
            selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})").hex()
            table[selector] = (item["name"], [i["name"] or f"arg{n}" for n, i in enumerate(item["inputs"])], types)
    return table


def decode_revert(data: bytes | str) -> Revert:
    """Decodes revert data (bytes or 0x-hex) into a Revert; unknown selectors keep their raw data."""
    raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data)
    if len(raw) < 4:
        return Revert("UnknownRevert", {"data": raw})
    known = _errors().get(raw[:4].hex())
    if known is None:
        return Revert("UnknownRevert", {"data": raw})
    name, names, types = known
    try:
        values = decode(types, raw[4:])
    except Exception:  # malformed payload behind a known selector
        return Revert(name, {"data": raw[4:]})
    args = {
        n: to_checksum_address(v) if t == "address" else v for n, t, v in zip(names, types, values)
    }
    return Revert(name, args)


def revert_data(exc: BaseException) -> str | None:
    """The revert data a web3 exception carries, from its `data` or, failing that, its message."""
    # eth-tester raises with the raw revert bytes as the argument of the exception it chains from.
    cause: BaseException | None = exc
    while cause is not None:
        if cause.args and isinstance(cause.args[0], (bytes, bytearray)):
            return "0x" + bytes(cause.args[0]).hex()
        cause = cause.__cause__ or cause.__context__
    data = getattr(exc, "data", None)
    if isinstance(data, dict):  # JSON-RPC error objects
        data = data.get("data")
    if isinstance(data, (bytes, bytearray)):
        return "0x" + bytes(data).hex()
    if isinstance(data, str) and data.startswith("0x"):
        return data
    for arg in exc.args:
        if isinstance(arg, dict) and isinstance(arg.get("data"), str):
            return arg["data"]
        if isinstance(arg, str) and (literal := _BYTES_LITERAL.search(arg)):
            try:
                raw = ast.literal_eval(literal.group(1))
            except (ValueError, SyntaxError):
                raw = None  # not a literal after all: the message is reported as it is
            if isinstance(raw, bytes):
                return "0x" + raw.hex()
        if isinstance(arg, str):
            match = _HEX.search(arg)
            if match:
                return match.group(0)
    return None
