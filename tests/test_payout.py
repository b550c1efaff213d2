"""A run that pays on chain: resume equals an uninterrupted run; verify catches tampering; bad input is refused.

The runs go through the ``fedlearn`` CLI on the embedded eth-tester chain (3 institutions, 3 rounds) with the
in-process engine: what is paid, resumed and verified does not depend on the engine (tests/test_simulation.py runs
Ray's, which costs ~15 s to start in every run).
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_wine

from fedlearn.chain.operations import mint, propose_slash, stake
from fedlearn.chain.session import institution_accounts
from fedlearn.payout.ledger import Ledger
from fedlearn.payout.settlement import RunChain
from fedlearn.payout.slashing import evidence_hash

pytestmark = pytest.mark.slow

SETTINGS = ["run.rounds=3", "data.institutions=3", "scoring.method='shapley'", "train.learning_rate=0.1",
            "simulation.engine='local'"]


def fedlearn(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedlearn.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def run_args(out: Path, *extra: str) -> list[str]:
    pairs = [*SETTINGS, f"run.output_dir='{out}'", *extra]
    return ["run", "--no-progress", *[a for s in pairs for a in ("--set", s)]]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whole")
    result = fedlearn(*run_args(out), cwd=out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tokens claimed" in result.stdout and "report:" in result.stdout
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def test_every_round_is_settled_and_verify_passes(finished_run: Path) -> None:
    ledger = Ledger.open(finished_run / "ledger.sqlite")
    rounds = ledger.rounds()
    assert [r.round for r in rounds] == [1, 2, 3] and all(r.status == "settled" and r.tx_hash for r in rounds)
    summary = json.loads((finished_run / "summary.json").read_text())
    earned = {i["name"]: int(i["tokens_earned"]) for i in summary["institutions"]}
    assert earned == ledger.cumulative()
    # The last round trues up: the whole budget is paid (nothing carried, nothing returned).
    assert sum(earned.values()) == rounds[-1].released == 3 * 100 * 10**18 and rounds[-1].final
    assert all(r.released + r.carried + r.returned == r.budget for r in rounds)
    assert all(i["tokens_claimed"] == i["tokens_earned"] for i in summary["institutions"])
    result = fedlearn("verify", str(finished_run), cwd=finished_run)
    assert result.returncode == 0 and "verified 3 round(s)" in result.stdout


def test_resume_after_round_one_equals_the_uninterrupted_run(finished_run: Path, tmp_path: Path) -> None:
    first = fedlearn(*run_args(tmp_path), "--stop-after", "1", cwd=tmp_path)
    assert first.returncode == 0 and "resume with" in first.stdout, first.stderr[-2000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert Ledger.open(run_dir / "ledger.sqlite").last_round() == 1
    # Stopping "after round 1" again would run nothing and say it stopped there: refused, in one line.
    again = fedlearn("run", "--no-progress", "--resume", str(run_dir), "--stop-after", "1", cwd=tmp_path)
    assert again.returncode == 2 and "has completed 1 round(s) already" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and Ledger.open(run_dir / "ledger.sqlite").last_round() == 1
    done = fedlearn("run", "--no-progress", "--resume", str(finished_run), "--stop-after", "1", cwd=tmp_path)
    assert done.returncode == 2 and "has completed 3 round(s) already" in done.stderr  # a finished run too
    # A run directory missing what its finished round left cannot go on: refused, in one line, nothing written.
    for lost, named in (("ledger.sqlite", "ledger.sqlite (what was paid)"),
                        ("rounds.json", "rounds.json (what round 1 measured)"),
                        ("chain", "chain/deployment.json (the run's contracts), chain/eth-tester.json")):
        damaged = tmp_path / "damaged" / lost
        shutil.copytree(run_dir, damaged)
        (shutil.rmtree if lost == "chain" else Path.unlink)(damaged / lost)
        before = sorted(p.relative_to(damaged) for p in damaged.rglob("*"))
        refused = fedlearn("run", "--no-progress", "--resume", str(damaged), cwd=tmp_path)
        assert refused.returncode == 9 and f"cannot go on: {named}" in refused.stderr, refused.stderr[-2000:]
        assert len(refused.stderr.strip().splitlines()) == 1
        assert sorted(p.relative_to(damaged) for p in damaged.rglob("*")) == before
    second = fedlearn("run", "--no-progress", "--resume", str(run_dir), "--stop-after", "5", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "--stop-after 5 is not before the run's last round (3): it runs to its end" in second.stderr
    journaled = Ledger.open(run_dir / "ledger.sqlite").rounds()
    third = fedlearn("run", "--no-progress", "--resume", str(run_dir), cwd=tmp_path)  # a finished run: says so
    assert third.returncode == 0 and "the run had finished all 3 rounds: nothing ran" in third.stdout
    assert Ledger.open(run_dir / "ledger.sqlite").rounds() == journaled

    whole = Ledger.open(finished_run / "ledger.sqlite").rounds()
    resumed = Ledger.open(run_dir / "ledger.sqlite").rounds()
    assert [r.round for r in resumed] == [1, 2, 3]
    assert all(a.same_settlement(b) for a, b in zip(whole, resumed))
    balances = [{i["name"]: i["tokens_claimed"] for i in json.loads((d / "summary.json").read_text())["institutions"]}
                for d in (finished_run, run_dir)]
    assert balances[0] == balances[1]


def test_a_run_on_a_file_resumes_from_anywhere_but_only_with_its_own_settings_and_data(tmp_path: Path) -> None:
    # Prepare: a CSV beside the run, named by a relative path; the run stops after round 1.
    X, y = load_wine(return_X_y=True, as_frame=True)
    X.assign(label=y).to_csv(tmp_path / "wine.csv", index=False)
    original = (tmp_path / "wine.csv").read_text()
    first = fedlearn(*run_args(tmp_path / "runs", "data.dataset='wine.csv'", "chain.enabled=false"),
                     "--stop-after", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # Execute and assert: resumed from another directory, it finds its file and runs round 2.
    second = fedlearn("run", "--no-progress", "--resume", str(run_dir), "--stop-after", "2", cwd=elsewhere)
    assert second.returncode == 0 and "stopped after round 2" in second.stdout, second.stderr[-2000:]
    # An edited setting or an edited data file: refused in one line, nothing run or written.
    config = (run_dir / "config.toml").read_text()
    before = (run_dir / "rounds.json").read_text()
    (run_dir / "config.toml").write_text(config.replace("hidden_units = 64", "hidden_units = 32"))
    edited = fedlearn("run", "--no-progress", "--resume", str(run_dir), cwd=elsewhere)
    assert edited.returncode == 9 and "was changed after the run began (model.hidden_units 64 → 32)" in edited.stderr
    (run_dir / "config.toml").write_text(config)
    (tmp_path / "wine.csv").write_text("\n".join(original.splitlines()[:-1]) + "\n")  # one example fewer
    changed = fedlearn("run", "--no-progress", "--resume", str(run_dir), cwd=elsewhere)
    assert changed.returncode == 9 and "the data the run trains on changed" in changed.stderr
    assert all(len(r.stderr.strip().splitlines()) == 1 for r in (edited, changed))
    assert (run_dir / "rounds.json").read_text() == before
    (tmp_path / "wine.csv").write_text(original)
    last = fedlearn("run", "--no-progress", "--resume", str(run_dir), cwd=elsewhere)
    assert last.returncode == 0 and (run_dir / "summary.json").is_file(), last.stderr[-2000:]


def test_ctrl_c_names_the_command_that_resumes_the_run_and_that_command_finishes_it(tmp_path: Path) -> None:
    # Prepare: a run interrupted (SIGINT, as Ctrl-C sends) once its first round is printed.
    command = [sys.executable, "-m", "fedlearn.cli", *run_args(tmp_path / "runs", "run.rounds=4")]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("round 1/4"):
            process.send_signal(signal.SIGINT)
            break
    _, stderr = process.communicate(timeout=300)
    (run_dir,) = (tmp_path / "runs").iterdir()

    # Execute and assert: exit 130 and one line naming the command; that command goes on and finishes the run.
    assert process.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == f"fedlearn: interrupted; resume with: fedlearn run --resume {run_dir}"
    resumed = fedlearn("run", "--no-progress", "--resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0 and (run_dir / "summary.json").is_file(), resumed.stderr[-2000:]
    assert [r.round for r in Ledger.open(run_dir / "ledger.sqlite").rounds()] == [1, 2, 3, 4]


def test_license_fees_go_to_a_finished_runs_contributors_through_the_trees_the_run_wrote(
        finished_run: Path, tmp_path: Path) -> None:
    # Prepare: a license over a copy of the run's deployment; an institution pays a fee from what it earned.
    copy = Path(shutil.copytree(finished_run, tmp_path / "copy"))
    d = ["--deployment", str(copy / "chain" / "deployment.json"), "--state", str(copy / "chain" / "eth-tester.json")]
    assert fedlearn("license", "deploy", "--no-governance", *d, cwd=tmp_path).returncode == 0
    paid = fedlearn("license", "pay-fee", "--amount", "10", "--institution", "0", *d, cwd=tmp_path)
    assert paid.returncode == 0, paid.stderr

    # Execute: each contributor withdraws its share, found in the run's trees (named by root).
    summary = json.loads((copy / "summary.json").read_text())["institutions"]
    earned = {i["address"]: int(i["tokens_earned"]) for i in summary}
    withdrawn = {}
    for address in earned:
        got = fedlearn("license", "withdraw", "--account", address, *d, cwd=tmp_path)
        assert got.returncode == 0, got.stderr
        withdrawn[address] = Decimal(got.stdout.split("paid ")[1].split(" of round")[0])

    # Assert: the fee is shared by what each earned (within rounding dust).
    for address, wei in earned.items():
        assert withdrawn[address] == pytest.approx(Decimal(10) * wei / sum(earned.values()), abs=Decimal("1e-15"))


def test_a_model_that_learns_next_to_nothing_pays_nothing_and_returns_the_budget(tmp_path: Path) -> None:
    # A learning rate so small that every round moves the Brier score by about 1e-5: tight intervals just above 0.
    result = fedlearn(*run_args(tmp_path, "train.learning_rate=0.00001", "train.momentum=0", "train.local_epochs=1",
                                "integrity.refit_output_layer=false", "scoring.method='banzhaf'"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("below scoring.min_gain: contributes nothing") == 3
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rounds = Ledger.open(run_dir / "ledger.sqlite").rounds()
    assert all(0 < r.gain_low < 1e-4 and not r.significant for r in rounds)
    assert sum(r.round_total for r in rounds) == 0 and rounds[-1].returned == rounds[-1].budget


def test_verify_weighs_rounds_as_the_run_did_and_a_config_without_the_key_as_before_it_existed(
        tmp_path: Path) -> None:
    # Prepare: a run paid with rounds weighed by their headroom; a copy whose config.toml lacks the key, as a run
    # made before payout.round_weight existed would (every round's scores summed as they are).
    result = fedlearn(*run_args(tmp_path / "out", "payout.round_weight='headroom'"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    text = (run_dir / "config.toml").read_text()
    assert 'round_weight = "headroom"' in text
    older = tmp_path / "older"
    shutil.copytree(run_dir, older)
    (older / "config.toml").write_text(text.replace('round_weight = "headroom"\n', ""))
    # Execute
    mine, before = (fedlearn("verify", str(d), cwd=tmp_path) for d in (run_dir, older))
    # Assert: the run checks out under its own weighing; read as made before the key, its amounts are not what the
    # rule gives (its three rounds started with different errors left).
    assert mine.returncode == 0 and "verified 3 round(s)" in mine.stdout, mine.stdout + mine.stderr
    assert before.returncode == 10 and "the payout rule gives" in before.stdout


def test_resume_refuses_another_config(finished_run: Path, tmp_path: Path) -> None:
    result = fedlearn("run", "--resume", str(finished_run), "--set", "data.alpha=2.0", cwd=tmp_path)
    assert result.returncode == 2 and "made with another config (differs in data.alpha)" in result.stderr


def test_verify_detects_a_tampered_ledger_and_tampered_weights(finished_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    db = sqlite3.connect(copy / "ledger.sqlite")
    (reward,) = db.execute("SELECT reward FROM entries WHERE round = 2 AND institution = 'hospital-01'").fetchone()
    db.execute("UPDATE entries SET reward = ? WHERE round = 2 AND institution = 'hospital-01'", (str(int(reward) + 1),))
    db.commit()
    db.close()
    weights = copy / "checkpoints" / "round-0001.npz"
    arrays = dict(np.load(weights))
    arrays["0.bias"] = arrays["0.bias"] + 1e-3
    np.savez(weights, **arrays)

    (copy / "model.npz").unlink()
    measured = json.loads((copy / "rounds.json").read_text())
    measured[3]["scores"]["scores"]["hospital-02"] += 0.5  # round 3's record of what it measured, edited
    (copy / "rounds.json").write_text(json.dumps(measured))

    result = fedlearn("verify", str(copy), cwd=tmp_path)
    assert result.returncode == 10
    assert "round 3: hospital-02 scored" in result.stdout and "in rounds.json" in result.stdout
    assert "round 2: hospital-01 rewarded" in result.stdout
    assert "round 1: model hash" in result.stdout
    assert "model.npz: the run finished (it has a summary) but its final model is missing" in result.stdout


def test_verify_checks_every_slash_against_the_chain_both_ways(finished_run: Path, tmp_path: Path) -> None:
    # Prepare: a copy of the run; hospital-02 stakes, and a slash on this run's evidence (round 2, its update there)
    # reaches the chain without reaching the ledger, as when the receipt is lost.
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    pm = RunChain.open(copy).paymaster
    session, deployment = pm.link.session, pm.link.deployment
    address = pm.addresses["hospital-02"]
    (account,) = [a for a in institution_accounts(3) if a.address == address]
    mint(session, deployment, address, 10**18)
    stake(session.as_account(account), deployment, 10**18)
    update = json.loads((copy / "rounds.json").read_text())[2]["scores"]["update_hashes"]["hospital-02"]
    evidence = "0x" + evidence_hash(2, update).hex()
    slash_id, _ = propose_slash(session, deployment, address, 4 * 10**17, evidence)
    pm.link.save()
    # Execute / Assert: verify names the slash the ledger lacks ...
    result = fedlearn("verify", str(copy), cwd=tmp_path)
    assert result.returncode == 10
    assert (f"round 2: slash {slash_id} on chain takes {4 * 10**17} wei of hospital-02's stake on this run's "
            "evidence, and the ledger does not record it") in result.stdout
    assert f"(`fedlearn settle {copy}` records it)" in result.stdout
    # ... which `fedlearn settle` records from the chain, after which verify passes ...
    pm.ledger.close()
    settled = fedlearn("settle", str(copy), cwd=tmp_path)
    assert settled.returncode == 0 and "1 slash(es) on chain recorded in the ledger" in settled.stdout
    assert Ledger.open(copy / "ledger.sqlite").slashes() == [(2, "hospital-02", 4 * 10**17, evidence)]
    assert fedlearn("verify", str(copy), cwd=tmp_path).returncode == 0
    # ... and flags a ledger whose slash differs from the chain's in amount, or rests on other evidence.
    db = sqlite3.connect(copy / "ledger.sqlite")
    db.execute("UPDATE slashes SET amount = ?", (str(5 * 10**17),))
    db.execute("INSERT INTO slashes (round, institution, address, amount, evidence, tx_hash, slashed_at) VALUES "
               "(3, 'hospital-01', ?, '1', ?, NULL, 'now')", (pm.addresses["hospital-01"], "0x" + "11" * 32))
    db.commit()
    db.close()
    result = fedlearn("verify", str(copy), cwd=tmp_path)
    assert f"round 2: the ledger slashes hospital-02 {5 * 10**17} wei, slash {slash_id} on chain {4 * 10**17}" in (
        result.stdout)
    assert "round 3: the slash of hospital-01 rests on evidence 0x" + "11" * 32 in result.stdout
    assert "round 3: the ledger slashes hospital-01 1 wei, no slash on chain" in result.stdout


def test_pilot_bad_inputs_are_refused(finished_run: Path, tmp_path: Path) -> None:
    addresses = tmp_path / "addresses.toml"
    addresses.write_text('hospital-01 = "0x' + "12" * 20 + '"\nhospital-02 = "0x' + "34" * 20 + '"\n')
    result = fedlearn(*run_args(tmp_path, f"chain.addresses='{addresses}'"), cwd=tmp_path)
    assert result.returncode == 2 and "institution hospital-03 has no address" in result.stderr

    deployment = json.loads((finished_run / "chain" / "deployment.json").read_text())
    deployment["chain_id"] = 5
    other = tmp_path / "other-chain.json"
    other.write_text(json.dumps(deployment))
    result = fedlearn(*run_args(tmp_path / "o", f"chain.deployment='{other}'"), cwd=tmp_path)
    assert result.returncode == 5 and "chain" in result.stderr and len(result.stderr.strip().splitlines()) == 1

    result = fedlearn(*run_args(tmp_path / "n", "chain.funding='none'"), cwd=tmp_path)
    (made,) = (tmp_path / "n").iterdir()  # the run directory the failed start made, named in its one line
    assert result.returncode == 5 and f"fedlearn chain fund --run {made}" in result.stderr

    corrupt = tmp_path / "corrupt"
    shutil.copytree(finished_run, corrupt)
    (corrupt / "ledger.sqlite").write_bytes(b"garbage" * 1000)
    result = fedlearn("claim", str(corrupt), cwd=tmp_path)
    assert result.returncode == 7 and "corrupt or not a ledger" in result.stderr
