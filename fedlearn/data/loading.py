"""Loading datasets: sklearn's bundled ones (no download) and user files (CSV, NPZ, Parquet)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fedlearn.data.dataset import Dataset
from fedlearn.errors import DataError

BUNDLED_DATASETS: tuple[str, ...] = ("digits", "breast_cancer", "wine")
FILE_FORMATS: tuple[str, ...] = (".csv", ".npz", ".parquet")

# Exceptions a reader raises on a corrupt or unreadable file (pyarrow's ArrowInvalid is a ValueError).
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    pd.errors.ParserError,
)


def load_dataset(source: str | os.PathLike[str], *, label_column: str = "label") -> Dataset:
    """Load a bundled dataset by name, or a ``.csv`` / ``.npz`` / ``.parquet`` file by path.

    CSV and Parquet: ``label_column`` holds the labels, every other column is a numeric feature.
    NPZ: arrays ``X`` (n, d) and ``y`` (n,). Labels of any type map to ``0..k-1`` in sorted order.
    Features are returned as stored (no standardisation; ``federate`` does that on the training pool).
    """
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"dataset source must be a name or a path, got {source!r}")
    text = os.fspath(source)
    if text in BUNDLED_DATASETS:
        return _load_bundled(text)
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix == ".pq":
        suffix = ".parquet"
    reader = _READERS.get(suffix)
    if reader is not None:
        if path.is_dir():
            raise DataError(f"{text} is a directory, not a data file ({', '.join(FILE_FORMATS)})")
        if not path.is_file():
            raise DataError(f"data file not found: {text}")
        return reader(path, label_column)
    if path.is_dir():
        raise DataError(f"{text} is a directory, not a data file ({', '.join(FILE_FORMATS)})")
    if path.exists():
        raise DataError(
            f"unsupported data file format {path.suffix!r} for {text}; use one of {', '.join(FILE_FORMATS)}"
        )
    raise DataError(
        f"unknown dataset {text!r}: not a bundled dataset ({', '.join(BUNDLED_DATASETS)}) "
        f"nor a path to a {', '.join(FILE_FORMATS)} file"
    )


def _load_bundled(name: str) -> Dataset:
    """One of sklearn's bundled datasets (shipped with sklearn, nothing is downloaded)."""
    from sklearn import datasets as skd

    loaders: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
        "digits": skd.load_digits,
        "breast_cancer": skd.load_breast_cancer,
        "wine": skd.load_wine,
    }
    X, y = loaders[name](return_X_y=True)
    labels, names = _encode_labels(np.asarray(y), name)
    return Dataset(X=X, y=labels, num_classes=len(names), name=name, labels=names)


def _read_csv(path: Path, label_column: str) -> Dataset:
    try:
        frame = read_csv_table(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"data file is empty: {path}") from exc
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read CSV file {path}: {_one_line(exc)}") from exc
    return _from_frame(frame, path, label_column)


def read_csv_table(path: Path) -> pd.DataFrame:
    """A comma-separated file as a table; refused (DataError) where it was written in a way that would make
    other columns than its author meant: another separator, or a row index saved as an unnamed column."""
    frame = pd.read_csv(path)
    header = [str(c) for c in frame.columns]
    if len(header) == 1:
        separator = next((sep for sep in (";", "\t", "|") if sep in header[0]), None)
        if separator is not None:
            raise DataError(f"{path} reads as one column: its header is {separator!r}-separated; fedlearn reads "
                            "comma-separated CSV (rewrite it with commas, or save it as Parquet)")
    unnamed = [i + 1 for i, c in enumerate(header) if c.startswith("Unnamed: ")]
    if unnamed:
        which = ", ".join(map(str, unnamed))
        raise DataError(f"column(s) {which} of {path} have no name in the header (a row index saved with the data, "
                        "as pandas' to_csv does without index=False?): name them, or drop them, since every column "
                        "but the label is trained on")
    return frame


def _read_parquet(path: Path, label_column: str) -> Dataset:
    try:
        frame = pd.read_parquet(path)
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read Parquet file {path}: {_one_line(exc)}") from exc
    return _from_frame(frame, path, label_column)


def _read_npz(path: Path, label_column: str) -> Dataset:
    del label_column  # NPZ files name their arrays "X" and "y"
    if not zipfile.is_zipfile(path):
        raise DataError(f"cannot read NPZ file {path}: not an .npz archive (a zip holding arrays 'X' and 'y')")
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read NPZ file {path}: {_one_line(exc)}") from exc
    with archive:
        missing = [key for key in ("X", "y") if key not in archive.files]
        if missing:
            raise DataError(
                f"NPZ file {path} lacks array(s) {', '.join(missing)}; "
                f"it has: {', '.join(archive.files) or '(none)'}"
            )
        try:
            X = archive["X"]
            y = archive["y"]
        except _READ_ERRORS as exc:
            raise DataError(f"cannot read NPZ file {path}: {_one_line(exc)}") from exc
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
        raise DataError(f"NPZ file {path}: features 'X' must be numeric, got dtype {X.dtype}")
    if X.ndim != 2:
        raise DataError(f"NPZ file {path}: features 'X' must be 2-D (n, d), got shape {X.shape}")
    if y.ndim != 1:
        raise DataError(f"NPZ file {path}: labels 'y' must be 1-D (n,), got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise DataError(f"NPZ file {path}: {X.shape[0]} rows in 'X' but {y.shape[0]} labels in 'y'")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"NPZ file {path} holds no data: 'X' has shape {X.shape}")
    _check_finite(X.astype(np.float64), path)
    labels, names = _encode_labels(y, str(path))
    return Dataset(X=X, y=labels, num_classes=len(names), name=path.stem, labels=names)


def _from_frame(frame: pd.DataFrame, path: Path, label_column: str) -> Dataset:
    """Split a table into numeric features and a label column."""
    columns = [str(c) for c in frame.columns]
    frame.columns = pd.Index(columns)
    if label_column not in columns:
        raise DataError(
            f"label column {label_column!r} not found in {path}; columns: {', '.join(columns) or '(none)'}"
        )
    if len(frame) == 0:
        raise DataError(f"data file {path} has no rows")
    features = frame.drop(columns=[label_column])
    if features.shape[1] == 0:
        raise DataError(f"data file {path} has no feature columns besides label column {label_column!r}")
    non_numeric = [
        f"{c} ({features[c].dtype})"
        for c in features.columns
        if not (pd.api.types.is_numeric_dtype(features[c]) or pd.api.types.is_bool_dtype(features[c]))
    ]
    if non_numeric:
        raise DataError(f"non-numeric feature column(s) in {path}: {', '.join(non_numeric)}")
    X = features.to_numpy(dtype=np.float64)
    bad = [str(c) for c, ok in zip(features.columns, np.isfinite(X).all(axis=0)) if not ok]
    if bad:
        raise DataError(f"missing or infinite values in feature column(s) of {path}: {', '.join(bad)}")
    labels, names = _encode_labels(frame[label_column].to_numpy(), str(path), label_column)
    return Dataset(X=X, y=labels, num_classes=len(names), name=path.stem, labels=names)


def _encode_labels(raw: np.ndarray, where: str, column: str = "y") -> tuple[np.ndarray, tuple[str, ...]]:
    """Map labels of any type to ``0..k-1`` in sorted order of the distinct values; also each class's label."""
    if raw.size == 0:
        raise DataError(f"{where} has no labels")
    missing = pd.isna(raw)
    if np.any(missing):
        row = int(np.flatnonzero(missing)[0])
        raise DataError(f"{where}: label {column!r} is missing in {int(missing.sum())} row(s), first at row {row}")
    try:
        classes, encoded = np.unique(raw, return_inverse=True)
    except TypeError as exc:
        raise DataError(f"{where}: labels in {column!r} mix incomparable types ({_one_line(exc)})") from exc
    if classes.size < 2:
        only = classes[0].item() if isinstance(classes[0], np.generic) else classes[0]  # 0, not np.int64(0)
        raise DataError(f"{where}: label {column!r} has a single class ({only!r}); a classifier needs at least 2")
    names = tuple(str(c.item() if isinstance(c, np.generic) else c) for c in classes)
    return encoded.reshape(-1).astype(np.int64), names


def _check_finite(X: np.ndarray, path: Path) -> None:
    if not np.isfinite(X).all():
        cols = np.flatnonzero(~np.isfinite(X).all(axis=0)).tolist()
        raise DataError(f"missing or infinite values in feature column(s) {cols} of {path}")


def _one_line(exc: BaseException) -> str:
    """An exception's message collapsed onto one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


_READERS: dict[str, Callable[[Path, str], Dataset]] = {
    ".csv": _read_csv,
    ".npz": _read_npz,
    ".parquet": _read_parquet,
}
