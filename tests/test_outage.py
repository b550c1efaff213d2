"""Chain outage: anvil stops mid-run; training goes on, settlements queue, and go out when it is back; peer votes
are weighed by the stakes read before."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from eth_account import Account

from fedlearn.chain import Deployment, connect, dev_account
from fedlearn.chain.deployment import distributor_contract
from fedlearn.chain.operations import execute_slash, mint, propose_slash, slash_proposal, stake
from fedlearn.chain.session import institution_accounts
from fedlearn.cli.main import main
from fedlearn.config import RunConfig
from fedlearn.errors import ChainError
from fedlearn.federation.simulation import run_federation
from fedlearn.payout.ledger import Ledger
from fedlearn.payout.settlement import ChainLink, Paymaster, institution_addresses
from fedlearn.payout.slashing import SlashingPolicy, evidence_hash
from fedlearn.records.rundir import RoundResult
from tests.chain.conftest import ANVIL, _free_port
from tests.tools import missing_tool

pytestmark = pytest.mark.slow

ANVIL_KEY_0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


class AnvilNode:
    """anvil on a fixed loopback port whose chain survives a restart (state dumped to a file)."""

    def __init__(self, state: Path) -> None:
        self.port, self.state, self.proc = _free_port(), state, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(ANVIL), "--host", "127.0.0.1", "--port", str(self.port), "--silent", "--state", str(self.state),
             "--state-interval", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("anvil did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # anvil dumps its state on exit
            self.proc.wait(timeout=20)


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AnvilNode]:
    """anvil, started, with the coordinator's key in the environment; stopped after the test."""
    if not ANVIL.exists():
        missing_tool(str(ANVIL), "run scripts/setup-chain.sh")
    monkeypatch.setenv("FEDLEARN_PRIVATE_KEY", ANVIL_KEY_0)
    anvil = AnvilNode(tmp_path / "anvil-state.json")
    anvil.start()
    try:
        yield anvil
    finally:
        anvil.stop()


def addresses_file(tmp_path: Path, institutions: int) -> Path:
    """The institutions' own addresses (keys no run derives), as a pilot lists them."""
    path = tmp_path / "addresses.toml"
    path.write_text("".join(f'hospital-0{i} = "{Account.from_key(bytes([i + 40]) * 32).address}"\n'
                            for i in range(1, institutions + 1)))
    return path


def test_settlements_queue_while_the_node_is_down(tmp_path: Path, node: AnvilNode) -> None:
    run_dir = tmp_path / "run"
    pending_seen: dict[int, int] = {}

    def observe(result: RoundResult, total: int) -> None:
        if result.server_round >= 1:
            pending_seen[result.server_round] = len(Ledger.open(run_dir / "ledger.sqlite").pending())
        if result.server_round == 1:
            node.stop()
        if result.server_round == 3:
            node.start()

    config = RunConfig.load(overrides=[
        "run.rounds=4", "data.institutions=3", "scoring.method='loo'", f"chain.backend='{node.url}'",
        "chain.retry_seconds=30", f"chain.addresses='{addresses_file(tmp_path, 3)}'", "integrity.min_stake=0",
    ])
    summary = run_federation(config, run_dir=run_dir, progress=False, observer=observe)
    # Assert: rounds 2 and 3 were queued while the node was down, and nothing is left unsettled.
    assert pending_seen == {1: 0, 2: 1, 3: 2, 4: 0}
    ledger = Ledger.open(run_dir / "ledger.sqlite")
    assert [(r.round, r.status) for r in ledger.rounds()] == [(i, "settled") for i in range(1, 5)]
    session = connect(node.url, account=dev_account(0))
    deployment = Deployment.load(run_dir / "chain" / "deployment.json", chain_id=session.chain_id)
    dist = distributor_contract(session, deployment)
    assert dist.functions.lastRound().call() == 4
    for record in ledger.rounds():
        assert "0x" + bytes(dist.functions.roundOf(record.round).call()).hex() == record.root
    assert summary["rounds"] == 4


def test_a_run_whose_last_settlement_waits_for_the_node_is_finished_by_resuming(
        tmp_path: Path, node: AnvilNode, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"

    def observe(result: RoundResult, total: int) -> None:
        if result.server_round == 1:
            node.stop()  # down through the last round and the end of the run's retries

    config = RunConfig.load(overrides=[
        "run.rounds=2", "data.institutions=2", "scoring.method='loo'", "simulation.engine='local'",
        f"chain.backend='{node.url}'", "chain.retry_seconds=2", f"chain.addresses='{addresses_file(tmp_path, 2)}'",
        f"run.output_dir='{tmp_path}'", "integrity.min_stake=0"])
    with pytest.raises(ChainError, match=f"`fedlearn run --resume {run_dir}` settles them and finishes"):
        run_federation(config, run_dir=run_dir, progress=False, observer=observe)
    assert not (run_dir / "summary.json").exists()
    node.start()
    capsys.readouterr()
    assert main(["settle", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "1 queued round(s) settled" in out and f"`fedlearn run --resume {run_dir}` writes them" in out
    summary = run_federation(config, run_dir=run_dir, progress=False)  # the resume the line names
    assert (run_dir / "summary.json").exists() and (run_dir / "model.npz").exists()
    assert sum(int(i["tokens_earned"]) for i in summary["institutions"]) == 200 * 10**18
    assert [r.status for r in Ledger.open(run_dir / "ledger.sqlite").rounds()] == ["settled", "settled"]


def staked_paymaster(tmp_path: Path) -> tuple[Paymaster, list[str]]:
    """Two institutions staked 10 tokens each on the embedded chain, as a run sets them up."""
    config = RunConfig.load(overrides=["data.institutions=2", "integrity.min_stake=10"])
    names = ["hospital-01", "hospital-02"]
    paymaster = Paymaster(config, Ledger.open(tmp_path / "ledger.sqlite", create=True),
                          ChainLink.open(config.chain, tmp_path, 2), institution_addresses(config, names))
    paymaster.ensure_stakes(10, dict(zip(names, institution_accounts(2))))
    return paymaster, names


def test_a_voter_weighs_its_stake_as_the_round_began_capped_at_the_runs_minimum(tmp_path: Path) -> None:
    # Prepare: hospital-01 stakes 90 tokens more than asked; hospital-02 is slashed for round 2.
    paymaster, names = staked_paymaster(tmp_path)
    session, deployment = paymaster.link.session, paymaster.link.deployment
    rich = session.as_account(institution_accounts(2)[0])
    mint(session, deployment, rich.address, 90 * 10**18)
    stake(rich, deployment, 90 * 10**18)
    # Execute
    slashed = paymaster.slash({(2, "hospital-02"): "0x" + "ab" * 32}, SlashingPolicy(0.03, 3, 5, 0.5))
    # Assert: the slash took half of hospital-02's stake on chain; round 3's votes weigh what is left, rounds 1 and
    # 2 (recomputed on a resume) what stood before; staking more than the run asks buys no more say.
    assert slashed == {"hospital-02": 5 * 10**18}
    assert paymaster.stake_of(paymaster.addresses["hospital-01"]) == 100 * 10**18
    assert paymaster.voting_stakes(3) == {"hospital-01": 10 * 10**18, "hospital-02": 5 * 10**18}
    assert paymaster.voting_stakes(2) == paymaster.voting_stakes(1) == dict.fromkeys(names, 10 * 10**18)


@pytest.mark.parametrize("executed_meanwhile", [False, True])
def test_a_slash_sent_before_its_receipt_was_lost_is_recorded_not_sent_again(tmp_path: Path,
                                                                           executed_meanwhile: bool) -> None:
    # Prepare: hospital-02's slash for round 2 reached the chain, but the node went away before its receipt came
    # back, so the ledger never recorded it and the offence still waits (what an outage mid-send leaves).
    paymaster, _ = staked_paymaster(tmp_path)
    session, deployment = paymaster.link.session, paymaster.link.deployment
    address, update = paymaster.addresses["hospital-02"], "0x" + "ab" * 32
    sent_id, sent = propose_slash(session, deployment, address, 5 * 10**18, evidence_hash(2, update))
    if executed_meanwhile:
        execute_slash(session, deployment, sent_id)  # anyone may, once its window passed (none here)
    # Execute: the next slashing pass, once the node answers again.
    slashed = paymaster.slash({(2, "hospital-02"): update}, SlashingPolicy(0.03, 3, 5, 0.5))
    # Assert: the stake was taken once, by the proposal the chain holds, now recorded and executed.
    assert slashed == {"hospital-02": 5 * 10**18} and paymaster.stake_of(address) == 5 * 10**18
    assert paymaster.ledger.slashes() == [(2, "hospital-02", 5 * 10**18, "0x" + evidence_hash(2, update).hex())]
    assert paymaster.ledger._db.execute("SELECT tx_hash FROM slashes").fetchall() == [(sent.tx_hash,)]
    assert slash_proposal(session, deployment, sent_id).closed
    assert distributor_contract(session, deployment).functions.slashCount().call() == sent_id


def test_while_the_node_is_down_votes_weigh_the_stakes_read_before_and_slashes_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: the stakes read once with the node up.
    paymaster, names = staked_paymaster(tmp_path)
    assert paymaster.voting_stakes(1) == dict.fromkeys(names, 10 * 10**18)
    up = paymaster.link

    def refused(*_: object) -> int:
        raise requests.ConnectionError("connection refused")  # what web3's HTTP provider raises

    # Execute: the node (a JSON-RPC one, now) stops answering while round 2 votes and hospital-02 is flagged.
    monkeypatch.setattr(paymaster, "stake_of", refused)
    monkeypatch.setattr(paymaster, "link", SimpleNamespace(session=SimpleNamespace(is_eth_tester=False),
                                                           reachable=lambda: False))
    policy = SlashingPolicy(0.03, 3, 5, 0.5)
    with caplog.at_level(logging.WARNING, logger="fedlearn"):
        stakes = paymaster.voting_stakes(2)
        slashed = paymaster.slash({(2, "hospital-02"): "0x" + "ab" * 32}, policy)
    # Assert: the round votes on with the stakes last read, and the slash waits, both said in a warning ...
    assert stakes == dict.fromkeys(names, 10 * 10**18) and "votes are weighed by the stakes read before" in caplog.text
    assert slashed == {} and paymaster.unslashed() == [(2, "hospital-02")] and "hospital-02 (round 2)" in caplog.text
    assert paymaster.ledger.slashes() == []
    # ... a node that answers and refuses is an error, as in settlement ...
    paymaster.link.reachable = lambda: True
    with pytest.raises(requests.ConnectionError):
        paymaster.voting_stakes(3)
    # ... and once the node is back, the next round's slashing takes the waiting one, for its own round.
    monkeypatch.undo()
    assert paymaster.link is up
    assert paymaster.slash({}, policy) == {"hospital-02": 5 * 10**18} and paymaster.unslashed() == []
    assert [(r, name, amount) for r, name, amount, _ in paymaster.ledger.slashes()] == [(2, "hospital-02", 5 * 10**18)]
