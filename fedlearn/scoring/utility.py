"""A memoising wrapper around the round's utility: every evaluation is a model evaluation."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from fedlearn.errors import ScoringError

Utility = Callable[[frozenset[int]], float]

UTILITY_MAX = {"accuracy": 1.0, "neg_loss": 0.0, "brier": 0.0, "margin": 1.0}
"""The best value each utility can take (a perfect model's): the headroom a run can close is this minus where
it starts."""


class CachedUtility:
    """Caches ``utility(subset)`` by frozenset and counts distinct evaluations.

    Scoring methods wrap their utility in one of these (or reuse the one they are given, see
    :meth:`wrap`), so that no subset is ever evaluated twice, and report how many evaluations
    they caused as the difference of :attr:`evaluations` before and after.
    """

    def __init__(self, utility: Utility) -> None:
        self._utility = utility
        self._cache: dict[frozenset[int], float] = {}

    @classmethod
    def wrap(cls, utility: Utility) -> CachedUtility:
        """Return ``utility`` itself when it already caches, so callers can share one cache."""
        return utility if isinstance(utility, CachedUtility) else cls(utility)

    @property
    def evaluations(self) -> int:
        """Distinct subsets evaluated so far."""
        return len(self._cache)

    def __contains__(self, subset: Iterable[int]) -> bool:
        return frozenset(subset) in self._cache

    def many(self, subsets: Iterable[Iterable[int]]) -> list[float]:
        """U of each subset; those not cached yet are evaluated together when the utility can batch (a
        ``many`` method, as :class:`fedlearn.federation.coalitions.MeanUtility` has), else one by one."""
        keys = [s if isinstance(s, frozenset) else frozenset(s) for s in subsets]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        batched = getattr(self._utility, "many", None)
        if missing and batched is not None:
            for key, value in zip(missing, batched(missing)):
                self._store(key, float(value))
        return [self(key) for key in keys]

    def _store(self, key: frozenset[int], value: float) -> None:
        if not math.isfinite(value):
            # A NaN would silently poison every score of the round; fail loudly instead.
            raise ScoringError(f"utility of subset {sorted(key)} is {value}, not a finite number")
        self._cache[key] = value

    def __call__(self, subset: Iterable[int]) -> float:
        key = subset if isinstance(subset, frozenset) else frozenset(subset)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        value = float(self._utility(key))
        self._store(key, value)
        return value
