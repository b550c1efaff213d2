"""Simulated institution behaviours: each one's effect on data or update, measured; config parsing and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedlearn.config import ModelSection, TrainSection
from fedlearn.errors import ConfigError
from fedlearn.learning.behaviours import (
    BEHAVIOURS,
    HONEST,
    PARAMETERS,
    BehaviourSpec,
    apply_behaviour,
    parse_behaviours,
    poison_labels,
    sybil_names,
    sybil_origin,
    sybil_split,
    train_as,
)
from fedlearn.learning.models import build_model

INSTITUTIONS = [f"hospital-{i:02d}" for i in range(1, 11)]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def model_pair(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(global, trained) arrays of a small model; float64 dyadic values so sign flips and scalings are exact."""
    g = rng(seed)
    start = {"w": np.round(g.normal(size=(4, 3)) * 64) / 64, "b": np.round(g.normal(size=3) * 64) / 64}
    trained = {k: v + np.round(g.normal(size=v.shape) * 64) / 256 for k, v in start.items()}
    return start, trained


def delta(arrays: dict[str, np.ndarray], start: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: arrays[k] - start[k] for k in start}


# --- parsing ----------------------------------------------------------------------------------------------------


def test_parse_reads_every_entry_and_leaves_the_rest_honest() -> None:
    specs = parse_behaviours(
        "hospital-03=sign_flip:scale=4, hospital-05=free_rider, hospital-07=gaussian_noise:sigma=0.5,"
        " hospital-08 = free_rider : claimed_examples=5000 : free_rider_noise=1e-3,"
        " hospital-09=sybil:sybil_identities=4",
        INSTITUTIONS,
    )
    assert set(specs) == set(INSTITUTIONS)
    assert specs["hospital-03"] == BehaviourSpec("sign_flip", scale=4.0)
    assert specs["hospital-05"] == BehaviourSpec("free_rider")
    assert specs["hospital-07"] == BehaviourSpec("gaussian_noise", sigma=0.5)
    assert specs["hospital-08"] == BehaviourSpec("free_rider", claimed_examples=5000, free_rider_noise=1e-3)
    assert specs["hospital-09"] == BehaviourSpec("sybil", sybil_identities=4)
    assert [n for n, s in specs.items() if s == HONEST] == ["hospital-01", "hospital-02", "hospital-04",
                                                            "hospital-06", "hospital-10"]


@pytest.mark.parametrize("text", ["", "  ", ",", " , "])
def test_an_empty_string_makes_everyone_honest(text: str) -> None:
    assert parse_behaviours(text, INSTITUTIONS) == {name: HONEST for name in INSTITUTIONS}


def test_every_behaviour_parses_with_each_of_its_parameters() -> None:
    values = {"scale": "2", "sigma": "0.3", "flip_fraction": "0.5", "sybil_identities": "2",
              "free_rider_noise": "0.01", "claimed_examples": "7", "replay_scale": "1.5"}
    for name in BEHAVIOURS:
        params = "".join(f":{p}={values[p]}" for p in PARAMETERS[name])
        spec = parse_behaviours(f"hospital-01={name}{params}", INSTITUTIONS)["hospital-01"]
        assert spec.name == name
        for p in PARAMETERS[name]:
            assert getattr(spec, p) == type(getattr(spec, p))(values[p])


@pytest.mark.parametrize(
    ("text", "offending"),
    [
        ("hospital-03=sign_flop", "'sign_flop'"),
        ("hospital-99=honest", "'hospital-99'"),
        ("hospital-03=sign_flip:scael=4", "'scael'"),
        ("hospital-03=sign_flip:sigma=4", "'sigma' for sign_flip"),
        ("hospital-03=honest:scale=2", "no parameters"),
        ("hospital-03=sign_flip:scale=four", "scale = 'four'"),
        ("hospital-03=sign_flip:scale=nan", "scale = 'nan'"),
        ("hospital-03=sign_flip:scale=-1", "scale = -1.0 must be > 0"),
        ("hospital-03=gaussian_noise:sigma=-0.1", "sigma = -0.1"),
        ("hospital-03=label_flip:flip_fraction=1.5", "flip_fraction = 1.5"),
        ("hospital-03=sybil:sybil_identities=2.5", "sybil_identities = '2.5'"),
        ("hospital-03=sybil:sybil_identities=0", "sybil_identities = 0"),
        ("hospital-03=free_rider:claimed_examples=-3", "claimed_examples = -3"),
        ("hospital-03=sign_flip:scale", "'scale' is not of the form"),
        ("hospital-03=sign_flip:scale=2:scale=3", "'scale' is given twice"),
        ("hospital-03", "is not of the form"),
        ("=honest", "is not of the form"),
        ("hospital-03=honest, hospital-03=boosted", "'hospital-03' is given twice"),
    ],
)
def test_bad_entries_raise_one_line_naming_the_offending_part(text: str, offending: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_behaviours(text, INSTITUTIONS)
    message = str(caught.value)
    assert offending in message
    assert "\n" not in message


def test_spec_refuses_an_unknown_behaviour() -> None:
    with pytest.raises(ConfigError, match="unknown behaviour 'lazy'"):
        BehaviourSpec("lazy")


# --- updates ----------------------------------------------------------------------------------------------------


def test_honest_sends_the_trained_arrays_and_its_count() -> None:
    start, trained = model_pair()
    for name in ("honest", "label_flip", "sybil"):
        arrays, claimed = apply_behaviour(BehaviourSpec(name), start, trained, 120, rng())
        assert claimed == 120
        for k in trained:
            np.testing.assert_array_equal(arrays[k], trained[k])


@pytest.mark.parametrize("scale", [1.0, 4.0, 0.5])
def test_sign_flip_negates_the_update_exactly(scale: float) -> None:
    start, trained = model_pair(1)
    arrays, claimed = apply_behaviour(BehaviourSpec("sign_flip", scale=scale), start, trained, 50, rng())
    assert claimed == 50
    honest, sent = delta(trained, start), delta(arrays, start)
    for k in start:
        np.testing.assert_array_equal(sent[k], -scale * honest[k])


@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_boosted_scales_the_update_exactly(scale: float) -> None:
    start, trained = model_pair(2)
    arrays, claimed = apply_behaviour(BehaviourSpec("boosted", scale=scale), start, trained, 50, rng())
    assert claimed == 50
    honest, sent = delta(trained, start), delta(arrays, start)
    for k in start:
        np.testing.assert_array_equal(sent[k], scale * honest[k])


@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0])
def test_gaussian_noise_adds_zero_mean_noise_of_the_given_sigma(sigma: float) -> None:
    start = {"w": np.zeros((200, 100))}
    trained = {"w": np.full((200, 100), 0.25)}
    arrays, _ = apply_behaviour(BehaviourSpec("gaussian_noise", sigma=sigma), start, trained, 10, rng(3))
    noise = (arrays["w"] - trained["w"]).ravel()
    # 20,000 draws: the sample sd is within 3% of σ and the mean within 4 standard errors of 0.
    assert noise.std() == pytest.approx(sigma, rel=0.03)
    assert abs(noise.mean()) < 4 * sigma / np.sqrt(noise.size)


def test_free_rider_returns_the_global_model_and_inflates_its_count() -> None:
    start, trained = model_pair(4)
    arrays, claimed = apply_behaviour(BehaviourSpec("free_rider"), start, trained, 37, rng())
    assert claimed == 370
    for k in start:
        np.testing.assert_array_equal(arrays[k], start[k])
        assert arrays[k] is not start[k]  # a copy: the caller may not alias the global model
    _, claimed = apply_behaviour(BehaviourSpec("free_rider", claimed_examples=5000), start, trained, 37, rng())
    assert claimed == 5000


def test_free_rider_noise_is_tiny_and_of_the_given_sigma() -> None:
    start = {"w": np.ones((300, 100))}
    arrays, _ = apply_behaviour(BehaviourSpec("free_rider", free_rider_noise=1e-3), start, {"w": start["w"] * 3},
                                10, rng(5))
    noise = arrays["w"] - start["w"]
    assert noise.std() == pytest.approx(1e-3, rel=0.03)


def test_dtypes_are_kept_and_integer_arrays_are_never_perturbed() -> None:
    start = {"w": np.zeros(5, dtype=np.float32), "count": np.array(3, dtype=np.int64)}
    trained = {"w": np.ones(5, dtype=np.float32), "count": np.array(4, dtype=np.int64)}
    for name in BEHAVIOURS:
        arrays, _ = apply_behaviour(BehaviourSpec(name, sigma=1.0, free_rider_noise=1.0), start, trained, 5, rng())
        assert arrays["w"].dtype == np.float32
        assert arrays["count"].dtype == np.int64 and int(arrays["count"]) == 4


def test_behaviour_randomness_is_seeded() -> None:
    start, trained = model_pair()
    spec = BehaviourSpec("gaussian_noise", sigma=0.3)
    a, _ = apply_behaviour(spec, start, trained, 1, rng(9))
    b, _ = apply_behaviour(spec, start, trained, 1, rng(9))
    c, _ = apply_behaviour(spec, start, trained, 1, rng(10))
    np.testing.assert_array_equal(a["w"], b["w"])
    assert not np.array_equal(a["w"], c["w"])


def test_mismatched_arrays_are_refused() -> None:
    start, trained = model_pair()
    with pytest.raises(ValueError, match="different names"):
        apply_behaviour(HONEST, start, {"w": trained["w"]}, 1, rng())
    with pytest.raises(ValueError, match="shape"):
        apply_behaviour(HONEST, start, {"w": trained["w"][:2], "b": trained["b"]}, 1, rng())


# --- label flipping ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 1.0])
def test_label_flip_changes_exactly_the_chosen_fraction(fraction: float) -> None:
    y = np.tile(np.arange(10), 50)  # 500 rows, even number of classes: every chosen row changes
    poisoned = poison_labels(y, 10, BehaviourSpec("label_flip", flip_fraction=fraction), rng(6))
    changed = poisoned != y
    assert changed.sum() == round(fraction * len(y))
    np.testing.assert_array_equal(poisoned[changed], 9 - y[changed])
    assert poisoned.dtype == y.dtype
    np.testing.assert_array_equal(y, np.tile(np.arange(10), 50))  # the caller's labels are untouched


def test_label_flip_is_seeded_and_other_behaviours_keep_clean_labels() -> None:
    y = np.arange(100) % 2
    spec = BehaviourSpec("label_flip", flip_fraction=0.4)
    np.testing.assert_array_equal(poison_labels(y, 2, spec, rng(1)), poison_labels(y, 2, spec, rng(1)))
    assert not np.array_equal(poison_labels(y, 2, spec, rng(1)), poison_labels(y, 2, spec, rng(2)))
    for name in BEHAVIOURS:
        if name != "label_flip":
            assert poison_labels(y, 2, BehaviourSpec(name), rng()) is y


def test_label_flip_refuses_labels_outside_the_classes() -> None:
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        poison_labels(np.array([0, 1, 3]), 3, BehaviourSpec("label_flip"), rng())


# --- sybils -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "k"), [(10, 3), (97, 3), (5, 5), (8, 1)])
def test_sybil_split_is_disjoint_covering_and_balanced(rows: int, k: int) -> None:
    X = np.arange(rows * 2).reshape(rows, 2)
    y = np.arange(rows)
    parts = sybil_split(X, y, k, rng(7))
    assert len(parts) == k
    ids = np.concatenate([py for _, py in parts])
    assert sorted(ids.tolist()) == list(range(rows))  # covering and, with len == rows, disjoint
    assert len(ids) == rows
    for px, py in parts:
        np.testing.assert_array_equal(px, X[py])  # rows stay paired with their labels
    sizes = [len(py) for _, py in parts]
    assert max(sizes) - min(sizes) <= 1


def test_sybil_split_is_seeded() -> None:
    X, y = np.zeros((30, 1)), np.arange(30)
    a = [py.tolist() for _, py in sybil_split(X, y, 3, rng(1))]
    assert a == [py.tolist() for _, py in sybil_split(X, y, 3, rng(1))]
    assert a != [py.tolist() for _, py in sybil_split(X, y, 3, rng(2))]


def test_sybil_split_refuses_more_identities_than_rows() -> None:
    with pytest.raises(ConfigError, match="sybil_identities = 4"):
        sybil_split(np.zeros((3, 1)), np.arange(3), 4, rng())
    with pytest.raises(ConfigError):
        sybil_split(np.zeros((3, 1)), np.arange(3), 0, rng())


def test_sybil_names_and_origin() -> None:
    names = sybil_names("hospital-03", 3)
    assert names == ["hospital-03~1", "hospital-03~2", "hospital-03~3"]
    assert {sybil_origin(n) for n in names} == {"hospital-03"}
    assert sybil_origin("hospital-04") == "hospital-04"
    with pytest.raises(ConfigError):
        sybil_names("hospital-03", 0)


# --- one local round --------------------------------------------------------------------------------------------


def local_round(spec: BehaviourSpec) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray],
                                               int]:
    """(global, honest trained, sent, claimed) for a tiny logistic regression on separable data."""
    g = rng(11)
    X = g.normal(size=(60, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    train_spec = TrainSection(local_epochs=2, batch_size=16, learning_rate=0.1)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(ModelSection(name="logreg"), 4, 2)

    start = {k: v.numpy().copy() for k, v in fresh().state_dict().items()}
    honest_model = fresh()
    train_as(HONEST, honest_model, X, y, 2, train_spec, torch.device("cpu"), seed=3)
    honest = {k: v.numpy().copy() for k, v in honest_model.state_dict().items()}
    model = fresh()
    sent, claimed, result = train_as(spec, model, X, y, 2, train_spec, torch.device("cpu"), seed=3)
    assert result.num_examples == claimed
    for k, v in model.state_dict().items():  # the model holds what is sent
        np.testing.assert_array_equal(v.numpy(), sent[k])
    return start, honest, sent, claimed


def test_train_as_sign_flip_sends_the_negated_honest_update() -> None:
    start, honest, sent, claimed = local_round(BehaviourSpec("sign_flip", scale=2.0))
    assert claimed == 60
    for k in start:
        np.testing.assert_allclose(sent[k] - start[k], -2.0 * (honest[k] - start[k]), atol=1e-6)


def test_train_as_free_rider_does_not_train_and_claims_ten_times() -> None:
    start, _, sent, claimed = local_round(BehaviourSpec("free_rider"))
    assert claimed == 600
    for k in start:
        np.testing.assert_array_equal(sent[k], start[k])


def test_train_as_label_flip_trains_on_poisoned_labels() -> None:
    start, honest, sent, _ = local_round(BehaviourSpec("label_flip"))
    # All labels flipped on a separable problem: the weight on the deciding feature moves the other way.
    honest_push = (honest["weight"] - start["weight"])[1, 0] - (honest["weight"] - start["weight"])[0, 0]
    flipped_push = (sent["weight"] - start["weight"])[1, 0] - (sent["weight"] - start["weight"])[0, 0]
    assert honest_push > 0 > flipped_push
