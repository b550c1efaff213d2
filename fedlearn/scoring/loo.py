"""Leave-one-out contribution: what the round loses when one player's update is dropped."""

from __future__ import annotations

import numpy as np

from fedlearn.scoring._validate import check_players
from fedlearn.scoring.result import ScoreResult
from fedlearn.scoring.utility import CachedUtility, Utility


def leave_one_out(n: int, utility: Utility) -> ScoreResult:
    """``U(N) − U(N ∖ {i})`` for every player: n + 1 evaluations.

    Cheap, but blind to redundancy: two players holding the same data each get ~0.
    """
    n = check_players(n)
    if n == 0:
        return ScoreResult(np.zeros(0), 0, "loo")
    cache = CachedUtility.wrap(utility)
    start = cache.evaluations
    grand = frozenset(range(n))
    u_grand = cache(grand)
    values = np.array([u_grand - cache(grand - {i}) for i in range(n)])
    return ScoreResult(values, cache.evaluations - start, "loo", errors=np.zeros(len(values)))
