"""A real node: anvil from npm on a free loopback port, driven over JSON-RPC with private keys from the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from fedlearn import chain
from fedlearn.errors import ChainError
from tests.chain.conftest import _free_port
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

    # Windows of a minute: roots wait before claims use them, slashes before they are taken.
    assert run("chain", "deploy", *node, *admin, "--unstake-delay", "86400", "--root-delay", "60",
               "--slash-delay", "60", "--reward-per-round", "1e22") == 0
    assert run("chain", "fund", *node, *admin, "--amount", "1e21") == 0
    # The deployment file names its node: a command that forgets --rpc is told which to pass.
    with pytest.raises(ChainError, match=f"d.json was deployed on {re.escape(anvil)}: pass --rpc {re.escape(anvil)}"):
        run("chain", "status", "--deployment", str(tmp_path / "d.json"))
    for round_, amounts in ((1, {inst: 10**18, other: 2 * 10**18}), (2, {inst: 3 * 10**18, other: 5 * 10**18})):
        rewards = tmp_path / f"r{round_}.json"
        rewards.write_text(json.dumps({a: str(v) for a, v in amounts.items()}))
        assert run("chain", "settle", *node, *admin, "--round", str(round_), "--model-hash", MODEL,
                   "--rewards", str(rewards)) == 0
    tree = str(tmp_path / "trees" / "round-2.json")
    with pytest.raises(ChainError, match=r"claim: round 2's root is pending until \d+"):
        run("chain", "claim", *node, *institution, "--tree", tree)
    session = chain.connect(anvil, account=Account.from_key(ADMIN_KEY))
    chain.advance_time(session, 61)
    assert run("chain", "claim", *node, *institution, "--tree", tree) == 0
    assert run("chain", "claim", *node, *admin, "--account", other, "--tree", tree) == 0
    assert run("chain", "stake", *node, *institution, "--amount", "1e18") == 0
    with pytest.raises(ChainError, match=r"slash: 2000000000000000000 exceeds .* slashable stake 10{18}"):
        run("chain", "slash", *node, *admin, "--account", inst, "--amount", "2e18", "--evidence", MODEL)
    assert run("chain", "slash", *node, *admin, "--account", inst, "--amount", "4e17", "--evidence", MODEL) == 0
    with pytest.raises(ChainError, match=r"SlashNotDue\(id=1, executableAt=\d+\)"):
        run("chain", "slash", *node, "--execute", "1", *institution)
    assert run("chain", "unstake", *node, *institution, "--amount", "6e17") == 0
    with pytest.raises(ChainError, match="StakeLocked"):
        run("chain", "withdraw", *node, *institution)
    chain.advance_time(session, 86_401)
    assert run("chain", "slash", *node, "--execute", "1", *institution) == 0  # anyone, after the window
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


def _fedlearn(env: dict[str, str], *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedlearn.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=600, check=check)


def _run_args(anvil: str, tmp_path: Path, *settings: str) -> list[str]:
    """`fedlearn run` of one round, two institutions paid at addresses of their own on anvil, plus ``settings``."""
    addresses = tmp_path / "addresses.toml"
    addresses.write_text("".join(f'hospital-0{i + 1} = "{Account.from_key(bytes([i + 7]) * 32).address}"\n'
                                 for i in range(2)))
    pairs = ["data.institutions=2", "run.rounds=1", "simulation.engine='local'", f"chain.backend='{anvil}'",
             f"chain.addresses='{addresses}'", f"run.output_dir='{tmp_path / 'runs'}'", *settings]
    return ["run", "--no-progress", *[a for s in pairs for a in ("--set", s)]]


def _status(env: dict[str, str], node: list[str]) -> dict:
    return json.loads(_fedlearn(env, "chain", "status", *node, "--json", check=True).stdout)


def test_a_run_on_a_governed_pool_pays_from_it_and_funding_it_again_is_refused_first(anvil: str,
                                                                                    tmp_path: Path) -> None:
    # Prepare: a governed deployment, its reward pool minted into the distributor; the coordinator holds nothing.
    env = {**os.environ, "FEDLEARN_PRIVATE_KEY": ADMIN_KEY}
    deployment = tmp_path / "deployment.json"
    node = ["--rpc", anvil, "--deployment", str(deployment)]
    _fedlearn(env, "chain", "deploy", "--governed", "--reward-pool", "1e21", *node, check=True)
    run_args = _run_args(anvil, tmp_path, f"chain.deployment='{deployment}'", "integrity.min_stake=0")
    # Execute: the default funding ("total") would fund the budget again from the coordinator's empty balance.
    refused = _fedlearn(env, *run_args)
    # Assert: refused in one line naming the setting that pays from the pool, before anything is written ...
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 5 and len(lines) == 1, refused.stderr[-2000:]
    assert "which holds 0 and cannot mint: the distributor's reward pool holds" in lines[0]
    assert 'set chain.funding = "none"' in lines[0] and not (tmp_path / "runs").exists()
    # ... and with it the run pays its round from the pool.
    paid = _fedlearn(env, *run_args, "--set", "chain.funding='none'")
    assert paid.returncode == 0, paid.stderr[-2000:]
    assert _status(env, node)["total_settled"] == 100 * 10**18


def test_a_short_stake_stops_a_pilot_run_before_anything_is_funded(anvil: str, tmp_path: Path) -> None:
    env = {**os.environ, "FEDLEARN_PRIVATE_KEY": ADMIN_KEY}
    deployment = tmp_path / "deployment.json"
    node = ["--rpc", anvil, "--deployment", str(deployment)]
    _fedlearn(env, "chain", "deploy", *node, check=True)
    result = _fedlearn(env, *_run_args(anvil, tmp_path, f"chain.deployment='{deployment}'", "integrity.min_stake=5"))
    assert result.returncode == 5, result.stderr[-2000:]
    assert "institution hospital-01" in result.stderr and "has staked 0 wei" in result.stderr
    status = _status(env, node)
    assert status["total_funded"] == 0 and status["rounds"] == []  # the run stopped before funding or settling
    assert not (tmp_path / "runs").exists()  # checked before the run directory is made


def test_a_run_whose_key_cannot_pay_for_gas_is_refused_before_anything_is_written(anvil: str, tmp_path: Path) -> None:
    broke = Account.from_key(b"\x42" * 32)  # an account anvil never funded
    result = _fedlearn({**os.environ, "FEDLEARN_PRIVATE_KEY": broke.key.hex()},
                       *_run_args(anvil, tmp_path, "integrity.min_stake=0"))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 5 and len(lines) == 1, result.stderr[-2000:]
    assert f"account {broke.address} has no ETH" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_a_pilot_coordinator_short_of_a_stake_stops_before_its_superlink_starts(anvil: str, tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.datasets import load_digits

    from fedlearn.pilot.kits import provision
    from fedlearn.pilot.project import Project
    from tests.test_pilot import COLUMNS, pilot_table

    # Prepare: the kits name anvil; the contracts are deployed; clinic-a has staked its 10 tokens, clinic-b none.
    table = pilot_table()
    table["chain"] = {"rpc": anvil}
    provision(Project.parse(table, "test"), tmp_path / "kits")
    kit = tmp_path / "kits" / "coordinator"
    X, y = load_digits(return_X_y=True)
    (kit / "data").mkdir()
    for name in ("validation", "test"):
        frame = pd.DataFrame(X[:100] / 16.0, columns=COLUMNS)
        frame["digit"] = y[:100]
        frame.to_csv(kit / "data" / f"{name}.csv", index=False)
    env = {**os.environ, "FEDLEARN_PRIVATE_KEY": ADMIN_KEY, "INSTITUTION_KEY": INSTITUTION_KEY}
    node = ["--rpc", anvil, "--deployment", str(kit / "deployment.json")]
    _fedlearn(env, "chain", "deploy", *node, check=True)
    session = chain.connect(anvil, account=Account.from_key(ADMIN_KEY))
    deployment = chain.Deployment.load(kit / "deployment.json", chain_id=session.chain_id)
    clinic_a = Account.from_key(INSTITUTION_KEY).address
    assert clinic_a == table["institution"][0]["address"]
    chain.mint(session, deployment, clinic_a, 10 * 10**18)
    _fedlearn(env, "chain", "stake", *node, "--amount", "1e19", "--key-env", "INSTITUTION_KEY", check=True)
    # Execute: the coordinator starts from its kit.
    result = _fedlearn(env, "pilot", "coordinator", str(kit), "--bind", "127.0.0.1", "--port",
                       str(_free_port()))
    # Assert: one line naming the first institution short of the stake; no SuperLink was started.
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 5 and len(lines) == 1, result.stderr[-2000:]
    assert "institution clinic-b" in lines[0] and "has staked 0 wei; this run asks 10000000000000000000" in lines[0]
    assert not (kit / "state" / "superlink.db").exists() and not (kit / "state" / "logs").exists()
