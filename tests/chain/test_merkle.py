"""The Python tree is byte-compatible with @openzeppelin/merkle-tree's StandardMerkleTree."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedlearn.chain.merkle import RewardTree, leaf_hash, process_proof
from fedlearn.errors import ChainError
from tests.chain.conftest import NODE_MODULES, node_available
from tests.tools import missing_tool

SCRIPT = Path(__file__).with_name("merkle_tree.js")


def _accounts(n: int, seed: int = 0) -> list[str]:
    return [Account.from_key((seed * 10_000 + i + 1).to_bytes(32, "big")).address for i in range(n)]


def _js_tree(values: list[tuple[str, int]]) -> dict:
    payload = json.dumps([[a, str(v)] for a, v in values])
    out = subprocess.run(
        ["node", str(SCRIPT)],
        input=payload,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        timeout=60,
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 257])
def test_root_proofs_and_dump_match_openzeppelin(n: int) -> None:
    if not node_available():
        missing_tool("node or contracts/node_modules", "run scripts/setup-chain.sh")
    accounts = _accounts(n, seed=n)
    values = [(a, (i * 7919 + 1) * 10**15 + (2**255 if i == 0 else 0)) for i, a in enumerate(accounts)]
    ours = RewardTree.of(dict(values))
    js = _js_tree(values)
    assert "0x" + ours.root.hex() == js["root"]
    for (account, _), proof in zip(values, js["proofs"]):
        assert ["0x" + p.hex() for p in ours.proof(account)] == proof
    assert ours.dump() == js["dump"]
    assert RewardTree.load(js["dump"]) == ours


@given(st.dictionaries(st.integers(1, 2**64), st.integers(0, 2**256 - 1), min_size=1, max_size=40))
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_every_proof_reaches_the_root(keys: dict[int, int]) -> None:
    cumulative = {Account.from_key(k.to_bytes(32, "big")).address: v for k, v in keys.items()}
    tree = RewardTree.of(cumulative)
    for account, amount in cumulative.items():
        assert tree.amount_of(account) == amount
        assert process_proof(leaf_hash(account, amount), tree.proof(account)) == tree.root
        # A different amount for the same account does not verify.
        assert process_proof(leaf_hash(account, amount ^ 1), tree.proof(account)) != tree.root
    assert tree.total == sum(cumulative.values())
    assert RewardTree.load(json.loads(json.dumps(tree.dump()))) == tree


def test_bad_rewards_are_refused() -> None:
    (a,) = _accounts(1)
    with pytest.raises(ChainError, match="no accounts"):
        RewardTree.of({})
    with pytest.raises(ChainError, match="invalid account address"):
        RewardTree.of({"0x1234": 1})
    with pytest.raises(ChainError, match="must be an integer"):
        RewardTree.of({a: -1})
    with pytest.raises(ChainError, match="appears twice"):
        RewardTree.of({a: 1, a.lower(): 2})


def test_tampered_dump_is_refused() -> None:
    accounts = _accounts(4)
    dump = RewardTree.of({a: 10 * (i + 1) for i, a in enumerate(accounts)}).dump()
    dump["values"][0]["value"][1] = "999"
    with pytest.raises(ChainError, match="inconsistent at the leaf"):
        RewardTree.load(dump)
    with pytest.raises(ChainError, match="not a standard-v1"):
        RewardTree.load({"format": "simple-v1"})
