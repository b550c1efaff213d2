"""The round-gain test: noise is not a gain, a real gain is, and the bootstrap's error rate is what it says."""

from __future__ import annotations

import numpy as np
import pytest

from fedlearn.errors import ScoringError
from fedlearn.scoring.significance import round_gain


def test_one_more_correct_example_out_of_270_is_not_significant() -> None:
    before = np.zeros(270)
    after = before.copy()
    after[17] = 1.0  # accuracy up by one example: 0.0037
    gain = round_gain(before, after, seed=1)
    assert gain.gain == pytest.approx(1 / 270) and not gain.significant and gain.low <= 0 < gain.high


def test_a_gain_most_examples_share_is_significant_and_a_loss_is_not() -> None:
    rng = np.random.default_rng(0)
    before = -rng.uniform(0.2, 1.0, 270)
    after = before + 0.01 + rng.normal(0, 0.02, 270)
    assert round_gain(before, after, seed=2).significant
    assert not round_gain(after, before, seed=2).significant


def test_without_a_test_any_positive_gain_counts() -> None:
    before = np.zeros(10)
    after = before.copy()
    after[0] = 1e-9
    gain = round_gain(before, after, test="none")
    assert gain.significant and gain.low == gain.high == gain.gain


def test_a_tight_gain_too_small_to_matter_does_not_count_with_a_floor() -> None:
    # A model that barely moved: every example's utility up by about 8e-6, so the interval sits just above zero.
    rng = np.random.default_rng(4)
    before = -rng.uniform(0.5, 1.0, 270)
    after = before + 8e-6 + rng.normal(0, 1e-7, 270)
    assert round_gain(before, after, seed=5).significant  # no floor: counted, and the true-up pays for it
    floored = round_gain(before, after, seed=5, min_gain=1e-4)
    assert floored.low > 0 and not floored.significant
    assert not round_gain(before, after, test="none", min_gain=1e-4).significant
    assert round_gain(before, before + 0.01, seed=5, min_gain=1e-4).significant


def test_the_same_round_gives_the_same_answer() -> None:
    rng = np.random.default_rng(3)
    before, after = rng.normal(size=100), rng.normal(size=100)
    assert round_gain(before, after, seed=(42, 7)) == round_gain(before, after, seed=(42, 7))


def test_under_no_real_change_about_five_percent_of_rounds_are_called_significant() -> None:
    # Per-example changes symmetric around zero: the one-sided 95 % bound should exceed 0 about 5 % of the time.
    rng = np.random.default_rng(11)
    calls = [round_gain(np.zeros(200), rng.normal(0, 1, 200), samples=400, seed=k).significant for k in range(300)]
    assert 0.02 <= np.mean(calls) <= 0.10


@pytest.mark.parametrize(("before", "after", "options", "message"), [
    (np.zeros(3), np.zeros(4), {}, "must pair up"),
    (np.zeros(0), np.zeros(0), {}, "must pair up"),
    (np.zeros(3), np.array([0, np.nan, 0]), {}, "NaN or Inf"),
    (np.zeros(3), np.ones(3), {"confidence": 0.4}, "confidence = 0.4"),
    (np.zeros(3), np.ones(3), {"samples": 10}, "at least 100"),
    (np.zeros(3), np.ones(3), {"test": "t-test"}, "unknown significance test"),
])
def test_bad_inputs_are_scoring_errors(before, after, options, message) -> None:
    with pytest.raises(ScoringError, match=message):
        round_gain(before, after, **options)
