"""Faults: an institution whose node is gone. The round goes on with the nodes present once the quorum is met;
the missing institution earns nothing for the round and is not slashed; below quorum the run stops, never
waiting forever."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.supercore.task_identity import TaskIdentity

from fedlearn.config import RunConfig
from fedlearn.federation.coordinator import (
    QuorumNotReached,
    RunInterrupted,
    RunOptions,
    build_server_app,
    send_and_receive,
)
from fedlearn.federation.institution import build_client_app
from fedlearn.federation.localgrid import LocalGrid
from tests.runs import SMALL, ledger_of, rounds_json


class GridWithoutNode(LocalGrid):
    """The in-process grid with one node that never connected (or died before the run)."""

    def __init__(self, config: RunConfig, absent: int) -> None:
        super().__init__(build_client_app(config), config.data.institutions)
        self.absent = absent

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in super().get_node_ids() if n != self.absent]


def _run(tmp_path: Path, *overrides: str) -> Path:
    config = RunConfig.load(overrides=[*SMALL, "data.institutions=3", "run.rounds=2", "integrity.min_stake=5",
                                       f"run.output_dir='{tmp_path}'", *overrides])
    run_dir = tmp_path / "run"
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    app = build_server_app(config, RunOptions(run_dir=run_dir))
    app(GridWithoutNode(config, absent=3), Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                                    run_config={}))
    return run_dir


def test_a_round_goes_on_with_the_quorum_and_the_missing_institution_earns_nothing(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "strategy.min_nodes=2")
    rounds = rounds_json(run_dir)
    for record in rounds[1:]:
        assert sorted(record["scores"]["scores"]) == ["hospital-01", "hospital-02"]
    journaled, _, _ = ledger_of(run_dir)
    assert [r.status for r in journaled] == ["settled", "settled"]
    for record in journaled:
        paid = {e.institution: e.cumulative for e in record.entries}
        assert paid["hospital-03"] == 0 and paid["hospital-01"] + paid["hospital-02"] > 0
    from fedlearn.payout.ledger import LEDGER_FILE, Ledger

    ledger = Ledger.open(run_dir / LEDGER_FILE)
    assert ledger.slashes() == []  # absent is not misbehaving
    ledger.close()


class GridWithGoneNode(LocalGrid):
    """The in-process grid as a SuperLink answers for a node that stopped sending heartbeats mid-run."""

    def __init__(self, config: RunConfig, gone: int) -> None:
        super().__init__(build_client_app(config), config.data.institutions)
        self.gone = gone

    def _deliver(self, message: Message) -> Message:
        if message.metadata.dst_node_id != self.gone:
            return super()._deliver(message)
        reply = Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="Error: Node Unavailable"), reply_to=message)
        reply.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID  # as flwr's linkstate makes it
        return reply


def test_a_node_that_goes_away_is_missing_from_the_round_not_a_rejected_phantom(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = RunConfig.load(overrides=[*SMALL, "data.institutions=3", "run.rounds=2", "integrity.min_stake=5",
                                       "strategy.min_nodes=2", f"run.output_dir='{tmp_path}'"])
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    app = build_server_app(config, RunOptions(run_dir=tmp_path / "run"))
    with caplog.at_level(logging.WARNING, logger="fedlearn"):
        app(GridWithGoneNode(config, gone=3), Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                                        run_config={}))
    for record in rounds_json(tmp_path / "run")[1:]:
        scores = record["scores"]
        assert sorted(scores["scores"]) == ["hospital-01", "hospital-02"] and scores["rejected"] == {}
    assert "round 1: no reply from node 3: Error: Node Unavailable" in caplog.text
    journaled, _, _ = ledger_of(tmp_path / "run")
    assert all({e.institution: e.cumulative for e in r.entries}["hospital-03"] == 0 for r in journaled)


def test_below_quorum_the_run_stops_after_the_wait_instead_of_waiting_forever(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(QuorumNotReached, match=r"only 2 of the 3 nodes a round needs .* within strategy.node_wait"
                                               rf" = 1.5 s; the run stops here and resumes with `fedlearn run "
                                               rf"--resume {tmp_path / 'run'}`$"):
        _run(tmp_path, "strategy.min_nodes=3", "strategy.node_wait=1.5")
    assert time.monotonic() - start < 60


class SilentGrid(LocalGrid):
    """A grid whose nodes never reply (an engine that has been stopped)."""

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return [str(n) for n, _ in enumerate(messages)]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return []


def test_a_stop_ends_the_wait_for_replies_at_once_instead_of_after_the_round_timeout() -> None:
    config = RunConfig.load(overrides=[*SMALL, "data.institutions=2"])
    grid, stop = SilentGrid(build_client_app(config), 2), threading.Event()
    messages = [Message(RecordDict(), dst_node_id=n, message_type="train") for n in (1, 2)]
    threading.Timer(0.3, stop.set).start()
    start = time.monotonic()
    with pytest.raises(RunInterrupted):
        send_and_receive(grid, messages, 600.0, stop)
    assert time.monotonic() - start < 5
