"""A memoising wrapper around the round's utility: every evaluation is a model evaluation."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from fedlearn.errors import ScoringError

Utility = Callable[[frozenset[int]], float]

UTILITY_MAX = {"accuracy": 1.0, "neg_loss": 0.0, "brier": 0.0, "margin": 1.0}
"""The best value each utility can take (a perfect model's): the headroom a run can close is this minus where
it starts."""


def round_weight(start_utility: float | None, best_utility: float, weighting: str) -> float:
    """What one unit of a round's scores counts for in an institution's contribution (``payout.round_weight``).

    "headroom": 1 / (best − start), the error left when the round began, so a score counts as the share of that
    error its update removed. Measured in raw utility, the first rounds, which any data moves a long way from a
    random start, outweighed the last, which only data the others lack moves: tokens went to the largest
    institutions beyond what their data was worth to the finished model (``benchmarks/payout_fairness.py``).
    A round that started at the best utility cannot gain; it weighs 0. "equal" (and a round that recorded no
    starting utility): 1."""
    if weighting == "equal" or start_utility is None:
        return 1.0
    if weighting != "headroom":
        raise ValueError(f"unknown round weighting {weighting!r} (choose from headroom, equal)")
    headroom = best_utility - start_utility
    return 1.0 / headroom if headroom > 0 else 0.0


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
