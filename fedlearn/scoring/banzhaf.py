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

Computation: exact (every subset, 2^n evaluations) while 2^n ≤ ``samples``. Beyond, coalitions are drawn with
each player present with probability ½, evaluated ``BATCH`` at a time (one batched model evaluation where the
utility can), and every draw informs every player's estimate. Under that distribution the memberships are
independent and balanced, so β_i is exactly the coefficient of player i in the least-squares fit of U on the
membership indicators: the estimate is that regression's coefficient once there are at least 2(n + 1) draws (the
fit removes what the other members explain, about halving the error of the plain difference of means on real
rounds), and the maximum-sample-reuse difference of means (Wang and Jia) before. Each estimate carries its 95 %
interval (the regression's standard error, or that of a difference of two means); drawing stops early once the
half-widths add up to at most ``tolerance`` × Σ|β_i| (the whole vector within that normalised L1 error, each
coordinate at 95 %), and in any case after ``samples`` draws.
"""

from __future__ import annotations

import itertools

import numpy as np

from fedlearn.errors import ScoringError
from fedlearn.scoring._validate import check_players
from fedlearn.scoring.result import ScoreResult
from fedlearn.scoring.utility import CachedUtility, Utility

DEFAULT_SAMPLES = 1024
DEFAULT_TOLERANCE = 0.05
BATCH = 128
Z95 = 1.959963984540054


def banzhaf(n: int, utility: Utility, *, rng: np.random.Generator, samples: int = DEFAULT_SAMPLES,
            tolerance: float = DEFAULT_TOLERANCE) -> ScoreResult:
    """Each player's Banzhaf value: exact when 2^n ≤ ``samples``, else estimated from at most ``samples``
    coalitions, stopping once the estimate's normalised L1 error is within ``tolerance`` at 95 %."""
    n = check_players(n)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ScoringError(f"banzhaf samples = {samples!r} must be an integer of at least 2")
    if not 0 <= tolerance < 1:
        raise ScoringError(f"banzhaf tolerance = {tolerance!r} must be in [0, 1)")
    if n == 0:
        return ScoreResult(np.zeros(0), 0, "banzhaf")
    cache = CachedUtility.wrap(utility)
    start = cache.evaluations
    if 2**n <= samples:
        members = np.array(list(itertools.product((False, True), repeat=n)), dtype=bool)
        values = np.array(cache.many(_coalitions(members)))
        exact = np.array([values[members[:, i]].mean() - values[~members[:, i]].mean() for i in range(n)])
        return ScoreResult(exact, cache.evaluations - start, "banzhaf", errors=np.zeros(n))
    drawn: list[np.ndarray] = []
    values_drawn: list[float] = []
    while True:
        batch = rng.random((min(BATCH, samples - len(values_drawn)), n)) < 0.5
        drawn.append(batch)
        values_drawn.extend(cache.many(_coalitions(batch)))
        members, values = np.concatenate(drawn), np.array(values_drawn)
        estimate, half_widths = _estimate(members, values)
        if len(members) >= samples or half_widths.sum() <= tolerance * np.abs(estimate).sum():
            break
    return ScoreResult(estimate, cache.evaluations - start, "banzhaf", errors=half_widths,
                       permutations=len(members))


def _coalitions(members: np.ndarray) -> list[frozenset[int]]:
    return [frozenset(np.flatnonzero(row).tolist()) for row in members]


def _estimate(members: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each player's estimate and its 95 % half-width: the regression's when the draws allow one, else the
    difference of the mean utility with and without the player."""
    m, n = members.shape
    if m >= 2 * (n + 1):
        design = np.column_stack([np.ones(m), members.astype(np.float64)])
        gram = design.T @ design
        if np.linalg.matrix_rank(gram) == n + 1:
            inverse = np.linalg.inv(gram)
            coef = inverse @ (design.T @ values)
            residual = values - design @ coef
            variance = residual @ residual / (m - n - 1)
            return coef[1:], Z95 * np.sqrt(np.maximum(variance * np.diag(inverse)[1:], 0.0))
    estimate, half = np.zeros(n), np.full(n, np.inf)
    for i in range(n):
        held = members[:, i]
        inside, outside = values[held], values[~held]
        # A player in every draw (or in none) has nothing to compare with: it scores 0, not NaN.
        if len(inside) and len(outside):
            estimate[i] = inside.mean() - outside.mean()
        if len(inside) > 1 and len(outside) > 1:
            half[i] = Z95 * np.sqrt(inside.var(ddof=1) / len(inside) + outside.var(ddof=1) / len(outside))
    return estimate, half
