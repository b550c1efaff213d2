"""The chain commands end to end on eth-tester, each in its own parse (the chain kept in the state file)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fedlearn import chain
from fedlearn.chain.deployment import distributor_contract
from fedlearn.chain.session import save_state
from fedlearn.chain.transactions import transact
from fedlearn.cli.chain import register
from fedlearn.errors import ChainError

MODEL = "0x" + "ab" * 32


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="fedlearn")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.handler(args)


@pytest.fixture
def deployed(tmp_path: Path) -> Path:
    path = tmp_path / "deployment.json"
    # A single-operator simulation: no windows, so roots are claimable and slashes executable at once.
    assert run("chain", "deploy", "--deployment", str(path), "--root-delay", "0", "--slash-delay", "0",
               "--reward-per-round", "1e6") == 0
    assert run("chain", "fund", "--deployment", str(path), "--amount", "1e6") == 0
    return path


def test_deploy_settle_claim_stake_slash_from_the_cli(deployed: Path, tmp_path: Path, capsys) -> None:
    d = ["--deployment", str(deployed)]
    accounts = [a.address for a in chain.institution_accounts(3)]
    rewards = tmp_path / "r1.json"
    rewards.write_text(json.dumps({a: str(100 * (i + 1)) for i, a in enumerate(accounts)}))
    assert run("chain", "settle", *d, "--round", "1", "--model-hash", MODEL, "--rewards", str(rewards)) == 0
    tree = deployed.parent / "trees" / "round-1.json"
    assert tree.exists()
    assert run("chain", "settle", *d, "--round", "1", "--model-hash", MODEL, "--rewards", str(rewards)) == 0
    assert "already on chain, nothing sent" in capsys.readouterr().out
    # Institution 1 claims for itself (it has gas from the genesis top-up), then stakes what it got.
    assert run("chain", "claim", *d, "--institution", "1", "--tree", str(tree)) == 0
    assert run("chain", "stake", *d, "--institution", "1", "--amount", "150") == 0
    capsys.readouterr()
    assert run("chain", "slash", *d, "--account", accounts[1], "--amount", "50", "--evidence", MODEL) == 0
    assert "proposed slash 1: 50 of" in capsys.readouterr().out
    with pytest.raises(ChainError, match="slash 1 was already proposed against .* with this evidence; nothing sent"):
        run("chain", "slash", *d, "--account", accounts[1], "--amount", "50", "--evidence", MODEL)  # a retry
    assert run("chain", "slash", *d, "--execute", "1") == 0
    assert run("chain", "unstake", *d, "--institution", "1", "--amount", "100") == 0
    with pytest.raises(ChainError, match="StakeLocked"):
        run("chain", "withdraw", *d, "--institution", "1")  # the unstake delay is at least a day
    capsys.readouterr()
    assert run("chain", "status", *d, "--json") == 0
    state = json.loads(capsys.readouterr().out)
    assert state["last_round"] == 1 and state["total_claimed"] == 200 and state["total_slashed"] == 50
    assert state["stakes"][accounts[1]]["active"] == 0
    # The admin takes back what no round committed: funded 1e6 + slashed 50 - settled 600.
    with pytest.raises(ChainError, match="DefundExceedsAvailable"):
        run("chain", "defund", *d, "--amount", str(10**6 - 600 + 51))
    assert run("chain", "defund", *d, "--amount", str(10**6 - 600 + 50), "--to", accounts[2]) == 0
    capsys.readouterr()
    assert run("chain", "status", *d, "--json") == 0
    state = json.loads(capsys.readouterr().out)
    assert state["available"] == 0 and state["total_defunded"] == 10**6 - 550


def test_cli_bad_input_raises_one_line_chain_errors(deployed: Path, tmp_path: Path) -> None:
    d = ["--deployment", str(deployed)]
    account = chain.institution_accounts(1)[0].address
    rewards = tmp_path / "r.json"
    rewards.write_text(json.dumps({account: 10}))
    lowered = tmp_path / "lowered.json"
    lowered.write_text(json.dumps({account: 9, chain.institution_accounts(2)[1].address: 1}))
    assert run("chain", "settle", *d, "--round", "2", "--model-hash", MODEL, "--rewards", str(rewards)) == 0
    tree = str(deployed.parent / "trees" / "round-2.json")
    cases = [
        (["chain", "settle", *d, "--round", "1", "--model-hash", MODEL, "--rewards", str(rewards)],
         "round 1 is not after the chain's latest round 2"),
        (["chain", "settle", *d, "--round", "3", "--model-hash", MODEL, "--rewards", str(lowered)],
         f"round 3 would lower {account}'s cumulative amount from 10 to 9"),
        (["chain", "settle", *d, "--round", "1003", "--model-hash", MODEL, "--rewards", str(rewards)],
         "round 1003 is more than 1000 after the chain's latest round 2"),
        (["chain", "slash", *d, "--account", account], "slash needs --account, --amount and --evidence"),
        (["chain", "slash", *d, "--execute", "9"], "slash 9 was never proposed"),
        (["chain", "revoke", *d], "revoke: no root is pending"),
        (["chain", "claim", *d, "--account", account, "--tree", tree, "--amount", "11"],
         "above the cumulative 10 owed"),
        (["chain", "claim", *d, "--account", account, "--amount", "10", "--proof", "0x" + "00" * 32], "InvalidProof"),
        (["chain", "slash", *d, "--account", account, "--amount", "1", "--evidence", MODEL],
         "exceeds .* slashable stake 0"),
        (["chain", "stake", *d, "--institution", "0", "--amount", "5"], r"holds 0 tokens \(0 base units\), needs "
         r"0\.000000000000000005 tokens \(5 base units\)"),
        (["chain", "status", "--deployment", str(tmp_path / "none.json")], "no eth-tester state at"),
        (["chain", "status", *d, "--chain-id", "1"], r"wrong chain: eth-tester has chain id \d+, expected 1"),
        (["chain", "status", *d, "--rpc", "http://127.0.0.1:9"], "cannot reach JSON-RPC node"),
        (["chain", "settle", *d, "--round", "3", "--model-hash", "0x12", "--rewards", str(rewards)],
         "model hash must be 32 bytes"),
        (["chain", "settle", *d, "--round", "3", "--model-hash", MODEL, "--rewards", str(tmp_path / "x")],
         "cannot read rewards file"),
    ]
    for argv, message in cases:
        with pytest.raises(ChainError, match=message) as err:
            run(*argv)
        assert "\n" not in str(err.value) and err.value.exit_code == 5


def test_deploy_on_rpc_needs_a_well_formed_key(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDLEARN_PRIVATE_KEY", "not-a-key")
    with pytest.raises(ChainError, match=r"private key in \$FEDLEARN_PRIVATE_KEY is malformed"):
        run("chain", "deploy", "--rpc", "http://127.0.0.1:9", "--deployment", str(tmp_path / "d.json"))


def test_an_institution_verifies_a_published_tree_with_no_key_and_no_run(deployed: Path, tmp_path: Path,
                                                                         capsys) -> None:
    d = ["--deployment", str(deployed)]
    a, b = [acct.address for acct in chain.institution_accounts(2)]
    rewards = tmp_path / "r1.json"
    rewards.write_text(json.dumps({a: "600", b: "400"}))
    assert run("chain", "settle", *d, "--round", "1", "--model-hash", MODEL, "--rewards", str(rewards)) == 0
    first = deployed.parent / "trees" / "round-1.json"
    capsys.readouterr()
    assert run("chain", "verify", *d, "--tree", str(first), "--account", a) == 0
    out = capsys.readouterr().out
    assert "round 1: root claimable" in out and f"{a}: cumulative 600, claimed 0" in out
    assert run("chain", "claim", *d, "--institution", "1", "--tree", str(first)) == 0  # b claims its 400
    # A compromised coordinator settles a root that moves b's amount to itself: the published tree shows it.
    session = chain.connect(chain.ETH_TESTER, state_file=deployed.with_suffix(".eth-tester.json"))
    hostile = chain.RewardTree.of({a: 600, b: 0, session.address: 400})
    deployment = chain.Deployment.load(deployed)
    fn = distributor_contract(session, deployment).functions.settleRound(2, bytes.fromhex(MODEL[2:]), hostile.root,
                                                                         1000)
    transact(session, fn, "settle")
    save_state(session, deployed.with_suffix(".eth-tester.json"))
    published = tmp_path / "round-2.json"
    published.write_text(json.dumps(hostile.dump()))
    assert run("chain", "verify", *d, "--tree", str(first)) == 0
    assert "round 1: root superseded" in capsys.readouterr().out  # claims use round 2's root now
    assert run("chain", "verify", *d, "--tree", str(published), "--previous-tree", str(first)) == 10
    out = capsys.readouterr().out
    assert f"MISMATCH round 2's root lowers {b} from 400 to 0" in out
    assert f"fedlearn chain challenge --account {b} --accepted-tree {first} --pending-tree {published}" in out
    # Without the earlier tree, b still sees the root give it less than it already claimed.
    capsys.readouterr()
    assert run("chain", "verify", *d, "--tree", str(published), "--account", b) == 10
    assert f"MISMATCH round 2's root gives {b} 0, below the 400 it already claimed" in capsys.readouterr().out
    with pytest.raises(ChainError, match="is not a standard-v1"):
        run("chain", "verify", *d, "--tree", str(tmp_path / "r1.json"))  # not a tree
    stranger = tmp_path / "stranger.json"
    stranger.write_text(json.dumps(chain.RewardTree.of({a: 1}).dump()))
    with pytest.raises(ChainError, match="was never settled on this deployment"):
        run("chain", "verify", *d, "--tree", str(stranger))
    # A tree file altered after it was published (a leaf's amount raised) is a finding, not a usage error.
    altered = json.loads(first.read_text())
    altered["values"][0]["value"][1] = str(int(altered["values"][0]["value"][1]) + 1)
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(altered))
    capsys.readouterr()
    assert run("chain", "verify", *d, "--tree", str(tampered)) == 10
    assert capsys.readouterr().out.startswith(f"MISMATCH {tampered}: rewards tree is inconsistent at the leaf of ")
    assert run("chain", "verify", *d, "--tree", str(published), "--previous-tree", str(tampered)) == 10
    assert capsys.readouterr().out.startswith(f"MISMATCH {tampered}: rewards tree is inconsistent")


def test_settle_refuses_a_typo_an_unwritable_tree_or_another_tree_before_sending_anything(
        deployed: Path, tmp_path: Path, capsys) -> None:
    d = ["--deployment", str(deployed)]
    accounts = [a.address for a in chain.institution_accounts(2)]
    trees = deployed.parent / "trees"

    def last_round() -> int:
        capsys.readouterr()
        assert run("chain", "status", *d, "--json") == 0
        return int(json.loads(capsys.readouterr().out)["last_round"])

    def settle(rewards: dict[str, int], *extra: str, where: Path = deployed) -> int:
        path = tmp_path / "rewards.json"
        path.write_text(json.dumps({a: str(v) for a, v in rewards.items()}))
        return run("chain", "settle", "--deployment", str(where), "--round", "1", "--model-hash", MODEL,
                   "--rewards", str(path), *extra)

    # A payout address with one letter's case changed: its checksum shows the typo; nothing is paid to it.
    i = next(i for i, c in enumerate(accounts[1]) if i > 1 and c.isalpha())
    typo = accounts[1][:i] + accounts[1][i].swapcase() + accounts[1][i + 1:]
    with pytest.raises(ChainError, match=f"account {typo}: its EIP-55 checksum is wrong .* is {accounts[1]}$"):
        settle({accounts[0]: 100, typo: 200})
    # The tree cannot be written where asked: refused before the root goes on chain (institutions need it to claim).
    with pytest.raises(ChainError, match="cannot write the tree to /proc/no-such/tree.json: .*; nothing was sent"):
        settle({accounts[0]: 100}, "--tree-out", "/proc/no-such/tree.json")
    # A settlement the chain refuses leaves no tree behind for a root that is not there.
    with pytest.raises(ChainError):
        settle({accounts[0]: 10**30})  # beyond what the distributor holds
    assert last_round() == 0 and not (trees / "round-1.json").exists()
    # A round the distributor cannot hold: refused before any tree is written.
    path = tmp_path / "rewards.json"
    with pytest.raises(ChainError, match=r"round must be an integer in \[1, 2\*\*64\), got -1"):
        run("chain", "settle", "--deployment", str(deployed), "--round", "-1", "--model-hash", MODEL,
            "--rewards", str(path))
    assert not list(trees.glob("round-*.json"))
    assert settle({accounts[0]: 100}) == 0 and last_round() == 1
    # A second deployment in the same folder: its round 1 must not overwrite the first's tree (their proofs).
    other = deployed.parent / "other.json"
    assert run("chain", "deploy", "--deployment", str(other), "--root-delay", "0", "--reward-per-round", "1e6") == 0
    assert run("chain", "fund", "--deployment", str(other), "--amount", "1e6") == 0
    kept = (trees / "round-1.json").read_text()
    with pytest.raises(ChainError, match="round-1.json holds another tree .* pass --tree-out FILE"):
        settle({accounts[1]: 300}, where=other)
    assert (trees / "round-1.json").read_text() == kept
    assert settle({accounts[1]: 300}, "--tree-out", str(tmp_path / "other-round-1.json"), where=other) == 0


def test_numbers_beyond_the_chain_and_negative_slash_ids_are_one_line(deployed: Path, capsys) -> None:
    d = ["--deployment", str(deployed)]
    with pytest.raises(SystemExit) as exit_:  # argparse: usage and one error line, exit 2
        run("chain", "fund", *d, "--amount", "1e80")
    assert exit_.value.code == 2 and "1e80 is beyond what the chain holds (2**256)" in capsys.readouterr().err
    for flag in ("--execute", "--veto"):
        account = chain.institution_accounts(1)[0].address
        with pytest.raises(ChainError, match=f"{flag} ID acts on the proposal as it was made; drop --account"):
            run("chain", "slash", *d, flag, "1", "--account", account)
        with pytest.raises(ChainError, match=f"{flag} -1: slash ids start at 1"):
            run("chain", "slash", *d, flag, "-1")


def test_a_cut_off_deployment_file_is_reported_as_such_not_as_a_missing_chain(tmp_path: Path) -> None:
    broken = tmp_path / "deployment.json"
    broken.write_text('{"format": "fedlearn-deployment", "token": "0x')
    with pytest.raises(ChainError, match=f"deployment file {broken} is not JSON"):
        run("chain", "status", "--deployment", str(broken))


def test_a_settlement_whose_receipt_is_lost_keeps_its_tree(deployed: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from fedlearn.chain import operations as ops

    sent = ops.settle_round

    def lost_receipt(*args: object, **kwargs: object) -> object:
        sent(*args, **kwargs)  # the root reaches the chain ...
        raise ChainError("settling: no receipt within 120 s")  # ... and the command never hears of it

    monkeypatch.setattr(ops, "settle_round", lost_receipt)
    account = chain.institution_accounts(1)[0].address
    rewards = tmp_path / "rewards.json"
    rewards.write_text(json.dumps({account: "100"}))
    with pytest.raises(ChainError, match="no receipt"):
        run("chain", "settle", "--deployment", str(deployed), "--round", "1", "--model-hash", MODEL,
            "--rewards", str(rewards))
    tree = chain.RewardTree.load(json.loads((deployed.parent / "trees" / "round-1.json").read_text()))
    assert tree.amount_of(account) == 100  # the root on chain keeps the tree institutions claim with
