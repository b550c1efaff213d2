"""Tests for fedlearn.data: loading, validation, partitioning, standardisation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlearn.data import (
    BUNDLED_DATASETS,
    PARTITION_SCHEMES,
    Dataset,
    FederatedSplit,
    federate,
    load_dataset,
)
from fedlearn.errors import DataError


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def wine() -> Dataset:
    return load_dataset("wine")


def tagged(dataset: Dataset) -> Dataset:
    """The dataset with its row number as an extra first feature, so rows can be traced through splits."""
    X = np.column_stack([np.arange(len(dataset), dtype=np.float32), dataset.X])
    return Dataset(X=X, y=dataset.y, num_classes=dataset.num_classes, name=dataset.name)


def row_ids(ds: Dataset) -> np.ndarray:
    return ds.X[:, 0].astype(np.int64)


def mean_tv_distance(split: FederatedSplit) -> float:
    """Mean total-variation distance between each partition's label distribution and the pooled one."""
    k = split.partitions[0].num_classes
    pooled = np.bincount(np.concatenate([p.y for p in split.partitions]), minlength=k).astype(float)
    pooled /= pooled.sum()
    dists = [0.5 * np.abs(np.bincount(p.y, minlength=k) / len(p) - pooled).sum() for p in split.partitions]
    return float(np.mean(dists))


# --- loading ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape", "num_classes"),
    [("digits", (1797, 64), 10), ("breast_cancer", (569, 30), 2), ("wine", (178, 13), 3)],
)
def test_bundled_datasets_have_documented_shapes_and_classes(
    name: str, shape: tuple[int, int], num_classes: int
) -> None:
    ds = load_dataset(name)
    assert ds.X.shape == shape
    assert ds.X.dtype == np.float32 and ds.y.dtype == np.int64
    assert ds.num_classes == num_classes
    assert set(np.unique(ds.y)) == set(range(num_classes))
    assert len(ds) == shape[0] and ds.name == name


def test_bundled_names_are_exported() -> None:
    assert BUNDLED_DATASETS == ("digits", "breast_cancer", "wine")
    assert PARTITION_SCHEMES == ("iid", "dirichlet", "pathological", "quantity_skew")


def test_unknown_dataset_name_lists_bundled_ones() -> None:
    with pytest.raises(DataError, match="'mnist'") as info:
        load_dataset("mnist")
    assert "digits, breast_cancer, wine" in str(info.value)


def test_csv_round_trip_maps_string_labels_to_sorted_codes(tmp_path: Path) -> None:
    X = np.array([[0.5, 1.0], [2.0, -3.0], [4.5, 6.0], [7.0, 8.25]])
    labels = ["dog", "cat", "ant", "dog"]
    path = tmp_path / "animals.csv"
    pd.DataFrame({"f1": X[:, 0], "species": labels, "f2": X[:, 1]}).to_csv(path, index=False)

    ds = load_dataset(str(path), label_column="species")

    np.testing.assert_array_equal(ds.X, X.astype(np.float32))
    np.testing.assert_array_equal(ds.y, [2, 1, 0, 2])  # ant=0, cat=1, dog=2
    assert ds.num_classes == 3 and ds.name == "animals"


def test_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 4))
    y = np.array([10, 30, 20, 30] * 5)
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y)

    ds = load_dataset(path)

    np.testing.assert_allclose(ds.X, X.astype(np.float32))
    np.testing.assert_array_equal(ds.y, np.searchsorted([10, 20, 30], y))
    assert ds.num_classes == 3


def test_parquet_round_trip(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1.5, 2.5, 3.5], "b": [1, 0, 1], "label": [1, 5, 1]})
    path = tmp_path / "d.parquet"
    frame.to_parquet(path)

    ds = load_dataset(str(path))

    np.testing.assert_array_equal(ds.X, frame[["a", "b"]].to_numpy(dtype=np.float32))
    np.testing.assert_array_equal(ds.y, [0, 1, 0])
    assert ds.num_classes == 2


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    with pytest.raises(DataError, match="not found") as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("bad.npz", b"this is not a numpy archive at all"),
        ("bad.npz", b"PK\x03\x04 truncated zip"),
        ("bad.parquet", b"not parquet bytes"),
        ("bad.csv", b"\xff\xfe\x00\x81\x82 binary \x00\x9f garbage"),
    ],
)
def test_corrupt_file_raises_data_error_naming_the_path(tmp_path: Path, filename: str, content: bytes) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_missing_label_column_names_it_and_lists_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    pd.DataFrame({"x1": [1, 2], "x2": [3, 4], "target": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="'label'") as info:
        load_dataset(str(path))
    assert "x1, x2, target" in str(info.value)


def test_npz_without_y_names_the_missing_array(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((3, 2)), labels=np.zeros(3))
    with pytest.raises(DataError, match=r"lacks array\(s\) y; it has: X, labels"):
        load_dataset(str(path))


def test_non_numeric_feature_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    pd.DataFrame({"age": [30, 40], "city": ["Oslo", "Lima"], "label": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="non-numeric feature column.*city"):
        load_dataset(str(path))


def test_missing_feature_values_are_named(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,0\n3,,1\n")
    with pytest.raises(DataError, match="missing or infinite values.*: b$"):
        load_dataset(str(path))


@pytest.mark.parametrize(("text", "expected"), [("a,b,label\n", "no rows"), ("", "empty")])
def test_empty_csv_raises(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=expected):
        load_dataset(str(path))


def test_empty_npz_raises(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((0, 3)), y=np.zeros(0))
    with pytest.raises(DataError, match=r"no data.*\(0, 3\)"):
        load_dataset(str(path))


def test_unsupported_extension_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match=r"'\.xlsx'"):
        load_dataset(str(path))


def test_dataset_rejects_out_of_range_labels() -> None:
    with pytest.raises(DataError, match=r"0\.\.1, got range 0\.\.2"):
        Dataset(X=np.zeros((3, 1)), y=np.array([0, 1, 2]), num_classes=2, name="t")


def test_subset_selects_rows() -> None:
    ds = Dataset(X=np.arange(8.0).reshape(4, 2), y=np.array([0, 1, 1, 0]), num_classes=2, name="t")
    sub = ds.subset(np.array([3, 1]))
    np.testing.assert_array_equal(sub.X, [[6.0, 7.0], [2.0, 3.0]])
    np.testing.assert_array_equal(sub.y, [0, 1])
    assert len(ds.subset(np.array([], dtype=np.int64))) == 0 and len(ds.subset([])) == 0


# --- federate: bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"scheme": "zipf"}, r"unknown partition scheme 'zipf'.*iid, dirichlet, pathological, quantity_skew"),
        ({"alpha": 0.0}, r"alpha.*got 0\.0"),
        ({"alpha": -1.5}, r"alpha.*got -1\.5"),
        ({"num_institutions": 0}, r"num_institutions.*got 0"),
        ({"num_institutions": 500}, r"num_institutions=500 exceeds the \d+ training examples"),
        ({"validation_fraction": 0.0}, r"validation_fraction.*got 0\.0"),
        ({"test_fraction": 1.0}, r"test_fraction.*got 1\.0"),
        ({"test_fraction": -0.2}, r"test_fraction.*got -0\.2"),
        ({"validation_fraction": 0.6, "test_fraction": 0.4}, r"0\.6 \+ 0\.4"),
        ({"scheme": "pathological", "classes_per_institution": 0}, r"classes_per_institution.*1\.\.3.*got 0"),
        ({"scheme": "pathological", "classes_per_institution": 4}, r"classes_per_institution.*1\.\.3.*got 4"),
        ({"seed": -1}, r"seed.*got -1"),
    ],
)
def test_bad_federate_arguments_raise_one_line_data_error(
    wine: Dataset, kwargs: dict[str, object], pattern: str
) -> None:
    args: dict[str, object] = {"num_institutions": 3, "scheme": "iid", "seed": 0} | kwargs
    with pytest.raises(DataError, match=pattern) as info:
        federate(wine, **args)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_empty_dataset_is_rejected() -> None:
    empty = Dataset(X=np.zeros((0, 2)), y=np.zeros(0, dtype=np.int64), num_classes=2, name="void")
    with pytest.raises(DataError, match="'void' is empty"):
        federate(empty, num_institutions=2, scheme="iid", seed=0)


def test_empty_partition_names_the_institution_and_suggests_larger_alpha(wine: Dataset) -> None:
    with pytest.raises(DataError, match=r"institution hospital-\d\d got no training examples.*larger alpha"):
        federate(wine, num_institutions=20, scheme="dirichlet", seed=0, alpha=0.01, min_partition_size=0)


def test_unreachable_dirichlet_minimum_fails_fast_instead_of_looping(wine: Dataset) -> None:
    with pytest.raises(DataError, match=r"alpha=0\.01.*min_partition_size=1.*larger alpha"):
        federate(wine, num_institutions=20, scheme="dirichlet", seed=0, alpha=0.01)


def test_quantity_skew_with_too_many_institutions_names_the_smallest(wine: Dataset) -> None:
    with pytest.raises(DataError, match=r"quantity_skew gives institution hospital-01 .* i\.e\. 0"):
        federate(wine, num_institutions=40, scheme="quantity_skew", seed=0)


def test_unstratifiable_dataset_names_the_rare_label_as_the_file_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "rare.csv"
    pd.DataFrame({"x": np.arange(8.0), "label": ["ok"] * 7 + ["rare"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="label 'rare' has 1 example, and a stratified split needs at least 2"):
        federate(load_dataset(str(path), label_column="label"), num_institutions=1, scheme="iid", seed=0,
                 validation_fraction=0.3, test_fraction=0.3)


def test_a_directory_named_like_a_data_file_is_called_a_directory(tmp_path: Path) -> None:
    (tmp_path / "data.csv").mkdir()
    with pytest.raises(DataError, match="is a directory, not a data file"):
        load_dataset(str(tmp_path / "data.csv"))


def test_finite_values_beyond_32_bit_floats_are_not_called_infinite(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    pd.DataFrame({"x": [1e200, 2.0, 3.0, 4.0], "label": [0, 1, 0, 1]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="features hold values beyond .* rescale those columns"):
        load_dataset(str(path), label_column="label")


def test_a_csv_written_with_its_row_index_is_refused_not_trained_on(tmp_path: Path) -> None:
    path = tmp_path / "indexed.csv"
    pd.DataFrame({"x": [0.5, 1.5, 2.5, 3.5], "label": [0, 1, 0, 1]}).to_csv(path)  # pandas' default: index=True
    with pytest.raises(DataError, match=r"column\(s\) 1 of .* have no name in the header \(a row index"):
        load_dataset(str(path))
    pd.read_csv(path, index_col=0).to_csv(path, index=False)
    assert load_dataset(str(path)).X.shape == (4, 1)


@pytest.mark.parametrize("separator", [";", "\t"])
def test_a_csv_with_another_separator_says_so(tmp_path: Path, separator: str) -> None:
    path = tmp_path / "other.csv"
    pd.DataFrame({"x": [0.5, 1.5], "y": [1.0, 2.0], "label": [0, 1]}).to_csv(path, sep=separator, index=False)
    with pytest.raises(DataError, match=re.escape(f"its header is {separator!r}-separated; fedlearn reads comma-")):
        load_dataset(str(path))


# --- federate: behaviour ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
def test_same_seed_gives_byte_identical_split_and_other_seed_differs(digits: Dataset, scheme: str) -> None:
    def run(seed: int) -> FederatedSplit:
        return federate(digits, num_institutions=10, scheme=scheme, seed=seed, alpha=0.5)

    a, b, c = run(7), run(7), run(8)
    for pa, pb in zip([*a.partitions, a.validation, a.test], [*b.partitions, b.validation, b.test]):
        assert pa.X.tobytes() == pb.X.tobytes() and pa.y.tobytes() == pb.y.tobytes()
    assert any(
        pa.X.shape != pc.X.shape or pa.X.tobytes() != pc.X.tobytes() for pa, pc in zip(a.partitions, c.partitions)
    )


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
def test_splits_are_disjoint_and_cover_the_dataset(digits: Dataset, scheme: str) -> None:
    data = tagged(digits)
    split = federate(data, num_institutions=10, scheme=scheme, seed=3, standardize=False)

    ids = np.concatenate([row_ids(p) for p in [*split.partitions, split.validation, split.test]])
    np.testing.assert_array_equal(np.sort(ids), np.arange(len(data)))  # disjoint and complete
    for part in [*split.partitions, split.validation, split.test]:
        np.testing.assert_array_equal(part.y, data.y[row_ids(part)])  # labels travel with their rows
        np.testing.assert_array_equal(part.X, data.X[row_ids(part)])
    assert len(split.validation) == pytest.approx(0.15 * len(data), abs=2)
    assert len(split.test) == pytest.approx(0.15 * len(data), abs=2)


def test_held_out_splits_are_stratified(digits: Dataset) -> None:
    split = federate(digits, num_institutions=5, scheme="dirichlet", seed=0, alpha=0.1)
    overall = np.bincount(digits.y) / len(digits)
    for held in (split.validation, split.test):
        assert np.abs(np.bincount(held.y, minlength=10) / len(held) - overall).max() < 0.01


def test_held_out_splits_do_not_depend_on_scheme(digits: Dataset) -> None:
    a = federate(tagged(digits), num_institutions=4, scheme="iid", seed=5, standardize=False)
    b = federate(tagged(digits), num_institutions=7, scheme="pathological", seed=5, standardize=False)
    np.testing.assert_array_equal(np.sort(row_ids(a.test)), np.sort(row_ids(b.test)))
    np.testing.assert_array_equal(np.sort(row_ids(a.validation)), np.sort(row_ids(b.validation)))


def test_iid_is_balanced_while_dirichlet_low_alpha_is_skewed(digits: Dataset) -> None:
    iid = federate(digits, num_institutions=10, scheme="iid", seed=0)
    skewed = federate(digits, num_institutions=10, scheme="dirichlet", seed=0, alpha=0.1)
    iid_tv, skewed_tv = mean_tv_distance(iid), mean_tv_distance(skewed)
    assert iid_tv < 0.2
    assert skewed_tv > 0.45
    assert skewed_tv > 3 * iid_tv
    sizes = [len(p) for p in iid.partitions]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_skew_grows_as_alpha_shrinks(digits: Dataset) -> None:
    tvs = [
        mean_tv_distance(federate(digits, num_institutions=8, scheme="dirichlet", seed=1, alpha=a))
        for a in (100.0, 1.0, 0.05)
    ]
    assert tvs[0] < tvs[1] < tvs[2]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pathological_gives_at_most_k_classes_per_institution(digits: Dataset, k: int) -> None:
    split = federate(digits, num_institutions=10, scheme="pathological", seed=2, classes_per_institution=k)
    counts = [len(np.unique(p.y)) for p in split.partitions]
    assert max(counts) <= k
    assert counts.count(k) >= 8  # the cap is actually used, not a degenerate 1-class split


def test_quantity_skew_sizes_are_unequal_but_labels_iid(digits: Dataset) -> None:
    split = federate(digits, num_institutions=5, scheme="quantity_skew", seed=0)
    sizes = [len(p) for p in split.partitions]
    assert sizes == sorted(sizes) and len(set(sizes)) == 5
    assert sizes[-1] >= 4 * sizes[0]
    # Label-IID within sizes: even the smallest partition mirrors the pooled label distribution.
    assert mean_tv_distance(split) < 0.15


def test_institution_names_are_zero_padded_with_configurable_prefix(wine: Dataset, digits: Dataset) -> None:
    split = federate(wine, num_institutions=3, scheme="iid", seed=0)
    assert split.institutions == ["hospital-01", "hospital-02", "hospital-03"]
    big = federate(digits, num_institutions=120, scheme="iid", seed=0, name_prefix="bank")
    assert big.institutions[0] == "bank-001" and big.institutions[-1] == "bank-120"
    assert len(big.partitions) == 120
    assert split.partition("hospital-02") is split.partitions[1]


def test_standardisation_uses_training_pool_statistics_only(digits: Dataset) -> None:
    raw = federate(digits, num_institutions=4, scheme="dirichlet", seed=11, alpha=0.3, standardize=False)
    std = federate(digits, num_institutions=4, scheme="dirichlet", seed=11, alpha=0.3, standardize=True)

    pool = np.concatenate([p.X for p in raw.partitions]).astype(np.float64)
    mean, sd = pool.mean(axis=0), pool.std(axis=0)
    sd[sd == 0] = 1.0
    for r, s in zip([*raw.partitions, raw.validation, raw.test], [*std.partitions, std.validation, std.test]):
        np.testing.assert_array_equal(r.y, s.y)
        np.testing.assert_allclose(s.X, (r.X - mean) / sd, rtol=1e-5, atol=1e-5)
    std_pool = np.concatenate([p.X for p in std.partitions]).astype(np.float64)
    np.testing.assert_allclose(std_pool.mean(axis=0), 0.0, atol=1e-5)
    # Statistics fitted on all data (peeking at validation/test) would give measurably different features.
    full_mean = digits.X.astype(np.float64).mean(axis=0)
    assert np.abs(full_mean - mean).max() > 1e-2
    # Digits has always-zero pixels: their std is taken as 1, so they stay finite zeros.
    assert np.all(digits.X[:, 0] == 0) and np.all(std.test.X[:, 0] == 0)


def test_feature_constant_in_pool_gets_unit_std() -> None:
    X = np.column_stack([np.arange(40.0), np.full(40, 5.0)])
    y = np.tile([0, 1], 20)
    split = federate(Dataset(X=X, y=y, num_classes=2, name="c"), num_institutions=2, scheme="iid", seed=0)
    for part in [*split.partitions, split.validation, split.test]:
        np.testing.assert_array_equal(part.X[:, 1], 0.0)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    num_institutions=st.integers(1, 12),
    scheme=st.sampled_from(["iid", "quantity_skew", "dirichlet"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_valid_split_partitions_the_training_pool_exactly(num_institutions: int, scheme: str, seed: int) -> None:
    data = tagged(load_dataset("wine"))
    split = federate(data, num_institutions=num_institutions, scheme=scheme, seed=seed, alpha=1.0, standardize=False)
    ids = np.concatenate([row_ids(p) for p in [*split.partitions, split.validation, split.test]])
    np.testing.assert_array_equal(np.sort(ids), np.arange(len(data)))
    assert len(split.partitions) == len(split.institutions) == num_institutions
    assert all(len(p) >= 1 for p in split.partitions)
