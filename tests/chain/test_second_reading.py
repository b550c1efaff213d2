"""A second reading of what a run paid: ethers.js and @openzeppelin/merkle-tree, not web3.py, read it on anvil."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from eth_account import Account

from fedlearn import chain
from fedlearn.config import RunConfig
from fedlearn.payout.ledger import Ledger
from fedlearn.payout.slashing import SlashingPolicy, slash_amount
from tests.chain.conftest import NODE_MODULES, node_available
from tests.chain.test_anvil import ADMIN_KEY, _fedlearn
from tests.tools import missing_tool

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("read_chain.js")
# anvil's funded development accounts 1-3 (its default mnemonic): institutions that pay their own gas.
INSTITUTION_KEYS = {
    "hospital-01": "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "hospital-02": "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "hospital-03": "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
}
STAKE = 10 * 10**18  # the default integrity.min_stake, 10 tokens


def _read_chain(anvil: str, distributor: str, tree: Path, accounts: list[str],
                updates: list[tuple[int, str]]) -> dict:
    if not node_available() or not (NODE_MODULES / "ethers").is_dir():
        missing_tool("ethers", "run scripts/setup-chain.sh to install the contracts' npm packages")
    request = {"rpc": anvil, "distributor": distributor, "tree": str(tree), "accounts": accounts,
               "updates": [{"round": r, "hash": h} for r, h in updates]}
    out = subprocess.run(["node", str(SCRIPT)], input=json.dumps(request), capture_output=True, text=True,
                         timeout=120, env={**os.environ, "NODE_PATH": str(NODE_MODULES)})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_ethers_reads_on_chain_what_the_run_says_it_staked_settled_paid_and_slashed(anvil: str,
                                                                                   tmp_path: Path) -> None:
    # Prepare: contracts on anvil; three institutions at accounts of their own, each minted and staking the default
    # 10 tokens itself; a four-round run in the default configuration pays them there, hospital-03 flipping the
    # sign of its updates (slashed on its third bad round of four).
    env = {**os.environ, "FEDLEARN_PRIVATE_KEY": ADMIN_KEY}
    deployment = tmp_path / "deployment.json"
    node = ["--rpc", anvil, "--deployment", str(deployment)]
    _fedlearn(env, "chain", "deploy", *node, check=True)
    admin = chain.connect(anvil, account=Account.from_key(ADMIN_KEY))
    contracts = chain.Deployment.load(deployment, chain_id=admin.chain_id)
    address = {name: Account.from_key(key).address for name, key in INSTITUTION_KEYS.items()}
    for name, key in INSTITUTION_KEYS.items():
        chain.mint(admin, contracts, address[name], STAKE)
        _fedlearn({**env, "INSTITUTION_KEY": key}, "chain", "stake", *node, "--amount", "1e19",
                  "--key-env", "INSTITUTION_KEY", check=True)
    (tmp_path / "addresses.toml").write_text("".join(f'{n} = "{a}"\n' for n, a in address.items()))
    settings = ["data.institutions=3", "run.rounds=4", "simulation.engine='local'", f"chain.backend='{anvil}'",
                "integrity.behaviours='hospital-03=sign_flip:scale=4'",
                f"chain.deployment='{deployment}'", f"chain.addresses='{tmp_path / 'addresses.toml'}'",
                f"run.output_dir='{tmp_path / 'runs'}'"]
    done = _fedlearn(env, "run", "--no-progress", *[a for s in settings for a in ("--set", s)])
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = next((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    ledger = Ledger.open(run_dir / "ledger.sqlite")
    journaled = [(e.round, e.model_hash, e.root, str(e.round_total)) for e in ledger.rounds()]
    slashes = ledger.slashes()
    ledger.close()
    tree = tmp_path / "trees" / f"{journaled[-1][2]}.json"  # a shared deployment's trees, by root, beside its file
    earned = {i["name"]: int(i["tokens_earned"]) for i in summary["institutions"]}
    # Once the root's window has passed, each institution that earned anything claims its cumulative amount itself.
    chain.advance_time(admin, 2 * 86_400)
    for name, key in INSTITUTION_KEYS.items():
        if earned[name]:
            claimed = _fedlearn({**env, "INSTITUTION_KEY": key}, "chain", "claim", *node, "--key-env",
                                "INSTITUTION_KEY", "--tree", str(tree))
            assert claimed.returncode == 0, claimed.stderr[-2000:]
    # Every update the run hashed, as rounds.json records it (a deployment's first run: the chain's rounds are its).
    rounds = json.loads((run_dir / "rounds.json").read_text())
    updates = {(r["server_round"], name): h for r in rounds if r.get("scores")
               for name, h in r["scores"]["update_hashes"].items()}
    # Execute
    read = _read_chain(anvil, contracts.distributor, tree, list(address.values()),
                       [(server_round, h) for (server_round, _), h in updates.items()])
    # Assert: the chain holds the run's four rounds, each with the model hash and root its ledger journaled ...
    assert [(r["round"], r["modelHash"], r["rewardsRoot"], r["roundTotal"]) for r in read["rounds"]] == journaled
    assert len(journaled) == 4 and read["claimableRound"] == 4
    # ... the published tree is the claimable root, and its leaves are what summary.json says each earned ...
    assert read["treeRoot"] == read["rewardsRoot"] == journaled[-1][2]
    assert {a: int(v) for a, v in read["leaves"].items()} == {address[n]: v for n, v in earned.items()}
    assert sum(earned.values()) == int(read["rounds"][-1]["leavesTotal"]) > 0 and earned["hospital-03"] == 0
    # ... each institution staked 10 tokens, claimed exactly what it earned, once, and holds it ...
    for name, account in address.items():
        mine = read["accounts"][account]
        assert mine["staked"] == [str(STAKE)]
        assert mine["claimed"] == mine["balance"] == str(earned[name])
        assert mine["claimedEvents"] == ([mine["claimed"]] if earned[name] else [])
    # ... and the one slash proposed is the ledger's: hospital-03, its amount, and evidence that the rule computed
    # here from that round's update hash gives, and no other update of the run.
    taken = slash_amount(STAKE, SlashingPolicy.of(RunConfig.load().integrity))  # the default fraction of a stake
    assert [(name, amount) for _, name, amount, _ in slashes] == [("hospital-03", taken)] and taken > 0
    [(slash_round, _, _, evidence)] = slashes
    assert read["slashProposals"] == [{"account": address["hospital-03"], "amount": str(taken),
                                       "evidenceHash": evidence}]
    computed = dict(zip(updates, read["evidence"]))
    assert [key for key, value in computed.items() if value == evidence] == [(slash_round, "hospital-03")]
