"""The license and its governance over JSON-RPC on anvil, from the CLI: deploy, quote, acquire, fees, a vote."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from eth_account import Account

from tests.chain.test_anvil import ADMIN_KEY, ANVIL_CHAIN_ID, INSTITUTION_KEY
from tests.chain.test_chain_cli import MODEL
from tests.chain.test_license_cli import run

pytestmark = pytest.mark.slow


def test_license_and_governance_on_anvil(anvil: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("INSTITUTION_KEY", INSTITUTION_KEY)
    node = ["--rpc", anvil, "--chain-id", ANVIL_CHAIN_ID, "--deployment", str(tmp_path / "d.json")]
    admin, inst = ["--key-env", "ADMIN_KEY"], ["--key-env", "INSTITUTION_KEY"]
    institution = Account.from_key(INSTITUTION_KEY).address

    # A governed federation: the pool is minted into the distributor and the institution gets the tokens it
    # votes with; the deployer keeps only its bounded coordinator and attester roles.
    assert run("chain", "deploy", *node, *admin, "--governed", "--root-delay", "0", "--reward-per-round", "1e22",
               "--reward-pool", "1e22", "--voting-delay", "10", "--voting-period", "100",
               "--timelock-delay", "50") == 0
    rewards = tmp_path / "r1.json"
    rewards.write_text(json.dumps({institution: str(10**22)}))
    assert run("chain", "settle", *node, *admin, "--round", "1", "--model-hash", MODEL, "--rewards", str(rewards)) == 0
    assert run("chain", "claim", *node, *inst, "--tree", str(tmp_path / "trees" / "round-1.json")) == 0
    capsys.readouterr()
    assert run("license", "quote", *node, "--revenue", "3000000") == 0  # reading needs no key
    assert "required stake 2,000 tokens" in capsys.readouterr().out
    assert run("license", "attest", *node, *admin, institution, "--revenue", "3e6") == 0
    assert run("license", "acquire", *node, *inst) == 0
    assert run("license", "pay-fee", *node, *inst, "--amount", "10") == 0
    assert run("license", "withdraw", *node, *admin, "--account", institution) == 0

    assert run("gov", "delegate", *node, *inst) == 0
    assert run("gov", "advance-time", *node, *admin, "1") == 0
    capsys.readouterr()
    assert run("gov", "propose", *node, *inst, "--set", "reward-per-round=500", "--description", "Halve rewards") == 0
    proposal = re.search(r"proposal (\d+)", capsys.readouterr().out).group(1)
    assert run("gov", "advance-time", *node, "11") == 0  # moving the clock signs nothing: no key
    assert run("gov", "vote", *node, *inst, proposal, "--support", "for") == 0
    assert run("gov", "advance-time", *node, *admin, "101") == 0
    assert run("gov", "queue", *node, *admin, proposal) == 0
    assert run("gov", "advance-time", *node, *admin, "51") == 0
    assert run("gov", "execute", *node, *admin, proposal) == 0
    capsys.readouterr()
    assert run("chain", "status", *node, "--json") == 0
    assert json.loads(capsys.readouterr().out)["reward_per_round"] == 500 * 10**18
