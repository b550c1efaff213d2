"""Splitting a dataset into server validation, test, and one training partition per institution.

Partitioning itself is done by flwr-datasets partitioners on a label-and-index Hugging Face dataset; the
features never enter it and are mapped back through the ``idx`` column.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from fedlearn.data.dataset import Dataset
from fedlearn.data.scaling import Standardizer
from fedlearn.errors import DataError

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

PARTITION_SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "pathological", "quantity_skew")

_MAX_SEED = 2**32 - 1


@dataclass(frozen=True, eq=False)
class FederatedSplit:
    """Institutions' training partitions plus the held-out validation and test splits."""

    institutions: list[str]
    partitions: list[Dataset]
    validation: Dataset
    test: Dataset

    def __len__(self) -> int:
        return len(self.institutions)

    def digest(self) -> str:
        """SHA-256 of every split's features and labels, in order: what a resumed run checks it trains on."""
        sha = hashlib.sha256()
        for part in (*self.partitions, self.validation, self.test):
            for array in (part.X, part.y):
                sha.update(str((array.dtype.str, array.shape)).encode())
                sha.update(np.ascontiguousarray(array).tobytes())
        return sha.hexdigest()

    def partition(self, institution: str) -> Dataset:
        """The training partition of ``institution`` (e.g. ``"hospital-03"``)."""
        try:
            return self.partitions[self.institutions.index(institution)]
        except ValueError:
            raise DataError(
                f"unknown institution {institution!r}; known: {', '.join(self.institutions)}"
            ) from None


def institution_names(num_institutions: int, prefix: str = "hospital") -> list[str]:
    """``prefix-01``, ``prefix-02``, … zero-padded to at least two digits."""
    width = max(2, len(str(num_institutions)))
    return [f"{prefix}-{i:0{width}d}" for i in range(1, num_institutions + 1)]


def federate(
    dataset: Dataset,
    *,
    num_institutions: int,
    scheme: str,
    seed: int,
    alpha: float = 0.5,
    classes_per_institution: int = 2,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
    name_prefix: str = "hospital",
    min_partition_size: int = 1,
    standardize: bool = True,
) -> FederatedSplit:
    """Hold out stratified test and validation splits, then partition the rest among institutions.

    Schemes (all flwr-datasets partitioners, applied to the training pool shuffled with ``seed``):
    ``iid`` (IidPartitioner), ``dirichlet`` (DirichletPartitioner over labels with ``alpha``),
    ``pathological`` (PathologicalPartitioner, ``classes_per_institution`` labels each; training examples of
    a label that no institution drew are left out), ``quantity_skew`` (LinearPartitioner: institution i holds
    a share proportional to i, labels IID). With ``standardize``, mean and std are fitted on the institutions'
    training data only and applied to every split. The same arguments give byte-identical arrays.
    """
    _check_arguments(
        dataset,
        num_institutions=num_institutions,
        scheme=scheme,
        seed=seed,
        alpha=alpha,
        classes_per_institution=classes_per_institution,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        name_prefix=name_prefix,
        min_partition_size=min_partition_size,
    )
    pool_idx, val_idx, test_idx = _hold_out(dataset, seed, validation_fraction, test_fraction)
    if num_institutions > len(pool_idx):
        raise DataError(
            f"num_institutions={num_institutions} exceeds the {len(pool_idx)} training examples left "
            f"after holding out validation and test from {len(dataset)}"
        )
    if min_partition_size * num_institutions > len(pool_idx):
        raise DataError(
            f"min_partition_size={min_partition_size} is impossible for {num_institutions} institutions "
            f"sharing {len(pool_idx)} training examples"
        )

    # Shuffle the pool first, as flwr-datasets' FederatedDataset does: IidPartitioner and LinearPartitioner
    # cut contiguous blocks, so the order decides which examples each institution holds.
    pool_idx = pool_idx[np.random.default_rng(seed).permutation(len(pool_idx))]
    names = institution_names(num_institutions, name_prefix)
    partitioner = _make_partitioner(
        scheme,
        num_institutions=num_institutions,
        seed=seed,
        alpha=alpha,
        classes_per_institution=classes_per_institution,
        min_partition_size=min_partition_size,
    )
    local_positions = _run_partitioner(
        partitioner,
        dataset.y[pool_idx],
        scheme=scheme,
        alpha=alpha,
        min_partition_size=min_partition_size,
        names=names,
    )
    part_idx = [pool_idx[pos] for pos in local_positions]

    floor = max(1, min_partition_size)
    for name, idx in zip(names, part_idx):
        if len(idx) < floor:
            what = "got no training examples" if len(idx) == 0 else f"got {len(idx)} training examples"
            if scheme == "dirichlet":
                setting, hint = f" with alpha={alpha}", "a larger alpha or fewer institutions"
            else:
                setting, hint = "", "fewer institutions"
            raise DataError(
                f"institution {name} {what} (min_partition_size={floor}) under scheme {scheme!r}{setting} "
                f"and {num_institutions} institutions; use {hint}"
            )

    source = dataset
    if standardize:
        scaler = Standardizer.fit(dataset.X[np.concatenate(part_idx)])
        source = replace(dataset, X=scaler.transform(dataset.X))
    return FederatedSplit(
        institutions=names,
        partitions=[source.subset(idx).renamed(f"{dataset.name}/{name}") for name, idx in zip(names, part_idx)],
        validation=source.subset(val_idx).renamed(f"{dataset.name}/validation"),
        test=source.subset(test_idx).renamed(f"{dataset.name}/test"),
    )


def _check_arguments(
    dataset: Dataset,
    *,
    num_institutions: int,
    scheme: str,
    seed: int,
    alpha: float,
    classes_per_institution: int,
    validation_fraction: float,
    test_fraction: float,
    name_prefix: str,
    min_partition_size: int,
) -> None:
    """Raise DataError naming the first bad argument."""
    if not isinstance(dataset, Dataset):
        raise DataError(f"federate needs a fedlearn Dataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise DataError(f"dataset {dataset.name!r} is empty")
    if scheme not in PARTITION_SCHEMES:
        raise DataError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(PARTITION_SCHEMES)}")
    if not _is_int(num_institutions) or num_institutions < 1:
        raise DataError(f"num_institutions must be an integer >= 1, got {num_institutions!r}")
    if not _is_int(seed) or not 0 <= seed <= _MAX_SEED:
        raise DataError(f"seed must be an integer in 0..{_MAX_SEED}, got {seed!r}")
    if not _is_real(alpha) or not math.isfinite(alpha) or alpha <= 0:
        raise DataError(f"alpha must be a finite number > 0, got {alpha!r}")
    for label, fraction in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not _is_real(fraction) or not 0 < fraction < 1:
            raise DataError(f"{label} must lie strictly between 0 and 1, got {fraction!r}")
    if validation_fraction + test_fraction >= 1:
        raise DataError(
            f"validation_fraction + test_fraction must be < 1, got "
            f"{validation_fraction} + {test_fraction} = {validation_fraction + test_fraction}"
        )
    if scheme == "pathological" and (
        not _is_int(classes_per_institution) or not 1 <= classes_per_institution <= dataset.num_classes
    ):
        raise DataError(
            f"classes_per_institution must be an integer in 1..{dataset.num_classes} "
            f"(dataset {dataset.name!r} has {dataset.num_classes} classes), got {classes_per_institution!r}"
        )
    if not _is_int(min_partition_size) or min_partition_size < 0:
        raise DataError(f"min_partition_size must be an integer >= 0, got {min_partition_size!r}")
    if not isinstance(name_prefix, str) or not name_prefix.strip():
        raise DataError(f"name_prefix must be a non-empty string, got {name_prefix!r}")


def _hold_out(
    dataset: Dataset, seed: int, validation_fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified (training pool, validation, test) index arrays; the fractions are of the whole dataset."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(dataset), dtype=np.int64)
    try:
        rest, test = train_test_split(indices, test_size=test_fraction, random_state=seed, stratify=dataset.y)
        pool, val = train_test_split(
            rest,
            test_size=validation_fraction / (1.0 - test_fraction),
            random_state=seed,
            stratify=dataset.y[rest],
        )
    except ValueError as exc:
        counts = np.bincount(dataset.y, minlength=dataset.num_classes)
        fewest = int(counts[counts > 0].min())
        smallest = ", ".join(repr(dataset.label(int(c))) for c in np.flatnonzero(counts == fewest))
        raise DataError(
            f"cannot hold out stratified validation ({validation_fraction}) and test ({test_fraction}) splits "
            f"from {len(dataset)} examples of dataset {dataset.name!r}: "
            + (f"label {smallest} has {fewest} example, and a stratified split needs at least 2 of each label"
               if fewest < 2 else f"{' '.join(str(exc).split())} (the rarest label, {smallest}, has {fewest})")
        ) from exc
    return np.asarray(pool, dtype=np.int64), np.asarray(val, dtype=np.int64), np.asarray(test, dtype=np.int64)


def _make_partitioner(
    scheme: str,
    *,
    num_institutions: int,
    seed: int,
    alpha: float,
    classes_per_institution: int,
    min_partition_size: int,
) -> Partitioner:
    """The flwr-datasets partitioner for ``scheme``."""
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        LinearPartitioner,
        PathologicalPartitioner,
    )

    if scheme == "iid":
        return IidPartitioner(num_partitions=num_institutions)
    if scheme == "dirichlet":
        return DirichletPartitioner(
            num_partitions=num_institutions,
            partition_by="label",
            alpha=float(alpha),
            min_partition_size=min_partition_size,
            seed=seed,
        )
    if scheme == "pathological":
        # "first-deterministic": institution i always holds label i mod C, so every label is used whenever
        # there are at least as many institutions as labels; the remaining labels are drawn with the seed.
        return PathologicalPartitioner(
            num_partitions=num_institutions,
            partition_by="label",
            num_classes_per_partition=classes_per_institution,
            class_assignment_mode="first-deterministic",
            seed=seed,
        )
    # quantity_skew: sizes proportional to 1..M over contiguous blocks of the shuffled pool, i.e. label-IID.
    # (ExponentialPartitioner's e^1..e^M leaves the first institutions empty beyond ~6 institutions here.)
    return LinearPartitioner(num_partitions=num_institutions)


def _run_partitioner(
    partitioner: Partitioner,
    labels: np.ndarray,
    *,
    scheme: str,
    alpha: float,
    min_partition_size: int,
    names: list[str],
) -> list[np.ndarray]:
    """Positions into ``labels`` held by each partition, via an HF dataset of (label, idx)."""
    import datasets as hf

    table = hf.Dataset.from_dict({"label": labels.tolist(), "idx": list(range(len(labels)))})
    partitioner.dataset = table
    try:
        with warnings.catch_warnings():
            # Dirichlet warns on every redraw and Pathological on unused labels; both end in our own errors.
            warnings.simplefilter("ignore")
            return [
                np.asarray(partitioner.load_partition(pid)["idx"], dtype=np.int64)
                for pid in range(partitioner.num_partitions)
            ]
    except ValueError as exc:
        num = len(names)
        if scheme == "dirichlet":
            message = (
                f"dirichlet partitioning (alpha={alpha}) of {len(labels)} training examples among {num} "
                f"institutions left some institution with fewer than min_partition_size={max(1, min_partition_size)} "
                f"examples in every draw; use a larger alpha or fewer institutions"
            )
        elif scheme == "quantity_skew":
            smallest = len(labels) // (num * (num + 1) // 2)
            message = (
                f"quantity_skew gives institution {names[0]} a share of 1/{num * (num + 1) // 2} of "
                f"{len(labels)} training examples, i.e. {smallest}; use fewer institutions"
            )
        else:
            message = (
                f"partition scheme {scheme!r} failed: {' '.join(str(exc).split())}; "
                f"use fewer institutions or a different scheme"
            )
        raise DataError(message) from exc


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
