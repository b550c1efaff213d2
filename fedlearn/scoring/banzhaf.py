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

Computation: exact (every subset, 2^n evaluations) while 2^n ≤ ``samples``. Beyond, coalitions are drawn in
complementary pairs (S and N∖S), each player in S with probability ½, evaluated ``BATCH`` at a time (one batched
model evaluation where the utility can), and every draw informs every player's estimate. In ±1 coordinates (z_i = +1
when i ∈ S) U splits into an odd and an even part, and β_i is twice the coefficient of z_i, which lies in the odd
part: a pair's difference U(S) − U(N∖S) is twice the odd part at S, so everything even in U — the constant, every
pairwise interaction, the curvature of U in the coalition's size — cancels within each pair instead of adding noise
(on real rounds at n = 10 the even part is two thirds to three quarters of the variance that the players' own
contributions leave unexplained). The estimate is the least-squares fit of the pair differences on z (β exactly, in
expectation) once there are ``n + 10`` pairs, with its 95 % interval from Student's t on the fit's residuals; before
that, the maximum-sample-reuse difference of means over all draws (Wang and Jia). One pair is not drawn but taken
exactly: (∅, N). U(∅) is the round's start model, untouched by any update; it sits off every coalition model by a
jump that spreads over every order of interaction, so drawing it only adds noise, while its term in β is known
(:func:`_estimate`). On five real rounds at n = 10 with 102 evaluations (``benchmarks/scale.py``) the median
normalised L1 error against exact was 0.209 with independent draws, 0.154 with pairs, 0.131 with pairs and (∅, N)
exact. (For up to 12 players, :mod:`fedlearn.scoring.banzhaf_surrogate` models U over the coalitions' weight
shares and reaches 0.055 at that budget.) Drawing stops early once the half-widths add up to at most
``tolerance`` × Σ|β_i| (the whole vector within that normalised L1 error, each coordinate at 95 %), and in any
case once U(∅), U(N) and the pairs have used ``samples`` evaluations (one fewer when ``samples`` is odd: draws come
in pairs).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.stats import t as student_t

from fedlearn.errors import ScoringError
from fedlearn.scoring._validate import check_players
from fedlearn.scoring.result import ScoreResult
from fedlearn.scoring.utility import CachedUtility, Utility

DEFAULT_SAMPLES = 1024
DEFAULT_TOLERANCE = 0.05
BATCH = 128
MIN_RESIDUAL_DOF = 10  # pairs beyond n before the regression's interval is trusted


def banzhaf(n: int, utility: Utility, *, rng: np.random.Generator, samples: int = DEFAULT_SAMPLES,
            tolerance: float = DEFAULT_TOLERANCE) -> ScoreResult:
    """Each player's Banzhaf value: exact when 2^n ≤ ``samples``, else estimated from at most ``samples``
    coalitions, stopping once the estimate's normalised L1 error is within ``tolerance`` at 95 %."""
    n = check_players(n)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 4:
        raise ScoringError(f"banzhaf samples = {samples!r} must be an integer of at least 4 (U(∅), U(N), one pair)")
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
    empty, grand = cache.many([frozenset(), frozenset(range(n))])  # the pair (∅, N), taken exactly, not drawn
    halves: list[np.ndarray] = []
    drawn: list[float] = []  # U of each half's coalitions, in draw order
    complements: list[float] = []  # U of their complements, in the same order
    budget = (samples - 2) // 2  # pairs, after U(∅) and U(N)
    while True:
        half = rng.random((min(BATCH // 2, budget - len(drawn)), n)) < 0.5
        evaluated = cache.many(_coalitions(np.concatenate([half, ~half])))
        halves.append(half)
        drawn.extend(evaluated[:len(half)])
        complements.extend(evaluated[len(half):])
        pairs = np.concatenate(halves)
        estimate, half_widths = _estimate(pairs, np.array(drawn), np.array(complements), empty, grand)
        if len(pairs) >= budget or half_widths.sum() <= tolerance * np.abs(estimate).sum():
            break
    return ScoreResult(estimate, cache.evaluations - start, "banzhaf", errors=half_widths,
                       permutations=2 * len(pairs))


def _coalitions(members: np.ndarray) -> list[frozenset[int]]:
    return [frozenset(np.flatnonzero(row).tolist()) for row in members]


def _estimate(pairs: np.ndarray, drawn: np.ndarray, complements: np.ndarray, empty: float,
              grand: float) -> tuple[np.ndarray, np.ndarray]:
    """Each player's estimate and its 95 % half-width from the pairs drawn so far, the pair (∅, N) taken exactly:
    it is left out of the draws (a draw of it is ignored) and added back by arithmetic. For the regression,
    leaving it out is fitting Ũ, which equals U except at ∅, where it takes the value the fit itself gives ∅
    (U(N) − Σβ̂); β(U) = β(Ũ) − (U(∅) − Ũ(∅)) / 2^(n−1). For the mean over pairs, which is the average over the
    2^(n−1) − 1 other pairs, the missing pair's term is added with its weight."""
    n = pairs.shape[1]
    keep = pairs.any(axis=1) & ~pairs.all(axis=1)
    if not keep.any():
        return np.zeros(n), np.full(n, np.inf)
    others = 2.0 ** (n - 1)  # pairs in all
    estimate, half_widths, regression = _odd_part(pairs[keep], drawn[keep] - complements[keep])
    if regression:
        return estimate - (empty - grand + estimate.sum()) / others, half_widths
    return ((others - 1) * estimate + grand - empty) / others, half_widths * (others - 1) / others


def _odd_part(pairs: np.ndarray, differences: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(the estimate, its 95 % half-widths, whether it is the regression's) from complementary pairs and their
    differences U(S) − U(N∖S): the least-squares coefficients of the differences on z once there are enough pairs
    for them, else the mean of z_i (U(S) − U(N∖S)) over the pairs — the difference of the mean utility with and
    without the player, every draw counting for every player."""
    p, n = pairs.shape
    z = np.where(pairs, 1.0, -1.0)
    if p >= n + MIN_RESIDUAL_DOF:
        gram = z.T @ z
        if np.linalg.matrix_rank(gram) == n:
            inverse = np.linalg.inv(gram)
            coef = inverse @ (z.T @ differences)
            residual = differences - z @ coef
            variance = residual @ residual / (p - n)
            quantile = float(student_t.ppf(0.975, p - n))
            return coef, quantile * np.sqrt(np.maximum(variance * np.diag(inverse), 0.0)), True
    signed = z * differences[:, None]
    # A pair and its mirror image are one draw twice: with fewer than two distinct pairs there is no spread to
    # measure, and a zero half-width would pass for an exact value.
    if len(np.unique(z * z[:, :1], axis=0)) < 2:
        return signed.mean(axis=0), np.full(n, np.inf), False
    half_widths = float(student_t.ppf(0.975, p - 1)) * signed.std(axis=0, ddof=1) / np.sqrt(p)
    return signed.mean(axis=0), half_widths, False
