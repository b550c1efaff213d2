"""Integrity in a paying run: adversaries earn nothing and get slashed; honest institutions never do.

Runs use the in-process engine (the real ServerApp and ClientApp, no Ray) on the embedded chain.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedlearn.config import RunConfig
from fedlearn.federation.peer_votes import ballot_commitment
from fedlearn.federation.simulation import run_federation
from fedlearn.payout.ledger import Ledger

BASE = ["run.rounds=5", "data.institutions=6", "data.partition='iid'", "simulation.engine='local'",
        "train.learning_rate=0.05", "train.momentum=0.9", "integrity.min_stake=10", "scoring.method='loo'"]


def paying_run(tmp_path: Path, *overrides: str) -> tuple[dict, Ledger]:
    config = RunConfig.load(overrides=[*BASE, *overrides])
    summary = run_federation(config, run_dir=tmp_path / "run", progress=False)
    return summary, Ledger.open(tmp_path / "run" / "ledger.sqlite")


def tokens(summary: dict, key: str = "tokens_earned") -> dict[str, int]:
    return {i["name"]: int(i[key]) for i in summary["institutions"]}


@pytest.mark.parametrize("validation", ["server", "peers"])
def test_an_all_honest_run_slashes_nobody(tmp_path: Path, validation: str) -> None:
    summary, ledger = paying_run(tmp_path, f"scoring.validation='{validation}'", "integrity.voters_fraction=0.5")
    assert ledger.slashes() == []
    assert all(v == 0 for v in tokens(summary, "tokens_slashed").values())
    assert summary["final_test_accuracy"] > 0.8
    if validation == "peers":
        # Every round records each voter's ballot, and anyone can recheck it against the commitment.
        rounds = json.loads((tmp_path / "run" / "rounds.json").read_text())
        ballots = [(r["scores"]["server_round"], b) for r in rounds if r.get("scores")
                   for b in r["scores"]["ballots"].values()]
        assert len(ballots) >= 5 * 3
        for server_round, b in ballots:
            assert "broken" not in b and b["votes"]
            assert ballot_commitment(server_round, b["votes"], b["salt"]) == b["commitment"]
        # Voters are paid for agreeing: every voter with weight takes part of a round that had positive scores.
        for r in rounds[1:]:
            if any(v > 0 for v in r["scores"]["scores"].values()):
                assert all(b["reward"] > 0 for b in r["scores"]["ballots"].values() if b["weight"] > 0)


def test_a_harmful_sign_flipper_earns_nothing_and_is_slashed(tmp_path: Path) -> None:
    # Under FedAvg the flipped update hurts every round: its contribution is negative, so it is slashed.
    summary, ledger = paying_run(tmp_path, "integrity.behaviours='hospital-02=sign_flip:scale=4'")
    assert tokens(summary)["hospital-02"] == 0
    assert {name for _, name, _, _ in ledger.slashes()} == {"hospital-02"}
    first = ledger.slashes()[0]
    assert first[0] == 3 and first[2] == 5 * 10**18  # at its 3rd bad round, half of the 10-token stake


def test_a_sleeper_sends_what_an_honest_institution_sends_until_its_round_then_attacks(tmp_path: Path) -> None:
    # The ClientApp tells the behaviour which round it is in: before from_round the update is the honest one
    # (the same hash as in an all-honest run, from the same global model), from it on the attack.
    def hashes(run: str, *overrides: str) -> list[str]:
        paying_run(tmp_path / run, "run.rounds=3", *overrides)
        rounds = json.loads((tmp_path / run / "run" / "rounds.json").read_text())[1:]
        return [r["scores"]["update_hashes"]["hospital-02"] for r in rounds]

    honest = hashes("honest")
    sleeper = hashes("sleeper", "integrity.behaviours='hospital-02=sign_flip:scale=4:from_round=3'")
    assert sleeper[:2] == honest[:2]
    assert sleeper[2] != honest[2]


def test_a_boosted_update_is_clipped_every_round_and_earns_nothing(tmp_path: Path) -> None:
    # A ×5 boost of honest training: a direction the validation split likes, at a length no honest step has.
    summary, ledger = paying_run(tmp_path, "integrity.behaviours='hospital-02=boosted:scale=5'",
                                 "integrity.scaled_update_limit=3")
    rounds = [r["scores"] for r in json.loads((tmp_path / "run" / "rounds.json").read_text()) if r.get("scores")]
    assert all(set(r["clipped"]) == {"hospital-02"} for r in rounds)
    assert tokens(summary)["hospital-02"] == 0 and sum(tokens(summary).values()) > 0
    # Clipped, its training still reaches the model, and it is not slashed for a length alone.
    assert ledger.slashes() == [] and summary["final_test_accuracy"] > 0.8


def test_a_robust_aggregator_keeps_accuracy_and_pays_the_flipper_nothing(tmp_path: Path) -> None:
    summary, _ = paying_run(tmp_path, "integrity.behaviours='hospital-02=sign_flip:scale=4'",
                            "strategy.name='fedmedian'")
    assert tokens(summary)["hospital-02"] == 0
    assert summary["final_test_accuracy"] > 0.8


def test_fltrust_scores_a_sign_flipper_zero(tmp_path: Path) -> None:
    summary, ledger = paying_run(tmp_path, "integrity.behaviours='hospital-03=sign_flip:scale=2'",
                                 "strategy.name='fltrust'", "scoring.method='trust'")
    rounds = json.loads((tmp_path / "run" / "rounds.json").read_text())
    assert all(r["scores"]["scores"]["hospital-03"] == 0.0 for r in rounds[1:])
    assert tokens(summary)["hospital-03"] == 0
    assert summary["final_test_accuracy"] > 0.8


def test_peer_votes_score_every_proposer(tmp_path: Path) -> None:
    summary, _ = paying_run(tmp_path, "scoring.validation='peers'", "integrity.voters_fraction=0.5",
                            "integrity.behaviours='hospital-04=gaussian_noise:sigma=2'")
    rounds = json.loads((tmp_path / "run" / "rounds.json").read_text())
    for record in rounds[1:]:
        scores = record["scores"]
        assert scores["method"] == "peers" and scores["evaluations"] >= 5
        # Noise of σ = 2 drowns its training: set aside as carrying no signal, or scored lowest by the peers.
        others = min(v for k, v in scores["scores"].items() if k != "hospital-04")
        assert "hospital-04" in scores["rejected"] or scores["scores"]["hospital-04"] <= others
    earned = tokens(summary)
    assert earned["hospital-04"] < 0.01 * sum(earned.values())


def test_under_peer_validation_a_voted_down_update_stays_out_of_the_model(tmp_path: Path) -> None:
    # Prepare: an all-honest peer-validated run, and the same run with a ×4 sign flipper.
    honest, _ = paying_run(tmp_path / "honest", "scoring.validation='peers'", "integrity.voters_fraction=0.5")
    # Execute
    attacked, ledger = paying_run(tmp_path / "attacked", "scoring.validation='peers'", "integrity.voters_fraction=0.5",
                                  "integrity.behaviours='hospital-02=sign_flip:scale=4'")
    # Assert: every round the voters' consensus on the flipper is negative, so its update is left out (recorded
    # as excluded, with its negative score standing); the model learns as if it were absent, and it earns nothing.
    rounds = json.loads((tmp_path / "attacked" / "run" / "rounds.json").read_text())
    for record in rounds[1:]:
        scores = record["scores"]
        assert "hospital-02" in scores["excluded"] and scores["scores"]["hospital-02"] < 0
        assert "consensus" in scores["excluded"]["hospital-02"]
    assert attacked["final_test_accuracy"] >= honest["final_test_accuracy"] - 0.015  # 3 points when let in
    assert tokens(attacked)["hospital-02"] == 0
    # Votes are weighed by stake as the chain holds it: each ballot records its voter's, the 10 tokens staked less
    # what the ledger says was slashed from it in earlier rounds; the flipper, slashed, has less say afterwards.
    slashes = ledger.slashes()
    for record in rounds[1:]:
        server_round = record["scores"]["server_round"]
        for voter, ballot in record["scores"]["ballots"].items():
            taken = sum(amount for r, name, amount, _ in slashes if name == voter and r < server_round)
            assert ballot["stake"] == 10 * 10**18 - taken
    ballots = [ballot for record in rounds[1:] for ballot in record["scores"]["ballots"].values()]
    assert any(ballot["stake"] < 10 * 10**18 for ballot in ballots)


def test_a_sybil_earns_no_more_than_it_did_whole(tmp_path: Path) -> None:
    whole, _ = paying_run(tmp_path / "whole", "scoring.method='shapley'")
    split, _ = paying_run(tmp_path / "split", "scoring.method='gtg'",
                          "integrity.behaviours='hospital-05=sybil:sybil_identities=3'")
    as_sybils = sum(v for k, v in tokens(split).items() if k.startswith("hospital-05~"))
    assert len([k for k in tokens(split) if k.startswith("hospital-05~")]) == 3
    assert as_sybils <= tokens(whole)["hospital-05"]


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("integrity.behaviours='hospital-02=teleport'", "teleport"),
        ("integrity.voters_fraction=1.5", "integrity.voters_fraction = 1.5 must be in (0, 1]"),
        ("integrity.voters_fraction=0", "integrity.voters_fraction = 0.0 must be in (0, 1]"),
        ("integrity.validator_share=1", "integrity.validator_share = 1.0 must be in [0, 1)"),
        ("integrity.refit_l2=-0.001", "integrity.refit_l2 = -0.001 must be in [0, 1)"),
        ("integrity.refit_noise=-1", "integrity.refit_noise = -1.0 must be in [0, 10]"),
        ("integrity.refit_noise=11", "integrity.refit_noise = 11.0 must be in [0, 10]"),
        ("integrity.refit_check_folds=1", "integrity.refit_check_folds = 1 must be 0 (no check) or in [2, 20]"),
        ("integrity.refit_check_folds=21", "integrity.refit_check_folds = 21 must be 0 (no check) or in [2, 20]"),
        ("integrity.refit_max_drop=-0.5", "integrity.refit_max_drop = -0.5 must be in [0, 100]"),
        ("integrity.backdoor_threshold=-1", "integrity.backdoor_threshold = -1.0 must be in [0, 100]"),
        ("integrity.refit_output_layer='yes'", "integrity.refit_output_layer"),
        ("integrity.slash_fraction=1.5", "more than the stake cannot be slashed"),
        ("integrity.slash_k=1", "single bad round"),
    ],
)
def test_bad_integrity_settings_are_one_line_errors(tmp_path: Path, setting: str, fragment: str) -> None:
    result = subprocess.run([sys.executable, "-m", "fedlearn.cli", "run", "--set", setting, "--set",
                             f"run.output_dir='{tmp_path}'"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_peers_and_trust_work_with_a_rule_that_consumes_replies(tmp_path: Path) -> None:
    # FedMedian pops arrays out of the replies it aggregates; votes, trust and evidence must not see them empty.
    summary, _ = paying_run(tmp_path / "peers", "strategy.name='fedmedian'", "scoring.validation='peers'",
                            "run.rounds=2")
    rounds = json.loads((tmp_path / "peers" / "run" / "rounds.json").read_text())
    assert all(r["scores"]["evaluations"] > 0 for r in rounds[1:])
    assert any(v != 0 for r in rounds[1:] for v in r["scores"]["scores"].values())
    paying_run(tmp_path / "trust", "strategy.name='fedmedian'", "scoring.method='trust'", "run.rounds=2")
    rounds = json.loads((tmp_path / "trust" / "run" / "rounds.json").read_text())
    hashes = rounds[1]["scores"]["update_hashes"]
    assert len(set(hashes.values())) == len(hashes) == 6
