"""Banzhaf value: a player's marginal contribution averaged over all coalitions of the others, equally weighted.

β_i = 2^−(n−1) Σ_{S ⊆ N∖{i}} [U(S ∪ {i}) − U(S)]

Why it is offered beside Shapley: splitting one institution into identities cannot raise what it earns in the
way Shapley allows. If w's data is split between identities p and q (and p and q together aggregate to what w
alone would), then for every coalition T of the others

    ½[U(T+p) − U(T)] + ½[U(T+p+q) − U(T+q)] + ½[U(T+q) − U(T)] + ½[U(T+p+q) − U(T+p)] = U(T+w) − U(T),

so β_p + β_q = β_w exactly, whatever the utility. For three equal pieces p, q, r the same pairing leaves, per
coalition T, ¼[Σ U(T+two pieces) − Σ U(T+one piece) − U(T+w) + U(T)] = −¼ Δ³, minus the third finite difference of
U along the split: ≤ 0 whenever each extra row adds less, by less (square root, logarithm, exponential saturation).
Larger k is checked on such games in tests/test_banzhaf.py. Shapley weights small coalitions more, where a piece of
w adds nearly as much as w: its pieces can earn several times the whole (``benchmarks/integrity.py`` measures
both). Banzhaf is also the semivalue most robust to noise in U (Wang and Jia, "Data Banzhaf", 2023).

Computation: exact (every subset, 2^n evaluations) while 2^n ≤ ``samples``; beyond, the maximum-sample-reuse
estimator: ``samples`` coalitions drawn with each player present with probability ½, and β_i the mean utility of
the draws that hold i minus the mean of those that do not. Every draw informs every player's estimate.
"""

from __future__ import annotations

import itertools

import numpy as np

from fedlearn.errors import ScoringError
from fedlearn.scoring._validate import check_players
from fedlearn.scoring.result import ScoreResult
from fedlearn.scoring.utility import CachedUtility, Utility

DEFAULT_SAMPLES = 1024


def banzhaf(n: int, utility: Utility, *, rng: np.random.Generator, samples: int = DEFAULT_SAMPLES) -> ScoreResult:
    """Each player's Banzhaf value: exact when 2^n ≤ ``samples``, else estimated from ``samples`` coalitions."""
    n = check_players(n)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ScoringError(f"banzhaf samples = {samples!r} must be an integer of at least 2")
    if n == 0:
        return ScoreResult(np.zeros(0), 0, "banzhaf")
    cache = CachedUtility.wrap(utility)
    start = cache.evaluations
    if 2**n <= samples:
        members = np.array(list(itertools.product((False, True), repeat=n)), dtype=bool)
    else:
        members = rng.random((samples, n)) < 0.5
    values = np.array([cache(frozenset(np.flatnonzero(row).tolist())) for row in members])
    estimate = np.zeros(n)
    for i in range(n):
        held = members[:, i]
        # A player in every draw (or in none) has nothing to compare with: it scores 0, not NaN.
        if held.any() and (~held).any():
            estimate[i] = values[held].mean() - values[~held].mean()
    return ScoreResult(estimate, cache.evaluations - start, "banzhaf")
