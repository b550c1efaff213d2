"""Chain outage: anvil stops mid-run; training goes on, settlements queue, and go out when it is back; peer votes
are weighed by the stakes read before."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from eth_account import Account

from fedlearn.chain import Deployment, connect, dev_account
from fedlearn.chain.deployment import distributor_contract
from fedlearn.chain.session import institution_accounts
from fedlearn.config import RunConfig
from fedlearn.errors import ChainError
from fedlearn.federation.simulation import run_federation
from fedlearn.payout.ledger import Ledger
from fedlearn.payout.settlement import ChainLink, Paymaster, institution_addresses
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


def test_settlements_queue_while_the_node_is_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not ANVIL.exists():
        missing_tool(str(ANVIL), "run scripts/setup-chain.sh")
    monkeypatch.setenv("FEDLEARN_PRIVATE_KEY", ANVIL_KEY_0)
    node = AnvilNode(tmp_path / "anvil-state.json")
    node.start()
    run_dir = tmp_path / "run"
    pending_seen: dict[int, int] = {}

    def observe(result: RoundResult, total: int) -> None:
        if result.server_round >= 1:
            pending_seen[result.server_round] = len(Ledger.open(run_dir / "ledger.sqlite").pending())
        if result.server_round == 1:
            node.stop()
        if result.server_round == 3:
            node.start()

    addresses = tmp_path / "addresses.toml"
    addresses.write_text("".join(f'hospital-0{i} = "{Account.from_key(bytes([i + 40]) * 32).address}"\n'
                                 for i in range(1, 4)))
    config = RunConfig.load(overrides=[
        "run.rounds=4", "data.institutions=3", "scoring.method='loo'", f"chain.backend='{node.url}'",
        "chain.retry_seconds=30", f"chain.addresses='{addresses}'",
    ])
    try:
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
    finally:
        node.stop()


def test_while_the_node_is_down_votes_are_weighed_by_the_stakes_read_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: two staked institutions on the embedded chain, as a run sets them up; their stakes read once.
    config = RunConfig.load(overrides=["data.institutions=2", "integrity.min_stake=10"])
    names = ["hospital-01", "hospital-02"]
    paymaster = Paymaster(config, Ledger.open(tmp_path / "ledger.sqlite", create=True),
                          ChainLink.open(config.chain, tmp_path, 2), institution_addresses(config, names))
    paymaster.ensure_stakes(10, dict(zip(names, institution_accounts(2))))
    assert paymaster.stakes() == dict.fromkeys(names, 10 * 10**18)

    def refused(address: str) -> int:
        raise ChainError("reading stake failed: connection refused")

    # Execute: the node (a JSON-RPC one, now) stops answering.
    monkeypatch.setattr(paymaster, "stake_of", refused)
    down = SimpleNamespace(session=SimpleNamespace(is_eth_tester=False), reachable=lambda: False)
    monkeypatch.setattr(paymaster, "link", down)
    with caplog.at_level(logging.WARNING, logger="fedlearn"):
        stakes = paymaster.stakes()
    # Assert: the round votes on with the stakes last read, and says so; a node that answers and refuses is an
    # error, as in settlement.
    assert stakes == dict.fromkeys(names, 10 * 10**18) and "chain unreachable" in caplog.text
    down.reachable = lambda: True
    with pytest.raises(ChainError, match="connection refused"):
        paymaster.stakes()
