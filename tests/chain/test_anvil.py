"""A real node: anvil from npm on a free loopback port, driven over JSON-RPC with private keys from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account

from fedlearn import chain
from fedlearn.errors import ChainError
from tests.chain.test_chain_cli import MODEL, run

# anvil's well-known development keys (accounts 0 and 1 of its default mnemonic).
ADMIN_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
INSTITUTION_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
ANVIL_CHAIN_ID = "31337"

pytestmark = pytest.mark.slow


def test_deploy_settle_two_rounds_claim_stake_slash_on_anvil(anvil: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("INSTITUTION_KEY", INSTITUTION_KEY)
    node = ["--rpc", anvil, "--chain-id", ANVIL_CHAIN_ID, "--deployment", str(tmp_path / "d.json")]
    admin, institution = ["--key-env", "ADMIN_KEY"], ["--key-env", "INSTITUTION_KEY"]
    inst = Account.from_key(INSTITUTION_KEY).address
    other = chain.institution_accounts(1)[0].address  # never sends: its claim is submitted by the admin

    assert run("chain", "deploy", *node, *admin, "--unstake-delay", "60") == 0
    assert run("chain", "fund", *node, *admin, "--amount", "1e21") == 0
    for round_, amounts in ((1, {inst: 10**18, other: 2 * 10**18}), (2, {inst: 3 * 10**18, other: 5 * 10**18})):
        rewards = tmp_path / f"r{round_}.json"
        rewards.write_text(json.dumps({a: str(v) for a, v in amounts.items()}))
        assert run("chain", "settle", *node, *admin, "--round", str(round_), "--model-hash", MODEL,
                   "--rewards", str(rewards)) == 0
    tree = str(tmp_path / "trees" / "round-2.json")
    assert run("chain", "claim", *node, *institution, "--tree", tree) == 0
    assert run("chain", "claim", *node, *admin, "--account", other, "--tree", tree) == 0
    assert run("chain", "stake", *node, *institution, "--amount", "1e18") == 0
    with pytest.raises(ChainError, match=r"SlashExceedsStake\(account=.*, amount=2000000000000000000, staked=10{18}\)"):
        run("chain", "slash", *node, *admin, "--account", inst, "--amount", "2e18", "--evidence", MODEL)
    assert run("chain", "slash", *node, *admin, "--account", inst, "--amount", "4e17", "--evidence", MODEL) == 0
    assert run("chain", "unstake", *node, *institution, "--amount", "6e17") == 0
    with pytest.raises(ChainError, match="StakeLocked"):
        run("chain", "withdraw", *node, *institution)
    session = chain.connect(anvil, account=Account.from_key(ADMIN_KEY))
    chain.advance_time(session, 61)
    assert run("chain", "withdraw", *node, *institution) == 0

    capsys.readouterr()
    assert run("chain", "status", *node, "--json") == 0  # reading needs no key
    state = json.loads(capsys.readouterr().out)
    assert [r["round"] for r in state["rounds"]] == [1, 2]
    assert state["total_settled"] == 8 * 10**18 and state["total_claimed"] == 8 * 10**18
    assert state["total_slashed"] == 4 * 10**17 and state["total_staked"] == 0
    assert state["balance"] == 10**21 + 4 * 10**17 - 8 * 10**18


def test_wrong_chain_id_on_anvil(anvil: str, monkeypatch) -> None:
    monkeypatch.setenv("FEDLEARN_PRIVATE_KEY", ADMIN_KEY)
    with pytest.raises(ChainError, match=f"wrong chain: {anvil} has chain id 31337, expected 1"):
        chain.connect(anvil, expected_chain_id=1)


def test_account_without_gas_on_anvil(anvil: str, tmp_path: Path) -> None:
    session = chain.connect(anvil, account=Account.from_key(ADMIN_KEY))
    deployment = chain.deploy(session)
    broke = session.as_account(Account.from_key(b"\x42" * 32))
    with pytest.raises(ChainError, match="has no ETH to pay for gas"):
        chain.request_unstake(broke, deployment, 1)
