"""Budget split: every wei of a round's budget is paid or rolled over, never lost or paid twice."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fedlearn.payout.rewards import WEI_PER_TOKEN, split_budget, tokens_to_wei

scores_st = st.dictionaries(st.text(min_size=1, max_size=5), st.floats(-1, 1, allow_nan=False), max_size=12)


@given(scores_st, st.integers(0, 10**30))
def test_rewards_plus_rollover_equal_the_budget(scores: dict[str, float], budget: int) -> None:
    rewards, unspent = split_budget(scores, budget)
    assert set(rewards) == set(scores)
    assert sum(rewards.values()) + unspent == budget
    assert all(rewards[n] == 0 for n, s in scores.items() if s <= 0)
    positive = [n for n, s in scores.items() if s > 0]
    # Dust: under one wei per positive scorer; with no positive score the whole budget rolls over.
    assert unspent == budget if not positive else unspent < len(positive)


def test_rewards_are_proportional_to_positive_scores() -> None:
    rewards, unspent = split_budget({"a": 0.75, "b": 0.25, "c": -0.2, "d": 0.0}, 100 * WEI_PER_TOKEN)
    assert rewards["a"] == 3 * rewards["b"] and rewards["c"] == rewards["d"] == 0
    assert rewards["a"] + rewards["b"] + unspent == 100 * WEI_PER_TOKEN


def test_all_nonpositive_scores_roll_the_budget_over() -> None:
    assert split_budget({"a": 0.0, "b": -0.1}, 7) == ({"a": 0, "b": 0}, 7)


def test_tokens_to_wei_is_exact_for_decimal_amounts() -> None:
    assert tokens_to_wei(100.1) == 100_100_000_000_000_000_000
    assert tokens_to_wei(0.000000000000000001) == 1
