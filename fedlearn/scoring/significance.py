"""Is a round's gain real? A paired bootstrap over validation examples. Pure numpy.

A round moves the global model from its start to the aggregate; on each validation example the utility (the
correct class's log-probability, minus the Brier score, or 0/1 accuracy) changes by some amount. The round's gain
is the mean change. Resampling the examples with replacement, ``samples`` times, gives the gain's sampling
distribution; the gain counts (and the round pays) only when the ``1 - confidence`` quantile of that distribution
is above zero: a one-sided test at level ``confidence``. With 270 validation examples, one example that turns
correct (an accuracy gain of 0.0037) is never significant; a log-loss gain of 0.01 that most examples share is.

The resampling is seeded per round, so a resumed run and ``fedlearn verify`` find the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedlearn.errors import ScoringError

SIGNIFICANCE_TESTS = ("bootstrap", "none")


@dataclass(frozen=True)
class RoundGain:
    """The round's mean utility change and its bootstrap interval [low, high] (low: the one-sided bound)."""

    gain: float
    low: float
    high: float
    significant: bool


def round_gain(
    before: np.ndarray,
    after: np.ndarray,
    *,
    test: str = "bootstrap",
    confidence: float = 0.95,
    samples: int = 1000,
    seed: int | tuple[int, ...] = 0,
    min_gain: float = 0.0,
) -> RoundGain:
    """Gain of ``after`` over ``before``, per-example utilities of the same validation examples in the same order.

    ``test = "none"`` counts any gain above ``min_gain``; ``"bootstrap"`` counts a gain whose lower confidence
    bound is above ``min_gain``.
    """
    b = np.asarray(before, dtype=np.float64).reshape(-1)
    a = np.asarray(after, dtype=np.float64).reshape(-1)
    if b.shape != a.shape or b.size == 0:
        raise ScoringError(f"per-example utilities must pair up: got {b.size} before and {a.size} after")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ScoringError("per-example utilities hold NaN or Inf")
    if test not in SIGNIFICANCE_TESTS:
        raise ScoringError(f"unknown significance test {test!r} (choose from {', '.join(SIGNIFICANCE_TESTS)})")
    diff = a - b
    gain = float(diff.mean())
    if test == "none":
        return RoundGain(gain, gain, gain, gain > max(min_gain, 0.0))
    if not 0.5 < confidence < 1:
        raise ScoringError(f"confidence = {confidence} must be in (0.5, 1)")
    if samples < 100:
        raise ScoringError(f"bootstrap samples = {samples} must be at least 100")
    rng = np.random.default_rng(seed)
    # Means of `samples` resamples, in chunks so memory stays at a few MB for any validation set.
    means = np.empty(samples)
    chunk = max(1, 2_000_000 // diff.size)
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        means[start:stop] = diff[rng.integers(0, diff.size, size=(stop - start, diff.size))].mean(axis=1)
    low, high = np.quantile(means, [1 - confidence, confidence])
    return RoundGain(gain, float(low), float(high), bool(low > max(min_gain, 0.0)))
