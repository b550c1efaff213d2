"""Feature standardisation fitted on training data only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Standardizer:
    """Per-feature ``(x - mean) / std``; a constant feature gets ``std = 1``."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardizer:
        """Mean and population std (ddof=0) of ``X``'s columns, computed in float64."""
        X64 = np.asarray(X, dtype=np.float64)
        mean = X64.mean(axis=0)
        std = X64.std(axis=0)
        std = np.where(std > 0.0, std, 1.0)
        return cls(mean=mean, std=std)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Standardised float32 copy of ``X``."""
        return ((np.asarray(X, dtype=np.float64) - self.mean) / self.std).astype(np.float32)
