"""Free-rider detection on real local updates: replays and noise are set aside, honest training never is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlearn.config import RunConfig
from fedlearn.federation.free_riders import (
    DEFAULT_KAPPA,
    NOISE_ALPHA,
    POWER,
    Verdict,
    _entanglement_one_by_one,
    _entanglement_with_references,
    entanglement,
    flatten,
    free_riders,
    references,
    threshold,
)
from fedlearn.federation.roster import federated_split
from fedlearn.learning.behaviours import BehaviourSpec, apply_behaviour
from fedlearn.learning.models import init_model
from fedlearn.learning.training import train


def real_round(partition: str, rounds: int = 3) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """(honest updates of the last round, past global steps, last global step) from a short honest FedAvg run."""
    config = RunConfig.load(overrides=["data.institutions=8", f"data.partition='{partition}'", "data.alpha=0.1"])
    split = federated_split(config)
    model = init_model(config.model, split.test.X.shape[1], split.test.num_classes, seed=0)
    history = [flatten({k: v.numpy() for k, v in model.state_dict().items()})]
    for server_round in range(1, rounds + 1):
        start = {k: v.clone() for k, v in model.state_dict().items()}
        updates, weights = [], []
        for i, part in enumerate(split.partitions):
            model.load_state_dict(start)
            train(model, part.X, part.y, config.train, torch.device("cpu"), seed=100 * server_round + i)
            updates.append(flatten({k: v.numpy() for k, v in model.state_dict().items()}) - history[-1])
            weights.append(len(part))
        if server_round == rounds:
            recent = history[-3:]
            steps = [b - a for a, b in zip(recent, recent[1:])]
            return updates, steps, history[-1] - history[-2]
        w = np.asarray(weights, dtype=np.float64) / sum(weights)
        new = history[-1] + sum(wi * u for wi, u in zip(w, updates))
        history.append(new)
        offset, state = 0, {}
        for key, value in start.items():
            state[key] = torch.as_tensor(new[offset:offset + value.numel()].reshape(value.shape), dtype=value.dtype)
            offset += value.numel()
        model.load_state_dict(state)
    raise AssertionError("unreachable")


def test_replays_with_noise_are_flagged_and_honest_updates_with_skewed_data_are_not() -> None:
    rng = np.random.default_rng(0)
    for partition in ("dirichlet", "quantity_skew"):
        honest, steps, last = real_round(partition)
        riders = [gamma * last + rng.normal(0, sigma, last.shape) for gamma, sigma in ((1.0, 1e-3), (2.0, 1e-2))]
        flagged = free_riders([*honest, *riders], steps)
        assert set(flagged) == {len(honest), len(honest) + 1}, (partition, flagged)
        assert "no training signal of its own" in flagged[len(honest)].reason
        assert all(v.conclusive for v in flagged.values())  # honest work scores far above the line here


def test_an_exact_replay_is_a_replay_and_too_few_updates_are_never_judged() -> None:
    honest, steps, last = real_round("dirichlet", rounds=2)
    flagged = free_riders([*honest, 1.5 * last], steps)
    assert flagged == {len(honest): Verdict("update is a replay of past global steps (no training signal of its own)",
                                            conclusive=True)}
    assert free_riders(honest[:3], steps) == {}


def test_a_disguised_free_rider_sends_the_global_model_moved_along_the_last_step() -> None:
    start, previous = {"w": np.full(4, 2.0, dtype=np.float32)}, {"w": np.full(4, 1.5, dtype=np.float32)}
    spec = BehaviourSpec("disguised_free_rider", replay_scale=2.0, free_rider_noise=1e-6)
    sent, claimed = apply_behaviour(spec, start, {"w": np.zeros(4, dtype=np.float32)}, 30,
                                    np.random.default_rng(1), previous)
    np.testing.assert_allclose(sent["w"], 3.0, atol=1e-4)  # 2 + 2 x (2 - 1.5), never the trained zeros
    assert claimed == 300 and sent["w"].dtype == np.float32


def test_disguised_free_riders_earn_nothing_in_the_default_configuration(tmp_path: Path) -> None:
    riders = "hospital-02=disguised_free_rider, hospital-05=disguised_free_rider:replay_scale=2:free_rider_noise=0.01"
    settings = ["data.institutions=6", "run.rounds=4", "simulation.engine='local'", f"run.output_dir='{tmp_path}'",
                f"integrity.behaviours='{riders}'"]
    result = subprocess.run([sys.executable, "-m", "fedlearn.cli", "run", "--no-progress",
                             *[a for s in settings for a in ("--set", s)]],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rounds = json.loads((run_dir / "rounds.json").read_text())[1:]
    for record in rounds:
        assert set(record["scores"]["rejected"]) == {"hospital-02", "hospital-05"}  # every round, nobody else
    summary = json.loads((run_dir / "summary.json").read_text())
    earned = {i["name"]: int(i["tokens_earned"]) for i in summary["institutions"]}
    assert earned["hospital-02"] == earned["hospital-05"] == 0 and sum(earned.values()) > 0


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 30), st.integers(0, 2**32 - 1), st.floats(0.0, 0.99))
def test_scores_from_the_gram_matrix_equal_those_projected_one_by_one(n: int, seed: int, shared: float) -> None:
    """The fast path (one inverse of the residuals' Gram matrix) against each residual projected on an
    orthonormal basis of the others: the same score for every residual, correlated or not."""
    rng = np.random.default_rng(seed)
    d = 1_000  # 50 references allowed: every other residual is one
    common = rng.normal(size=(3, d))
    residual = [shared * (rng.normal(size=3) @ common) + (1 - shared) * rng.normal(size=d) for _ in range(n)]
    fast = entanglement(residual)
    slow = _entanglement_one_by_one(residual)
    np.testing.assert_allclose(fast, [score for score, _ in slow], rtol=1e-6, atol=1e-9)


def test_in_a_large_federation_honest_residuals_still_score_far_above_noise() -> None:
    """With every other residual as reference the score's ceiling is d/(n − 1): at n = 300, d = 500 no update could
    reach kappa. Against a bounded number of references, structured residuals score high and noise about 1."""
    rng = np.random.default_rng(0)
    d, n = 500, 300
    task = rng.normal(size=(20, d))  # what training on one task puts into every honest residual
    honest = [rng.normal(size=20) @ task + 0.5 * rng.normal(size=d) * np.sqrt(20) for _ in range(n - 5)]
    noise = [rng.normal(size=d) * np.linalg.norm(honest[0]) / np.sqrt(d) for _ in range(5)]
    assert d / (n - 1) < DEFAULT_KAPPA  # against all the others, even a residual wholly inside scores below kappa
    scores = entanglement(honest + noise)
    assert min(scores[: n - 5]) > DEFAULT_KAPPA
    assert max(scores[n - 5:]) < 2
    assert free_riders(honest + noise, [], DEFAULT_KAPPA).keys() == set(range(n - 5, n))


def test_scores_against_references_are_the_projections_on_those_references() -> None:
    """The Gram-matrix computation against each residual's drawn references equals projecting the residual on
    them directly (least squares)."""
    rng = np.random.default_rng(3)
    d = 400
    common = rng.normal(size=(4, d))
    residual = [rng.normal(size=4) @ common + rng.normal(size=d) for _ in range(40)] + [np.zeros(d)]
    drawn = references(residual, 8)
    scores = _entanglement_with_references(residual, 8)
    assert scores[-1][0] == 0.0 and all(len(refs) == 8 and 40 not in refs for refs in drawn)
    for i, refs in enumerate(drawn[:-1]):
        basis = np.stack([residual[j] for j in refs], axis=1)
        fitted = basis @ np.linalg.lstsq(basis, residual[i], rcond=None)[0]
        expected = float(fitted @ fitted) / float(residual[i] @ residual[i]) * d / 8
        assert scores[i] == (pytest.approx(expected, rel=1e-6), 8)


def test_with_many_references_the_threshold_is_the_noise_line_not_kappa() -> None:
    """Late in a large federation honest residuals carry little shared structure and score between 2 and 5; with
    64 references pure noise scores within a few hundredths of 1, so kappa = 5 would only flag honest updates.
    The threshold there is the line noise passes with probability NOISE_ALPHA; up to 9 references it is kappa."""
    rng = np.random.default_rng(5)
    d, n = 2_826, 100  # the scale benchmark's MLP
    task = rng.normal(size=(40, d))
    honest = [0.1 * (rng.normal(size=40) @ task) + rng.normal(size=d) for _ in range(n - 4)]
    noise = [rng.normal(size=d) * float(np.linalg.norm(honest[0])) / np.sqrt(d) for _ in range(4)]
    scores = entanglement(honest + noise)
    # The premise: honest scores lie between the noise line and kappa (kappa alone would flag most of them).
    assert threshold(64) < min(scores[: n - 4]) and np.median(scores[: n - 4]) < DEFAULT_KAPPA
    assert max(scores[n - 4:]) < 1.5
    assert free_riders(honest + noise, []).keys() == set(range(n - 4, n))
    # Pure noise against 64 references, many times over: its scores stay under the line.
    draws = [entanglement([rng.normal(size=d) for _ in range(66)])[0] for _ in range(30)]
    assert max(draws) < threshold(64) < 2.5
    assert threshold(9) == pytest.approx(4.98, abs=0.01) and threshold(5) == DEFAULT_KAPPA and NOISE_ALPHA == 1e-6


def structured_round(rng: np.random.Generator, structure: float, n: int = 30, riders: int = 3,
                     d: int = 2_826) -> list[np.ndarray]:
    """n − riders residuals sharing a task's structure at strength ``structure``, then ``riders`` of pure noise."""
    task = rng.normal(size=(40, d))
    honest = [structure * (rng.normal(size=40) @ task) + rng.normal(size=d) for _ in range(n - riders)]
    return honest + [rng.normal(size=d) * float(np.linalg.norm(honest[0])) / np.sqrt(d) for _ in range(riders)]


def test_a_set_aside_counts_against_a_stake_only_in_a_round_the_check_can_read() -> None:
    """Late in a run honest residuals thin out and the whole round scores near the line: an update set aside
    then is not held against its stake (it is still set aside). Where honest work scores far above the line, a
    set-aside is conclusive."""
    rng = np.random.default_rng(11)
    strong, weak = structured_round(rng, 1.0), structured_round(rng, 0.09)
    line = threshold(29)
    # The premises: the strong round's median is far above POWER × the line, the weak one's below it.
    assert np.median(entanglement(strong)) > 2 * POWER * line
    assert np.median(entanglement(weak)) < POWER * line
    flagged = free_riders(strong, [])
    assert flagged.keys() == {27, 28, 29} and all(v.conclusive for v in flagged.values())
    flagged = free_riders(weak, [])
    assert {27, 28, 29} <= flagged.keys() and not any(v.conclusive for v in flagged.values())
    assert all("not held against its stake" in v.reason for v in flagged.values())


def test_free_riders_cannot_make_their_own_round_inconclusive_by_numbers() -> None:
    """16 noise residuals among 30: the median of all scores is noise's, the median of those that pass is not."""
    rng = np.random.default_rng(12)
    residual = structured_round(rng, 1.0, riders=16)
    assert np.median(entanglement(residual)) < POWER * threshold(29)  # the premise: all scores' median is low
    flagged = free_riders(residual, [])
    assert flagged.keys() == set(range(14, 30)) and all(v.conclusive for v in flagged.values())
