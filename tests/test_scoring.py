"""Contribution scoring: known games, axioms of the Shapley value, GTG accuracy and cost."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from fedlearn.errors import ScoringError
from fedlearn.scoring import (
    SCORING_METHODS,
    CachedUtility,
    ScoreResult,
    exact_shapley,
    gtg_shapley,
    leave_one_out,
    score_round,
)

Game = Callable[[frozenset[int]], float]


def mask(subset: frozenset[int]) -> int:
    return sum(1 << i for i in subset)


def table_game(values: list[float]) -> Game:
    """A game given by one value per coalition, indexed by bitmask."""
    return lambda s: values[mask(s)]


def additive(weights: np.ndarray, base: float = 0.0) -> Game:
    return lambda s: base + float(sum(weights[i] for i in s))


def saturating(weights: np.ndarray, scale: float) -> Game:
    """Accuracy-like: 10% for the starting model, rising towards 95% as data is added, with diminishing returns."""
    return lambda s: 0.1 + 0.85 * (1.0 - np.exp(-weights[sorted(s)].sum() / scale))


class CountingGame:
    """Counts every call, to check that no coalition is evaluated twice."""

    def __init__(self, game: Game) -> None:
        self.game = game
        self.calls: list[frozenset[int]] = []

    def __call__(self, subset: frozenset[int]) -> float:
        self.calls.append(subset)
        return self.game(subset)


def l1_error(estimate: np.ndarray, exact: np.ndarray) -> float:
    return float(np.abs(estimate - exact).sum() / np.abs(exact).sum())


@st.composite
def random_games(draw: st.DrawFn, max_players: int = 6) -> tuple[int, list[float]]:
    n = draw(st.integers(1, max_players))
    values = draw(st.lists(st.floats(-10, 10), min_size=1 << n, max_size=1 << n))
    return n, values


# The test game for GTG: eight institutions with distinct data sizes, accuracy saturating as data grows.
WEIGHTS8 = np.array([0.1, 0.25, 0.45, 0.7, 1.0, 1.35, 1.75, 2.2])


# --- exact Shapley ---------------------------------------------------------------------------------


@given(st.lists(st.floats(-5, 5), min_size=1, max_size=7), st.floats(-1, 1))
def test_exact_shapley_of_additive_game_is_the_weights(weights: list[float], base: float) -> None:
    w = np.array(weights)
    result = exact_shapley(len(w), additive(w, base))
    np.testing.assert_allclose(result.values, w, atol=1e-9)


@given(random_games())
def test_exact_shapley_is_efficient(game: tuple[int, list[float]]) -> None:
    n, values = game
    result = exact_shapley(n, table_game(values))
    assert result.values.sum() == pytest.approx(values[-1] - values[0], abs=1e-9)


@given(random_games(max_players=5), st.integers(0, 5))
def test_dummy_player_gets_zero_and_changes_no_one_else(game: tuple[int, list[float]], position: int) -> None:
    n, values = game
    dummy = min(position, n)  # insert a player who adds nothing to any coalition at this index
    without_dummy = lambda s: values[mask(frozenset(i if i < dummy else i - 1 for i in s if i != dummy))]
    result = exact_shapley(n + 1, without_dummy)
    reduced = exact_shapley(n, table_game(values))
    assert result.values[dummy] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(np.delete(result.values, dummy), reduced.values, atol=1e-9)


@given(st.integers(2, 6), st.lists(st.floats(-10, 10), min_size=7, max_size=7))
def test_symmetric_players_get_equal_values(n: int, by_size: list[float]) -> None:
    result = exact_shapley(n, lambda s: by_size[len(s)])  # value depends only on coalition size
    np.testing.assert_allclose(result.values, result.values[0], atol=1e-9)


def test_symmetric_pair_in_an_asymmetric_game() -> None:
    w = np.array([1.0, 1.0, 3.0, 0.5])
    result = exact_shapley(4, saturating(w, 2.0))
    assert result.values[0] == pytest.approx(result.values[1], abs=1e-12)
    assert result.values[2] > result.values[0] > result.values[3]


def test_exact_shapley_on_hand_computed_games() -> None:
    # Glove game: player 0 holds a left glove, players 1 and 2 right gloves; a pair is worth 1.
    glove = lambda s: float(0 in s and bool(s & {1, 2}))
    np.testing.assert_allclose(exact_shapley(3, glove).values, [2 / 3, 1 / 6, 1 / 6])
    # A generic game worked out by hand from the permutation formula.
    values = {(): 0, (0,): 10, (1,): 20, (2,): 30, (0, 1): 40, (0, 2): 50, (1, 2): 60, (0, 1, 2): 90}
    np.testing.assert_allclose(exact_shapley(3, lambda s: values[tuple(sorted(s))]).values, [20, 30, 40])


def test_exact_shapley_evaluates_each_coalition_once() -> None:
    game = CountingGame(saturating(WEIGHTS8, 4.0))
    result = exact_shapley(8, game)
    assert result.evaluations == len(game.calls) == len(set(game.calls)) == 256
    assert result.method == "shapley"


def test_exact_shapley_refuses_more_than_ten_players() -> None:
    game = CountingGame(lambda s: 0.0)
    with pytest.raises(ScoringError, match=r"n=11.*'gtg'") as error:
        exact_shapley(11, game)
    assert "\n" not in str(error.value)
    assert game.calls == []
    assert exact_shapley(10, lambda s: float(len(s))).evaluations == 1024


# --- leave-one-out ---------------------------------------------------------------------------------


@given(st.lists(st.floats(-5, 5), min_size=1, max_size=8))
def test_loo_of_additive_game_is_the_weights(weights: list[float]) -> None:
    w = np.array(weights)
    game = CountingGame(additive(w, 0.3))
    result = leave_one_out(len(w), game)
    np.testing.assert_allclose(result.values, w, atol=1e-9)
    assert result.evaluations == len(game.calls) == len(w) + 1


def test_loo_misses_redundant_players_that_shapley_splits() -> None:
    # Players 0 and 1 hold copies of the same data (worth 0.5); player 2 holds other data (worth 0.3).
    game = lambda s: 0.5 * bool(s & {0, 1}) + 0.3 * (2 in s)
    np.testing.assert_allclose(leave_one_out(3, game).values, [0.0, 0.0, 0.3], atol=1e-12)
    np.testing.assert_allclose(exact_shapley(3, game).values, [0.25, 0.25, 0.3], atol=1e-12)


# --- GTG-Shapley -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_gtg_is_close_to_exact_with_fewer_evaluations(seed: int) -> None:
    game = saturating(WEIGHTS8, 4.0)
    exact = exact_shapley(8, game)
    counted = CountingGame(game)
    estimate = gtg_shapley(8, counted, rng=np.random.default_rng(seed))
    assert l1_error(estimate.values, exact.values) <= 0.05
    assert spearmanr(estimate.values, exact.values).statistic >= 0.95
    assert estimate.evaluations == len(counted.calls) == len(set(counted.calls))
    assert estimate.evaluations < exact.evaluations
    assert estimate.method == "gtg" and not estimate.truncated


def test_gtg_error_follows_the_tolerance_on_a_strongly_saturating_game() -> None:
    game = saturating(WEIGHTS8, 2.0)  # most of the accuracy comes from the first few updates
    exact = exact_shapley(8, game).values
    errors = [l1_error(gtg_shapley(8, game, rng=np.random.default_rng(s)).values, exact) for s in range(10)]
    assert np.mean(errors) <= 0.05
    tight = [gtg_shapley(8, game, rng=np.random.default_rng(s), convergence_tolerance=0.01) for s in range(3)]
    assert max(l1_error(r.values, exact) for r in tight) < min(0.02, np.mean(errors))


def test_gtg_intervals_cover_the_exact_values_and_exact_results_have_none() -> None:
    """GTG's 95 % half-widths (Student's t over the independent permutation blocks) hold the exact Shapley value
    about 95 % of the time; a truncated round and a run that ended exact record zero."""
    covered = 0
    for scale in (4.0, 2.0):
        game = saturating(WEIGHTS8, scale)
        exact = exact_shapley(8, game).values
        for seed in range(30):
            result = gtg_shapley(8, game, rng=np.random.default_rng(seed))
            assert result.errors is not None and result.errors.shape == (8,) and (result.errors > 0).all()
            covered += int((np.abs(result.values - exact) <= result.errors).sum())
    assert covered / (2 * 30 * 8) >= 0.88
    truncated = gtg_shapley(3, additive(np.array([0.2, -0.2, 0.0]), 0.7), rng=np.random.default_rng(0))
    assert truncated.truncated and truncated.errors is not None and not truncated.errors.any()
    small = gtg_shapley(3, saturating(WEIGHTS8[:3], 1.0), rng=np.random.default_rng(0))  # 8 coalitions: all seen
    np.testing.assert_allclose(small.values, exact_shapley(3, saturating(WEIGHTS8[:3], 1.0)).values)
    assert small.errors is not None and not small.errors.any()
    capped = gtg_shapley(8, saturating(WEIGHTS8, 4.0), rng=np.random.default_rng(0), max_permutations=20,
                         min_permutations=0)
    assert capped.errors is None  # one whole block: no spread to say how far off it is


def test_gtg_skips_a_round_without_gain() -> None:
    # Players 0 and 1 cancel out: the round's model is as good as the starting one.
    game = CountingGame(additive(np.array([0.2, -0.2, 0.0]), 0.7))
    result = gtg_shapley(3, game, rng=np.random.default_rng(0))
    assert result.truncated
    np.testing.assert_array_equal(result.values, np.zeros(3))
    assert result.evaluations == len(game.calls) == 2  # U(∅) and U(N) only
    assert not gtg_shapley(3, additive(np.array([0.2, -0.2, 0.01]), 0.7), rng=np.random.default_rng(0)).truncated


def test_gtg_truncates_within_a_round_and_balances_leaders() -> None:
    # Any one update reaches the final accuracy: after the first player nothing more is evaluated,
    # and since every player leads equally often, the estimate is exactly the Shapley value 1/n.
    n = 7
    game = CountingGame(lambda s: float(bool(s)))
    result = gtg_shapley(n, game, rng=np.random.default_rng(3))
    np.testing.assert_allclose(result.values, np.full(n, 1 / n))
    assert set(game.calls) <= {frozenset()} | {frozenset(range(n))} | {frozenset({i}) for i in range(n)}
    assert result.evaluations == len(game.calls) == n + 2


@given(st.lists(st.floats(0.01, 1), min_size=1, max_size=8), st.integers(0, 2**32 - 1))
@settings(max_examples=30)
def test_gtg_is_exact_on_additive_games(weights: list[float], seed: int) -> None:
    w = np.array(weights)
    result = gtg_shapley(len(w), additive(w), rng=np.random.default_rng(seed), within_round_epsilon=0.0)
    np.testing.assert_allclose(result.values, w, atol=1e-9)


@given(random_games(max_players=4), st.integers(0, 2**32 - 1))
@settings(max_examples=50)
def test_gtg_returns_exact_values_once_every_coalition_is_cached(game: tuple[int, list[float]], seed: int) -> None:
    # Enough permutations that every coalition is met (a pair is missed by one block with probability 1/3 for
    # n = 4, so by 20 blocks with probability 3e-10); from then on GTG must answer from the cache exactly.
    n, values = game
    values[-1] = values[0] + 1.0  # a round with gain, so it is not skipped
    result = gtg_shapley(
        n, table_game(values), rng=np.random.default_rng(seed), within_round_epsilon=0.0,
        convergence_tolerance=1e-12, min_permutations=40 * n,
    )
    np.testing.assert_allclose(result.values, exact_shapley(n, table_game(values)).values, atol=1e-9)
    assert result.evaluations == 1 << n
    assert result.permutations < 50 * n


def test_gtg_is_deterministic_for_a_seed() -> None:
    game = saturating(WEIGHTS8, 2.0)
    first, again, other = (gtg_shapley(8, game, rng=np.random.default_rng(s)) for s in (11, 11, 12))
    np.testing.assert_array_equal(first.values, again.values)
    assert (first.evaluations, first.permutations) == (again.evaluations, again.permutations)
    assert not np.array_equal(first.values, other.values)


def test_gtg_respects_its_permutation_bounds() -> None:
    game = saturating(WEIGHTS8, 2.0)
    capped = gtg_shapley(8, game, rng=np.random.default_rng(0), max_permutations=5)
    assert capped.permutations == 5
    assert capped.values.sum() == pytest.approx(game(frozenset(range(8))) - game(frozenset()), abs=1e-3)
    unreachable = gtg_shapley(8, game, rng=np.random.default_rng(0), convergence_tolerance=1e-9, max_permutations=40)
    assert unreachable.permutations == 40
    assert gtg_shapley(8, game, rng=np.random.default_rng(0), min_permutations=64).permutations >= 64


@pytest.mark.parametrize(
    "options",
    [
        {"within_round_epsilon": -1.0},
        {"between_round_epsilon": -1e-3},
        {"convergence_tolerance": 0.0},
        {"max_permutations": 0},
        {"min_permutations": 10, "max_permutations": 5},
    ],
)
def test_gtg_rejects_bad_options(options: dict[str, float]) -> None:
    with pytest.raises(ScoringError):
        gtg_shapley(3, additive(np.ones(3)), rng=np.random.default_rng(0), **options)


# --- shared pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", SCORING_METHODS)
def test_no_players_costs_nothing(method: str) -> None:
    result = score_round(method, 0, lambda s: 1 / 0, rng=np.random.default_rng(0))
    assert result.values.shape == (0,) and result.evaluations == 0


def test_negative_player_count_is_refused() -> None:
    with pytest.raises(ScoringError, match="-1"):
        leave_one_out(-1, lambda s: 0.0)


def test_methods_sharing_a_cache_report_only_new_evaluations() -> None:
    cache = CachedUtility(saturating(WEIGHTS8[:5], 2.0))
    exact = exact_shapley(5, cache)
    loo = leave_one_out(5, cache)
    assert (exact.evaluations, loo.evaluations, cache.evaluations) == (32, 0, 32)
    np.testing.assert_allclose(loo.values, leave_one_out(5, saturating(WEIGHTS8[:5], 2.0)).values)


def test_cached_utility_counts_distinct_subsets_and_rejects_non_finite_values() -> None:
    game = CountingGame(lambda s: float(len(s)))
    cache = CachedUtility(game)
    assert cache({0, 1}) == cache(frozenset({1, 0})) == cache([1, 0]) == 2.0
    assert cache.evaluations == len(game.calls) == 1
    assert CachedUtility.wrap(cache) is cache
    with pytest.raises(ScoringError, match=r"\[0, 2\].*nan"):
        CachedUtility(lambda s: float("nan"))({2, 0})


def test_many_evaluates_only_uncached_subsets_and_batches_them_where_the_utility_can() -> None:
    class Batched:
        def __init__(self) -> None:
            self.batches: list[list[frozenset[int]]] = []

        def __call__(self, subset: frozenset[int]) -> float:
            raise AssertionError("a batching utility is asked in batches")

        def many(self, subsets: list[frozenset[int]]) -> list[float]:
            self.batches.append(list(subsets))
            return [float(sum(s)) for s in subsets]

    game = Batched()
    cache = CachedUtility(game)
    assert cache.many([{1, 2}, {3}, {2, 1}, set()]) == [3.0, 3.0, 3.0, 0.0]
    assert game.batches == [[frozenset({1, 2}), frozenset({3}), frozenset()]]  # repeats asked once
    assert cache.many([{3}, {4}]) == [3.0, 4.0] and game.batches[-1] == [frozenset({4})]
    assert cache.evaluations == 4
    plain = CountingGame(lambda s: float(len(s)))
    assert CachedUtility(plain).many([{0}, {0, 1}, {1}]) == [1.0, 2.0, 1.0] and len(plain.calls) == 3
    with pytest.raises(ScoringError, match="nan"):
        CachedUtility(type("Nan", (), {"__call__": lambda self, s: 0.0,
                                       "many": lambda self, ss: [float("nan")] * len(ss)})()).many([{0}])


def test_score_result_is_float64_and_read_only() -> None:
    result = ScoreResult([1, 2], evaluations=3, method="loo")
    assert result.values.dtype == np.float64
    with pytest.raises(ValueError):
        result.values[0] = 5.0


def test_score_round_dispatches_by_name() -> None:
    game = lambda s: 0.5 * bool(s & {0, 1}) + 0.3 * (2 in s)
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(score_round("loo", 3, game, rng=rng).values, [0, 0, 0.3], atol=1e-12)
    np.testing.assert_allclose(score_round("shapley", 3, game, rng=rng).values, [0.25, 0.25, 0.3], atol=1e-12)
    gtg = score_round("gtg", 3, game, rng=rng, max_permutations=2, min_permutations=1)
    assert (gtg.method, gtg.permutations) == ("gtg", 2)
    none = score_round("none", 3, lambda s: 1 / 0, rng=rng)
    assert (none.method, none.evaluations) == ("none", 0)
    np.testing.assert_array_equal(none.values, np.zeros(3))


def test_score_round_names_what_it_does_not_know() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ScoringError, match=r"'owen'.*loo, shapley, gtg, banzhaf, none"):
        score_round("owen", 3, lambda s: 0.0, rng=rng)
    with pytest.raises(ScoringError, match="within_round_epsilom"):
        score_round("loo", 3, lambda s: 0.0, rng=rng, within_round_epsilom=0.1)
