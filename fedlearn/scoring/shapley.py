"""Exact Shapley values by enumerating all 2^n coalitions (small federations only)."""

from __future__ import annotations

from math import factorial

import numpy as np

from fedlearn.errors import ScoringError
from fedlearn.scoring._validate import check_players
from fedlearn.scoring.result import ScoreResult
from fedlearn.scoring.utility import CachedUtility, Utility

MAX_EXACT_PLAYERS = 10
"""2^10 = 1,024 model evaluations a round is the most we accept; beyond it use GTG-Shapley."""


def exact_shapley(n: int, utility: Utility) -> ScoreResult:
    """φ_i = Σ_{S ⊆ N∖{i}} |S|!(n−|S|−1)!/n! · (U(S ∪ {i}) − U(S)), using 2^n evaluations."""
    n = check_players(n)
    if n > MAX_EXACT_PLAYERS:
        raise ScoringError(
            f"exact Shapley needs 2^{n} utility evaluations for n={n} players "
            f"(limit n <= {MAX_EXACT_PLAYERS}); use scoring method 'gtg' instead"
        )
    if n == 0:
        return ScoreResult(np.zeros(0), 0, "shapley")
    cache = CachedUtility.wrap(utility)
    start = cache.evaluations

    # Coalitions as bitmasks: each subset is evaluated exactly once, then reused by every player.
    masks = np.arange(1 << n)
    members = (masks[:, None] >> np.arange(n)) & 1  # (2^n, n) membership table
    u = np.array([cache(frozenset(np.flatnonzero(row).tolist())) for row in members])
    sizes = members.sum(axis=1)
    weight_by_size = np.array([factorial(s) * factorial(n - s - 1) / factorial(n) for s in range(n)])

    values = np.empty(n)
    for i in range(n):
        without = masks[members[:, i] == 0]  # every S with i ∉ S
        values[i] = np.dot(weight_by_size[sizes[without]], u[without | (1 << i)] - u[without])
    return ScoreResult(values, cache.evaluations - start, "shapley", errors=np.zeros(len(values)))
