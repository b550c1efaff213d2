"""The surrogate Banzhaf estimator: exact when the budget allows, closer than the regression below it on
FedAvg-shaped games, honest intervals, and bad input refused in one line."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from fedlearn.errors import ScoringError
from fedlearn.scoring import Utility, banzhaf, score_round
from fedlearn.scoring.banzhaf_surrogate import MAX_PLAYERS, banzhaf_surrogate

surrogate_module = importlib.import_module("fedlearn.scoring.banzhaf_surrogate")  # the package re-exports the name


def fedavg_game(seed: int, n: int = 10, d: int = 8, classes: int = 3, rows: int = 300) -> tuple[Utility, np.ndarray]:
    """U(S) = minus the Brier score of the weighted mean of S's linear softmax models (∅: the zero model), each
    member's model a noisy, shrunk copy of the one that generated the labels."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, d))
    truth = rng.normal(size=(d, classes)) * 1.5
    y = np.eye(classes)[(X @ truth + rng.gumbel(size=(rows, classes))).argmax(1)]
    weights = rng.integers(20, 200, size=n).astype(float)
    local = np.array([truth * rng.uniform(0.3, 1.2) + rng.normal(size=(d, classes)) * rng.uniform(0.2, 1.5)
                      for _ in range(n)])

    def utility(coalition: frozenset[int]) -> float:
        members = sorted(coalition)
        theta = np.tensordot(weights[members] / weights[members].sum(), local[members], 1) if members \
            else np.zeros((d, classes))
        logits = X @ theta
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return float(-((p - y) ** 2).sum(1).mean())

    return utility, weights


def l1(estimate: np.ndarray, exact: np.ndarray) -> float:
    return float(np.abs(estimate - exact).sum() / np.abs(exact).sum())


def test_with_a_budget_for_every_coalition_the_surrogate_is_exact() -> None:
    utility, weights = fedavg_game(0, n=5)
    result = banzhaf_surrogate(5, utility, weights, rng=np.random.default_rng(0), samples=32)
    np.testing.assert_allclose(result.values, banzhaf(5, utility, rng=np.random.default_rng(0)).values, atol=1e-12)
    assert result.evaluations == 32 and (result.errors == 0).all()


def test_on_fedavg_games_the_surrogate_halves_the_regressions_error_at_ten_percent_of_exact() -> None:
    """n = 10, 102 of the 1,024 evaluations: the surrogate against the sampled regression, the same budget."""
    surrogate, regression, covered = [], [], []
    for seed in range(8):
        utility, weights = fedavg_game(seed)
        exact = banzhaf(10, utility, rng=np.random.default_rng(0)).values
        estimate = banzhaf_surrogate(10, utility, weights, rng=np.random.default_rng(seed), samples=102)
        assert estimate.evaluations <= 102
        surrogate.append(l1(estimate.values, exact))
        regression.append(l1(banzhaf(10, utility, rng=np.random.default_rng(seed), samples=102,
                                     tolerance=0.0).values, exact))
        covered.extend(np.abs(estimate.values - exact) <= estimate.errors)
    assert np.median(surrogate) < 0.04 and np.median(surrogate) < 0.5 * np.median(regression), (surrogate, regression)
    assert np.mean(covered) >= 0.8  # 95 % intervals: 80 players, a few misses allowed


def test_the_adaptive_design_beats_drawing_every_coalition_at_random(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same budget (102 of 1,024), the same model: 70 % of it picked where the values are least known, against
    all of it drawn at random (the first stage stretched over the whole budget)."""
    adaptive, drawn = [], []
    for seed in range(6):
        utility, weights = fedavg_game(seed)
        exact = banzhaf(10, utility, rng=np.random.default_rng(0)).values
        estimate = banzhaf_surrogate(10, utility, weights, rng=np.random.default_rng(seed), samples=102)
        assert estimate.evaluations == estimate.permutations == 102  # 102 distinct coalitions, the whole budget
        adaptive.append(l1(estimate.values, exact))
        with monkeypatch.context() as patch:
            patch.setattr(surrogate_module, "FIRST_STAGE", 1.0)
            estimate = banzhaf_surrogate(10, utility, weights, rng=np.random.default_rng(seed), samples=102)
        assert estimate.evaluations == 102
        drawn.append(l1(estimate.values, exact))
    assert np.median(adaptive) < 0.67 * np.median(drawn), (adaptive, drawn)


def test_score_round_passes_the_weights_to_the_surrogate() -> None:
    utility, weights = fedavg_game(1)
    via = score_round("banzhaf", 10, utility, rng=np.random.default_rng(4), banzhaf_samples=102,
                      banzhaf_estimator="surrogate", weights=weights)
    direct = banzhaf_surrogate(10, utility, weights, rng=np.random.default_rng(4), samples=102)
    np.testing.assert_array_equal(via.values, direct.values)
    equal = score_round("banzhaf", 10, utility, rng=np.random.default_rng(4), banzhaf_samples=102,
                        banzhaf_estimator="surrogate")
    assert not np.array_equal(equal.values, direct.values)  # without weights every member counts alike


def test_beyond_the_fitting_subset_the_surrogate_stays_close_and_its_intervals_cover() -> None:
    """n = 12 with 300 evaluations: hyperparameters are fitted on 256 of them (∅ and N always among them)."""
    errors, covered = [], []
    for seed in range(2):
        utility, weights = fedavg_game(seed, n=12)
        exact = banzhaf(12, utility, rng=np.random.default_rng(0), samples=4096).values
        estimate = banzhaf_surrogate(12, utility, weights, rng=np.random.default_rng(seed), samples=300)
        regression = banzhaf(12, utility, rng=np.random.default_rng(seed), samples=300, tolerance=0.0)
        errors.append(l1(estimate.values, exact))
        assert errors[-1] < 0.5 * l1(regression.values, exact)
        covered.extend(np.abs(estimate.values - exact) <= estimate.errors)
    assert max(errors) < 0.04 and np.mean(covered) >= 0.8


def test_a_member_of_weight_zero_moves_no_coalition_and_is_worth_nothing() -> None:
    utility, weights = fedavg_game(3)
    weights[4] = 0.0

    def fedavg(coalition: frozenset[int]) -> float:  # FedAvg ignores a member of weight 0
        return utility(frozenset(i for i in coalition if weights[i] > 0))

    estimate = banzhaf_surrogate(10, fedavg, weights, rng=np.random.default_rng(0), samples=102)
    assert abs(estimate.values[4]) <= 0.05 * np.abs(estimate.values).mean()


def test_a_utility_the_linear_mean_fits_exactly_needs_no_kernel() -> None:
    """A constant utility (every update equally useless): every value 0, exactly, with no interval to speak of."""
    result = banzhaf_surrogate(9, lambda s: 0.5, np.arange(1.0, 10.0), rng=np.random.default_rng(0), samples=64)
    np.testing.assert_allclose(result.values, 0.0, atol=1e-12)
    np.testing.assert_allclose(result.errors, 0.0, atol=1e-9)


@pytest.mark.parametrize(("n", "weights", "samples", "message"), [
    (MAX_PLAYERS + 1, None, 1024, f"takes at most {MAX_PLAYERS} players"),
    (8, None, 19, "must be an integer of at least 2n + 4 = 20"),
    (8, [1.0] * 7, 64, "one finite weight >= 0 per player (8)"),
    (8, [1.0] * 7 + [-1.0], 64, "one finite weight >= 0 per player"),
    (8, [1.0] * 7 + [float("nan")], 64, "one finite weight >= 0 per player"),
])
def test_bad_input_is_refused_in_one_line(n: int, weights: list[float] | None, samples: int, message: str) -> None:
    with pytest.raises(ScoringError) as caught:
        banzhaf_surrogate(n, lambda s: float(len(s)), np.ones(n) if weights is None else np.array(weights),
                          rng=np.random.default_rng(0), samples=samples)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ScoringError, match="unknown Banzhaf estimator 'kernel'"):
        score_round("banzhaf", 3, lambda s: 0.0, rng=np.random.default_rng(0), banzhaf_estimator="kernel")
