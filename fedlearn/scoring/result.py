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
    ``permutations`` is the number of Monte-Carlo permutations (GTG) or coalitions (Banzhaf) sampled, else 0.
    ``errors``, where the method estimates, is each value's 95 % interval half-width (0 where it is exact).
    Equality is identity: compare ``values`` with numpy instead.
    """

    values: np.ndarray
    evaluations: int
    method: str
    truncated: bool = False
    permutations: int = 0
    errors: np.ndarray | None = None

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=np.float64).reshape(-1)
        values.setflags(write=False)  # frozen means frozen: nobody edits a published score in place
        object.__setattr__(self, "values", values)
        if self.errors is not None:
            errors = np.array(self.errors, dtype=np.float64).reshape(-1)
            errors.setflags(write=False)
            object.__setattr__(self, "errors", errors)
