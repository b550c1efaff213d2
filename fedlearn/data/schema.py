"""A federation's data schema, and each party's own file read against it.

In a pilot nobody pools data: every institution's SuperNode reads its own file, and the coordinator its own
validation and test files. What makes the files one federation is the schema the federation agreed on: how many
feature columns (and, for tables, which, in which order), the label column, and the classes as the files write
them. A file that does not match it is refused at start, with one line naming the difference, before any round.
Labels are mapped through the schema's class list, so an institution that holds only some classes (or one) keeps
the federation's class numbering. Features are used as stored: scaling is part of what the schema agrees on.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedlearn.data.dataset import Dataset
from fedlearn.data.loading import FILE_FORMATS, _one_line, read_csv_table
from fedlearn.errors import DataError

_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, EOFError, zipfile.BadZipFile,
                                                 pd.errors.ParserError)


@dataclass(frozen=True)
class Schema:
    """Feature count (and names, for tables), label column, and the classes in the federation's order."""

    features: int
    classes: tuple[str, ...]
    label_column: str = "label"
    feature_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.features < 1:
            raise DataError(f"schema: the number of features must be at least 1, got {self.features}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise DataError(f"schema: classes must be at least 2 distinct labels, got {list(self.classes)}")
        if self.feature_columns and len(self.feature_columns) != self.features:
            raise DataError(f"schema: {len(self.feature_columns)} feature columns named for {self.features} "
                            "features")

    @classmethod
    def parse(cls, features: int, classes: str, label_column: str, feature_columns: str = "") -> Schema:
        """From the config's comma-separated lists."""
        return cls(features, tuple(c.strip() for c in classes.split(",") if c.strip()), label_column,
                   tuple(c.strip() for c in feature_columns.split(",") if c.strip()))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def empty(self, name: str) -> Dataset:
        """No rows, the schema's shape: what the coordinator holds of an institution's data."""
        return Dataset(np.zeros((0, self.features), np.float32), np.zeros(0, np.int64), self.num_classes, name)


def load_local(path: str | os.PathLike[str], schema: Schema, name: str) -> Dataset:
    """``path`` (CSV, Parquet or NPZ) as a Dataset named ``name``, checked against ``schema``."""
    file = Path(path)
    suffix = {".pq": ".parquet"}.get(file.suffix.lower(), file.suffix.lower())
    if suffix not in FILE_FORMATS:
        raise DataError(f"{name}: data file {file} has format {file.suffix!r}; use one of {', '.join(FILE_FORMATS)}")
    if not file.is_file():
        raise DataError(f"{name}: data file not found: {file}")
    try:
        if suffix == ".npz":
            X, raw = _read_npz(file)
        else:
            frame = read_csv_table(file) if suffix == ".csv" else pd.read_parquet(file)
            X, raw = _split_table(frame, file, schema)
    except DataError as exc:
        raise DataError(f"{name}: {exc}") from None  # whose file it is, as every other refusal here says
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: data file is empty: {file}") from None
    except _READ_ERRORS as exc:
        raise DataError(f"{name}: cannot read {file}: {_one_line(exc)}") from None
    if X.shape[1] != schema.features:
        raise DataError(f"{name}: {file} has {X.shape[1]} feature columns; the federation's schema has "
                        f"{schema.features}")
    if X.shape[0] == 0:
        raise DataError(f"{name}: {file} has no rows")
    if not np.isfinite(X).all():
        cols = np.flatnonzero(~np.isfinite(X).all(axis=0)).tolist()
        raise DataError(f"{name}: missing or infinite values in feature column(s) {cols} of {file}")
    return Dataset(X, _encode(raw, schema, f"{name}: {file}"), schema.num_classes, name)


def _read_npz(file: Path) -> tuple[np.ndarray, np.ndarray]:
    if not zipfile.is_zipfile(file):
        raise DataError(f"cannot read NPZ file {file}: not an .npz archive (a zip holding arrays 'X' and 'y')")
    with np.load(file, allow_pickle=False) as archive:
        missing = [key for key in ("X", "y") if key not in archive.files]
        if missing:
            raise DataError(f"NPZ file {file} lacks array(s) {', '.join(missing)}")
        X, y = archive["X"], archive["y"]
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise DataError(f"NPZ file {file}: 'X' must be (n, d) and 'y' (n,), got {X.shape} and {y.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"NPZ file {file}: features 'X' must be numeric, got dtype {X.dtype}")
    return X.astype(np.float64), y


def _split_table(frame: pd.DataFrame, file: Path, schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    columns = [str(c) for c in frame.columns]
    frame.columns = pd.Index(columns)
    if schema.label_column not in columns:
        raise DataError(f"{file} has no label column {schema.label_column!r} (the federation's schema); columns: "
                        f"{', '.join(columns) or '(none)'}")
    if len(frame) == 0:  # a header alone: every column reads as text, which would be named instead
        raise DataError(f"{file} has no rows")
    if schema.feature_columns:
        missing = [c for c in schema.feature_columns if c not in columns]
        if missing:
            raise DataError(f"{file} lacks the schema's feature column(s) {', '.join(missing)}")
        features = frame[list(schema.feature_columns)]
    else:
        features = frame.drop(columns=[schema.label_column])
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise DataError(f"non-numeric feature column(s) in {file}: {', '.join(map(str, non_numeric))}")
    return features.to_numpy(dtype=np.float64), frame[schema.label_column].to_numpy()


def _encode(raw: np.ndarray, schema: Schema, where: str) -> np.ndarray:
    """Labels mapped to the schema's class indices; a label outside the schema is refused."""
    if pd.isna(raw).any():
        raise DataError(f"{where}: {int(pd.isna(raw).sum())} row(s) have no label")
    text = np.array([_label_text(v) for v in raw.tolist()])
    index = {c: i for i, c in enumerate(schema.classes)}
    unknown = sorted({t for t in text.tolist() if t not in index})
    if unknown:
        raise DataError(f"{where}: label(s) {', '.join(unknown[:5])} are not among the federation's classes "
                        f"{', '.join(schema.classes)}")
    return np.array([index[t] for t in text.tolist()], dtype=np.int64)


def _label_text(value: object) -> str:
    """A label as the schema writes it: integers without a decimal point (CSV readers may give floats)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
