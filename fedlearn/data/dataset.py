"""The in-memory dataset every other part of fedlearn consumes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from fedlearn.errors import DataError


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features ``X`` (float32, ``(n, d)``) and labels ``y`` (int64, ``(n,)``, in ``0..num_classes-1``).

    Arrays are converted to those dtypes on construction; shapes, label range and finiteness are checked.
    Equality is identity (``eq=False``): compare arrays explicitly.
    """

    X: np.ndarray
    y: np.ndarray
    num_classes: int
    name: str
    # The label each class index stands for, as the data file wrote it (empty: the indices are the labels).
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        given = np.asarray(self.X)
        if given.dtype.kind == "f" and given.dtype.itemsize > 4 and np.isfinite(given).all() \
                and given.size and np.abs(given).max() > np.finfo(np.float32).max:
            raise DataError(f"dataset {self.name!r}: features hold values beyond ±{np.finfo(np.float32).max:.1e}, "
                            "more than 32-bit floats (what the model trains in) can hold; rescale those columns")
        X = np.ascontiguousarray(given, dtype=np.float32)
        y = np.ascontiguousarray(self.y)
        if X.ndim != 2:
            raise DataError(f"dataset {self.name!r}: features must be 2-D (n, d), got shape {X.shape}")
        if y.ndim != 1:
            raise DataError(f"dataset {self.name!r}: labels must be 1-D (n,), got shape {y.shape}")
        if X.shape[0] != y.shape[0]:
            raise DataError(
                f"dataset {self.name!r}: {X.shape[0]} feature rows but {y.shape[0]} labels"
            )
        if y.size and not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"dataset {self.name!r}: labels must be integers, got dtype {y.dtype}")
        y = y.astype(np.int64, copy=False)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, (int, np.integer)):
            raise DataError(f"dataset {self.name!r}: num_classes must be an int, got {self.num_classes!r}")
        if self.num_classes < 1:
            raise DataError(f"dataset {self.name!r}: num_classes must be >= 1, got {self.num_classes}")
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise DataError(
                f"dataset {self.name!r}: labels must lie in 0..{self.num_classes - 1}, "
                f"got range {int(y.min())}..{int(y.max())}"
            )
        if not np.isfinite(X).all():
            raise DataError(f"dataset {self.name!r}: features contain NaN or infinity")
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "num_classes", int(self.num_classes))

    def label(self, index: int) -> str:
        """How the data file writes class ``index``."""
        return self.labels[index] if index < len(self.labels) else str(index)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_features(self) -> int:
        """Number of feature columns ``d``."""
        return int(self.X.shape[1])

    def subset(self, indices: np.ndarray) -> Dataset:
        """The rows at ``indices`` (integer positions or a boolean mask), same classes and name."""
        idx = np.asarray(indices)
        if idx.dtype != np.bool_:
            idx = idx.astype(np.int64, copy=False)  # an empty list arrives as float64
        return replace(self, X=self.X[idx], y=self.y[idx])

    def renamed(self, name: str) -> Dataset:
        """The same data under another name."""
        return replace(self, name=name)
