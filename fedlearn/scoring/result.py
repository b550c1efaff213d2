"""The one result type every scoring method returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class ScoreResult:
    """One contribution value per player, and what computing it cost.

    ``evaluations`` counts the distinct utility evaluations (model evaluations) the method itself
    triggered; subsets already in a shared :class:`CachedUtility` cost nothing and are not counted.
    ``truncated`` is True when GTG-Shapley skipped the round (between-round truncation).
    ``permutations`` is the number of Monte-Carlo permutations sampled (GTG only, else 0).
    Equality is identity: compare ``values`` with numpy instead.
    """

    values: np.ndarray
    evaluations: int
    method: str
    truncated: bool = False
    permutations: int = 0

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=np.float64).reshape(-1)
        values.setflags(write=False)  # frozen means frozen: nobody edits a published score in place
        object.__setattr__(self, "values", values)
