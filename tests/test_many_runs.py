"""One deployment serves every run of a federation: rounds numbered across runs, amounts carried over, and
``fedlearn verify`` comparing each run's ledger with the chain's whole history."""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from fedlearn import chain
from fedlearn.chain.deployment import distributor_contract
from fedlearn.chain.session import save_state
from fedlearn.chain.transactions import transact
from fedlearn.cli.runs import settle
from fedlearn.config import RunConfig
from fedlearn.errors import ChainError
from fedlearn.federation.simulation import run_federation
from fedlearn.payout.ledger import LEDGER_FILE, Ledger
from fedlearn.payout.settlement import TREES_DIR, Paymaster
from fedlearn.payout.verify import verify_run
from tests.chain.test_chain_cli import run as chain_cli
from tests.runs import SMALL, ledger_of, real_run

ROUNDS = 3


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A single-operator deployment on an embedded chain kept beside its file, as `fedlearn chain deploy` makes."""
    path = tmp_path / "federation" / "deployment.json"
    state = path.with_suffix(".eth-tester.json")
    session = chain.connect(chain.ETH_TESTER, institutions=3)
    deployment = chain.deploy(session, reward_per_round=100 * 10**18, root_delay=0, slash_delay=0)
    deployment.save(path)
    save_state(session, state)
    return path


def _run(run_dir: Path, deployment: Path, seed: int, *overrides: str) -> None:
    # The demo's training, so that the first round gains most of the headroom and the rate limit binds.
    real_run(run_dir, f"run.seed={seed}", "data.institutions=3", f"run.rounds={ROUNDS}",
             f"chain.deployment='{deployment}'", "integrity.min_stake=0", "model.hidden_units=64",
             "train.local_epochs=2", "train.momentum=0.9", "payout.interim_fraction=1.0", *overrides)


def test_two_runs_that_slash_one_offender_on_one_deployment_each_slash_on_their_own_evidence(
        shared: Path, tmp_path: Path) -> None:
    # Prepare / Execute: the same seed twice, hospital-02 reversing its update every round: identical updates, so
    # only the chain's round number tells the two runs' offences apart.
    attack = ("integrity.min_stake=10", "integrity.behaviours='hospital-02=sign_flip:scale=4'")
    first, second = tmp_path / "runs" / "first", tmp_path / "runs" / "second"
    _run(first, shared, 7, *attack)
    _run(second, shared, 7, *attack)
    # Assert: each run slashed hospital-02 itself, on evidence of its own; the chain holds both; verify passes both.
    slashes = [Ledger.open(d / LEDGER_FILE).slashes() for d in (first, second)]
    assert all(s and {name for _, name, _, _ in s} == {"hospital-02"} for s in slashes)
    assert not {e for _, _, _, e in slashes[0]} & {e for _, _, _, e in slashes[1]}
    session = chain.connect(chain.ETH_TESTER, state_file=shared.with_suffix(".eth-tester.json"))
    proposals = distributor_contract(session, chain.Deployment.load(shared)).events.SlashProposed().get_logs(
        from_block=0)
    assert len(proposals) == len(slashes[0]) + len(slashes[1])
    assert verify_run(first)[0] == [] and verify_run(second)[0] == []


def test_runs_paying_from_a_pool_they_did_not_fund_leave_what_nobody_earned_in_it(shared: Path, tmp_path: Path) -> None:
    # Prepare: the pool funded once for the federation; two runs that learn nothing (no gain, nothing earned).
    state = shared.with_suffix(".eth-tester.json")
    session = chain.connect(chain.ETH_TESTER, state_file=state)
    deployment = chain.Deployment.load(shared)
    chain.fund(session, deployment, 600 * 10**18)
    save_state(session, state)
    # Execute
    for name in ("first", "second"):
        real_run(tmp_path / "runs" / name, "run.rounds=1", "data.institutions=3", "train.learning_rate=1e-30",
                 "integrity.refit_output_layer=false", "integrity.min_stake=0", f"chain.deployment='{shared}'",
                 "chain.funding='none'")
    # Assert: nothing was taken out of the pool (a run returns only what it funded itself), and both verify.
    session = chain.connect(chain.ETH_TESTER, state_file=state)
    assert chain.status(session, deployment).available == 600 * 10**18
    for name in ("first", "second"):
        run_dir = tmp_path / "runs" / name
        assert Ledger.open(run_dir / LEDGER_FILE).returns() == [] and verify_run(run_dir)[0] == []


def test_a_run_on_a_governed_embedded_pool_is_told_to_pay_from_it_before_anything_is_written(tmp_path: Path) -> None:
    # Prepare: a governed deployment on the embedded chain: the pool minted into the distributor, and the deployer
    # (the coordinator, which signs runs) holding no tokens and no minter role.
    path = tmp_path / "federation" / "deployment.json"
    assert chain_cli("chain", "deploy", "--governed", "--reward-pool", "1e21", "--deployment", str(path)) == 0
    # Execute / Assert: the default funding would fund the budget again from nothing: refused, nothing written.
    with pytest.raises(ChainError, match=r"which holds 0 and cannot mint: the distributor's reward pool holds "
                                         r"\d+ unsettled wei already: set chain.funding = \"none\""):
        real_run(tmp_path / "runs" / "refused", "run.rounds=1", "data.institutions=3", "integrity.min_stake=0",
                 f"chain.deployment='{path}'")
    assert not (tmp_path / "runs").exists()


def test_two_runs_on_one_deployment_number_rounds_across_runs_and_carry_amounts(shared: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "runs" / "first", tmp_path / "runs" / "second"
    _run(first, shared, seed=7)
    # The same seed: the same scores and roots as the first run's, were it to restart at round 1. Its config asks
    # 7 tokens a round; the deployment's governed 100 is what it pays.
    _run(second, shared, 7, "chain.reward_per_round=7.0")
    first_rounds, _, first_meta = ledger_of(first)
    second_rounds, _, second_meta = ledger_of(second)
    assert (first_meta["round_offset"], second_meta["round_offset"]) == ("0", str(ROUNDS))
    assert {r.budget for r in first_rounds + second_rounds} == {100 * 10**18 * ROUNDS}
    # The chain's rate limit bound the first round's release (a large first gain), and verify plans with it.
    assert first_rounds[0].released == 100 * 10**18

    session = chain.connect(chain.ETH_TESTER, state_file=shared.with_suffix(".eth-tester.json"))
    deployment = chain.Deployment.load(shared)
    dist = distributor_contract(session, deployment)
    assert dist.functions.lastRound().call() == 2 * ROUNDS  # both runs' rounds, none reused
    # Every leaf of the chain's last root is what the two runs paid the account, added up.
    last = chain.RewardTree.load(json.loads(
        (shared.parent / TREES_DIR / f"{second_rounds[-1].root}.json").read_text()))
    for a, b in zip(first_rounds[-1].entries, second_rounds[-1].entries):
        assert a.address == b.address
        assert last.amount_of(a.address) == a.cumulative + b.cumulative
    assert dist.functions.totalSettled().call() == sum(last.leaves().values())
    # Each round's record is published beside its tree, under the chain's round number.
    record = json.loads((shared.parent / TREES_DIR / f"record-{2 * ROUNDS}.json").read_text())
    assert (record["run_round"], record["root"], record["tree"]) == (ROUNDS, second_rounds[-1].root,
                                                                     f"{second_rounds[-1].root}.json")
    # Each run's ledger matches the chain's history.
    for run_dir in (first, second):
        problems, checked = verify_run(run_dir)
        assert problems == [] and checked == ROUNDS
    # A ledger whose opening amounts are not the chain's earlier root is caught.
    ledger = Ledger.open(second / LEDGER_FILE)
    opening = json.loads(second_meta["opening"])
    account = sorted(opening)[0]
    ledger.set_meta(opening=json.dumps({**opening, account: str(int(opening[account]) + 1)}))
    ledger.close()
    problems, _ = verify_run(second)
    assert any("opening amounts do not match the chain's history" in p for p in problems), problems


def _stoppable(run_dir: Path, deployment: Path) -> RunConfig:
    """A run on the shared deployment, run here through ``run_federation`` to stop and resume it."""
    return RunConfig.load(overrides=[*SMALL, f"run.output_dir='{run_dir.parent}'", "data.institutions=3",
                                     f"run.rounds={ROUNDS}", f"chain.deployment='{deployment}'"])


def test_a_stopped_run_that_another_run_overtook_on_the_deployment_is_refused_before_it_goes_on(
        shared: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "runs" / "first", tmp_path / "runs" / "second"
    config = _stoppable(first, shared)
    run_federation(config, run_dir=first, progress=False, stop_after=1)
    _run(second, shared, seed=8)  # another run takes the deployment's next rounds meanwhile
    before = ledger_of(first)
    with pytest.raises(ChainError, match=f"another run settled chain rounds 2..{1 + ROUNDS} after this run's last "
                                         "settled round; runs on one deployment take turns"):
        run_federation(config, run_dir=first, progress=False)
    after = ledger_of(first)
    # Nothing more journaled, funded or settled for the stopped run; the run that went on is untouched.
    assert [(r.round, r.status) for r in after[0]] == [(1, "settled")] and after[2] == before[2]
    problems, checked = verify_run(second)
    assert problems == [] and checked == ROUNDS


def test_a_run_takes_up_its_own_rounds_again_and_finishes_after_another_run_took_its_turn(
        shared: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "runs" / "first", tmp_path / "runs" / "second"
    config = _stoppable(first, shared)
    # A settlement that reached the chain while its receipt never reached the ledger (a crash, a timeout): the
    # round is pending in the ledger, settled on chain, and still this run's own.
    run_federation(config, run_dir=first, progress=False, stop_after=1)
    db = sqlite3.connect(first / LEDGER_FILE)
    db.execute("UPDATE rounds SET status = 'pending' WHERE round = 1")
    db.commit()
    db.close()
    run_federation(config, run_dir=first, progress=False)
    assert [(r.round, r.status) for r in ledger_of(first)[0]] == [(i, "settled") for i in range(1, ROUNDS + 1)]
    # Every round settled, the summary lost, another run's turn since: resuming writes the summary, and only that.
    (first / "summary.json").unlink()
    _run(second, shared, seed=8)
    before = ledger_of(first)
    run_federation(config, run_dir=first, progress=False)
    assert (first / "summary.json").exists() and ledger_of(first) == before


def test_verify_flags_a_later_pending_root_that_lowers_this_runs_amounts(tmp_path: Path) -> None:
    """An institution's `verify` after the run: a hostile root settled next is flagged with how to revoke it."""
    path = tmp_path / "federation" / "deployment.json"
    session = chain.connect(chain.ETH_TESTER, institutions=3)
    deployment = chain.deploy(session, reward_per_round=100 * 10**18, root_delay=86_400, slash_delay=0)
    deployment.save(path)
    save_state(session, path.with_suffix(".eth-tester.json"))
    run_dir = tmp_path / "runs" / "one"
    _run(run_dir, path, seed=3)
    assert verify_run(run_dir) == ([], ROUNDS)

    rounds, _, _ = ledger_of(run_dir)
    leaves = {e.address: e.cumulative for e in rounds[-1].entries}
    victim = max(leaves, key=lambda a: leaves[a])
    session = chain.connect(chain.ETH_TESTER, state_file=path.with_suffix(".eth-tester.json"))
    hostile = chain.RewardTree.of({**leaves, victim: 0, session.address: leaves[victim]})
    dist = distributor_contract(session, deployment)
    transact(session, dist.functions.settleRound(ROUNDS + 1, b"\x01" * 32, hostile.root, hostile.total), "settle")
    save_state(session, path.with_suffix(".eth-tester.json"))
    problems, _ = verify_run(run_dir)
    assert len(problems) == 1 and "has no tree file" in problems[0] and "fedlearn chain revoke" in problems[0]
    # Published, the hostile tree is read and the lowered account named, with the challenge that revokes it.
    (path.parent / TREES_DIR / f"0x{hostile.root.hex()}.json").write_text(json.dumps(hostile.dump()))
    problems, _ = verify_run(run_dir)
    assert len(problems) == 1 and f"lowers {victim} from {leaves[victim]} to 0" in problems[0]
    assert f"fedlearn chain challenge --account {victim}" in problems[0]


@pytest.mark.parametrize("then", ["resume", "settle"])
def test_a_slash_that_waited_for_the_chain_when_the_run_stopped_goes_out_later_once(
        shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str], then: str) -> None:
    # Prepare: hospital-02 reverses its update every round and is flagged in round 2 (k = 2); no slashing pass
    # reaches the chain, and the run stops: after round 2 (a coordinator killed while its slash waited, to be
    # resumed) or at its end (a pilot's coordinator, which `fedlearn settle` finishes).
    run_dir = tmp_path / "runs" / "first"
    config = _stoppable(run_dir, shared).replace(integrity={
        "min_stake": 10.0, "slash_k": 2, "behaviours": "hospital-02=sign_flip:scale=4"})
    with monkeypatch.context() as patched, caplog.at_level(logging.WARNING, logger="fedlearn"):
        patched.setattr(Paymaster, "retry_slashes", lambda self: {})
        run_federation(config, run_dir=run_dir, progress=False, stop_after=2 if then == "resume" else None)
    assert Ledger.open(run_dir / LEDGER_FILE).slashes() == []
    # Execute
    if then == "resume":
        run_federation(config, run_dir=run_dir, progress=False)
    else:
        assert settle(argparse.Namespace(run_dir=run_dir)) == 0
    # Assert: the round-2 offence was slashed once, on round 2's evidence (the one the end-of-run warning gave to
    # propose by hand), and verify agrees with the chain.
    slashes = Ledger.open(run_dir / LEDGER_FILE).slashes()
    assert [(r, name) for r, name, _, _ in slashes] == [(2, "hospital-02")]
    if then == "settle":
        evidence = slashes[0][3]
        assert "round 2: hospital-02 was not slashed" in caplog.text and f"--evidence {evidence}" in caplog.text
        assert "1 slash(es) the run flagged and never sent, sent now: hospital-02 (round 2)" in capsys.readouterr().out
        assert settle(argparse.Namespace(run_dir=run_dir)) == 0  # a second settle sends nothing more
    assert verify_run(run_dir)[0] == []
    session = chain.connect(chain.ETH_TESTER, state_file=shared.with_suffix(".eth-tester.json"))
    assert len(distributor_contract(session, chain.Deployment.load(shared)).events.SlashProposed().get_logs(
        from_block=0)) == 1
