"""Banzhaf value: exact on small games, sampled on large ones, and what splitting a player does to it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlearn.errors import ScoringError
from fedlearn.scoring import Utility, banzhaf, exact_shapley, score_round


def by_brute_force(n: int, utility: Utility) -> np.ndarray:
    """The definition, term by term: 2^-(n-1) Σ over the others' coalitions of i's marginal contribution."""
    values = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            for subset in itertools.combinations(others, size):
                values[i] += utility(frozenset(subset) | {i}) - utility(frozenset(subset))
    return values / 2 ** (n - 1)


def data_game(sizes: list[float], curve: str) -> Utility:
    """A coalition is worth a saturating function of the rows it holds."""
    f: Callable[[float], float] = {"sqrt": math.sqrt, "exp": lambda x: 1 - math.exp(-x / 50), "log": math.log1p}[curve]
    return lambda s: f(sum(sizes[i] for i in s))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 7), st.integers(0, 2**32 - 1))
def test_exact_banzhaf_matches_the_definition(n: int, seed: int) -> None:
    table = np.random.default_rng(seed).normal(size=2**n)
    utility = lambda s: float(table[sum(1 << i for i in s)])
    result = banzhaf(n, utility, rng=np.random.default_rng(0))
    np.testing.assert_allclose(result.values, by_brute_force(n, utility), atol=1e-12)
    assert result.evaluations == 2**n


def test_additive_game_gives_each_player_its_weight() -> None:
    weights = [0.3, -0.1, 0.0, 2.0]
    result = banzhaf(4, lambda s: sum(weights[i] for i in s), rng=np.random.default_rng(0))
    np.testing.assert_allclose(result.values, weights, atol=1e-12)


@pytest.mark.parametrize("curve", ["sqrt", "exp", "log"])
def test_splitting_a_player_in_two_earns_exactly_what_the_whole_earns(curve: str) -> None:
    # Prepare: four institutions; then the last one's rows dealt to two identities.
    sizes = [40.0, 90.0, 25.0, 120.0]
    whole = banzhaf(4, data_game(sizes, curve), rng=np.random.default_rng(0)).values
    split = banzhaf(5, data_game([*sizes[:3], 70.0, 50.0], curve), rng=np.random.default_rng(0)).values
    # Assert: the two identities together get the whole's value; Shapley gives them more.
    assert split[3] + split[4] == pytest.approx(whole[3], rel=1e-12)
    shapley_whole = exact_shapley(4, data_game(sizes, curve)).values
    shapley_split = exact_shapley(5, data_game([*sizes[:3], 70.0, 50.0], curve)).values
    assert shapley_split[3] + shapley_split[4] > shapley_whole[3]


@pytest.mark.parametrize("k", [3, 4, 5])
def test_splitting_a_player_in_k_earns_no_more_than_the_whole_on_saturating_games(k: int) -> None:
    sizes = [40.0, 90.0, 25.0, 120.0]
    for curve in ("sqrt", "exp", "log"):
        whole = banzhaf(4, data_game(sizes, curve), rng=np.random.default_rng(0)).values[3]
        pieces = [120.0 / k] * k
        split = banzhaf(3 + k, data_game([*sizes[:3], *pieces], curve), rng=np.random.default_rng(0)).values
        assert split[3:].sum() <= whole + 1e-12


def test_sampled_banzhaf_is_close_to_exact_and_costs_the_samples() -> None:
    sizes = list(np.random.default_rng(3).uniform(10, 200, size=14))
    game = data_game(sizes, "sqrt")
    exact = banzhaf(14, game, rng=np.random.default_rng(0), samples=2**14).values
    sampled = banzhaf(14, game, rng=np.random.default_rng(1), samples=2000)
    assert sampled.evaluations <= 2000
    assert np.abs(sampled.values - exact).sum() / np.abs(exact).sum() < 0.15
    assert np.corrcoef(sampled.values, exact)[0, 1] > 0.95


def test_banzhaf_by_name_and_bad_sample_counts() -> None:
    result = score_round("banzhaf", 3, lambda s: float(len(s)), rng=np.random.default_rng(0))
    np.testing.assert_allclose(result.values, [1.0, 1.0, 1.0])
    assert result.method == "banzhaf"
    for bad in (3, 2, 1, 0, 2.5, True):
        with pytest.raises(ScoringError, match="banzhaf samples"):
            banzhaf(3, lambda s: 0.0, rng=np.random.default_rng(0), samples=bad)  # type: ignore[arg-type]
    assert banzhaf(0, lambda s: 0.0, rng=np.random.default_rng(0)).values.shape == (0,)


def test_sampled_intervals_cover_the_exact_values_and_early_stopping_keeps_its_error_bound() -> None:
    """The 95 % intervals hold the exact value about 95 % of the time; a run that stops early, on reaching
    Σ half-widths ≤ tolerance × Σ|β|, is within that normalised L1 error of exact (nearly always)."""
    sizes = list(np.random.default_rng(5).uniform(10, 200, size=12))
    game = data_game(sizes, "sqrt")
    exact = banzhaf(12, game, rng=np.random.default_rng(0), samples=2**12).values
    covered, stopped_early, within = 0, 0, 0
    for seed in range(40):
        result = banzhaf(12, game, rng=np.random.default_rng(seed), samples=3000, tolerance=0.05)
        assert result.errors is not None and result.errors.shape == (12,)
        covered += int((np.abs(result.values - exact) <= result.errors).sum())
        if result.permutations < 3000:
            stopped_early += 1
            within += int(np.abs(result.values - exact).sum() <= 0.05 * np.abs(exact).sum())
            assert result.errors.sum() <= 0.05 * np.abs(result.values).sum()
    assert covered / (40 * 12) >= 0.88
    assert stopped_early >= 30 and within >= stopped_early - 2


def test_tolerance_zero_draws_every_sample_and_an_exact_value_has_no_error() -> None:
    game = data_game([10.0, 50.0, 80.0, 120.0, 30.0, 60.0], "sqrt")
    sampled = banzhaf(6, game, rng=np.random.default_rng(0), samples=40, tolerance=0.0)
    # U(∅) and U(N), then 19 pairs: 40 evaluations at most (fewer where a coalition repeats).
    assert sampled.permutations == 38 and sampled.evaluations <= 40
    assert sampled.errors is not None and (sampled.errors > 0).all()
    exact = banzhaf(6, game, rng=np.random.default_rng(0), samples=64)
    assert exact.evaluations == 64 and exact.errors is not None and not exact.errors.any()
    for bad in (-0.1, 1.0):
        with pytest.raises(ScoringError, match="banzhaf tolerance"):
            banzhaf(6, game, rng=np.random.default_rng(0), samples=40, tolerance=bad)


def test_complementary_pairs_cancel_interactions_and_size_effects_exactly() -> None:
    """A game made of the players' own weights, every pairwise interaction and a curve in the coalition's size
    (symmetric about n/2 beyond its quadratic term) has no odd part beyond the players' own terms, so n + 10
    complementary pairs recover its Banzhaf value to rounding; independent draws would leave the interactions'
    noise in the estimate."""
    rng = np.random.default_rng(11)
    n = 12
    own, pairwise = rng.normal(size=n), rng.normal(size=(n, n))

    def game(s: frozenset[int]) -> float:
        members = sorted(s)
        pairs = sum(pairwise[i, j] for i, j in itertools.combinations(members, 2))
        return float(own[members].sum() + pairs + 0.3 * len(members) ** 2 - 0.05 * (len(members) - n / 2) ** 4)

    exact = banzhaf(n, game, rng=np.random.default_rng(0), samples=2**n).values
    for seed in range(3):
        sampled = banzhaf(n, game, rng=np.random.default_rng(seed), samples=2 * (n + 11), tolerance=0.0)
        assert sampled.evaluations <= 2 * (n + 11)
        np.testing.assert_allclose(sampled.values, exact, atol=1e-9)
        assert sampled.errors is not None and sampled.errors.max() < 1e-6


def test_a_sampled_estimate_never_reports_the_zero_error_of_an_exact_one() -> None:
    """Two draws of three players are often one pair twice (or a pair and its mirror): no spread to measure, so
    the half-widths must be infinite, not 0 (which is what an exact value reports)."""
    game = data_game([10.0, 50.0, 80.0], "sqrt")
    for seed in range(200):
        result = banzhaf(3, game, rng=np.random.default_rng(seed), samples=4, tolerance=0.0)
        assert result.errors is not None and (result.errors > 0).all()
