"""Boosted updates: length per local step against the round's reference (fedlearn.federation.step_lengths)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedlearn.federation.step_lengths import local_steps, overlong, reference_per_step


def test_local_steps_count_batches_per_epoch() -> None:
    assert local_steps(32, 32, 2) == 2
    assert local_steps(33, 32, 2) == 4
    assert local_steps(0, 32, 1) == 1  # a round moves the model at least one step's worth


def test_a_boosted_update_is_flagged_and_honest_ones_of_any_size_are_not() -> None:
    # Prepare: honest updates whose length grows with their steps (1 to 12 batches), within ±30 % of one
    # length per step; the last sends a 2-step update boosted 5x.
    rng = np.random.default_rng(0)
    steps = [1, 2, 3, 5, 8, 12, 2]
    lengths = [s * rng.uniform(0.7, 1.3) for s in steps[:-1]] + [5 * 2.0]
    # Execute
    flagged = overlong(lengths, steps, 3.0)
    # Assert
    assert list(flagged) == [6] and flagged[6] > 3.0


def test_updates_that_barely_move_do_not_pull_the_reference_down() -> None:
    # Prepare: five institutions that barely train (low effort: 1/100 of an honest step), four honest, one
    # boosted 4x, all with the same steps. The plain median (0.5) sits halfway between the idle and the honest.
    steps = [4] * 10
    lengths = [0.04] * 5 + [4.0, 4.4, 3.6, 4.2] + [4 * 4.0]
    # Execute
    reference = reference_per_step(np.array(lengths) / np.array(steps), 3.0)
    flagged = overlong(lengths, steps, 3.0)
    # Assert: the second pass keeps those within 3x of the first median, the honest ones, so the reference is
    # theirs and only the boosted update is flagged (against the plain median every honest one would be).
    assert reference == pytest.approx(1.025)
    assert list(flagged) == [9] and flagged[9] == pytest.approx(4 / 1.025)
    assert np.all(np.array(lengths[5:9]) / 4 > 1.5 * float(np.median(np.array(lengths) / 4)))


def test_a_small_limit_around_an_even_median_keeps_a_reference() -> None:
    # The median of four (1.0) lies beyond 1.5x of both middle updates: the second pass finds none and keeps the
    # first median instead of none at all.
    assert reference_per_step(np.array([0.1, 0.4, 1.6, 50.0]), 1.5) == pytest.approx(1.0)
    assert overlong([0.1, 0.4, 1.6, 50.0], [1] * 4, 1.5) == {2: pytest.approx(1.6), 3: pytest.approx(50.0)}


def test_off_or_too_few_updates_flag_nothing() -> None:
    assert overlong([1.0, 1.0, 50.0], [1, 1, 1], 0) == {}
    assert overlong([1.0, 50.0], [1, 1], 3.0) == {}
    assert overlong([0.0, 0.0, 0.0], [1, 1, 1], 3.0) == {}


@given(st.lists(st.floats(0.6, 1.5), min_size=3, max_size=30), st.floats(1.01, 20.0))
def test_only_updates_beyond_the_limit_of_an_honest_majority_are_flagged(honest: list[float], boost: float) -> None:
    # Honest lengths per step within a factor 2.5 of each other (below the limit of any median among them); one
    # extra update boosted past the limit over the largest honest one.
    lengths = [*honest, boost * 3.0 * max(honest)]
    flagged = overlong(lengths, [1] * len(lengths), 3.0)
    assert len(honest) in flagged
    assert all(i == len(honest) for i in flagged)
