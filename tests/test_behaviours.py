"""Simulated institution behaviours: each one's effect on data or update, measured; config parsing and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedlearn.config import ModelSection, RunConfig, TrainSection
from fedlearn.errors import ConfigError
from fedlearn.federation.institution import build_client_app
from fedlearn.federation.localgrid import LocalGrid
from fedlearn.federation.replies import ARRAYS_KEY, EXAMPLES_KEY, METRICS_KEY
from fedlearn.federation.roster import roster
from fedlearn.learning.behaviours import (
    BEHAVIOURS,
    COLLUDER_ROWS,
    HONEST,
    INT_PARAMETERS,
    PARAMETERS,
    BehaviourSpec,
    Collusion,
    apply_behaviour,
    effort_sample,
    parse_behaviours,
    poison_labels,
    poison_targeted,
    sybil_names,
    sybil_origin,
    sybil_split,
    train_as,
)
from fedlearn.learning.models import build_model, init_model

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
              "free_rider_noise": "0.01", "claimed_examples": "7", "replay_scale": "1.5", "effort": "0.2",
              "effort_rows": "4", "claim_factor": "3", "poison_fraction": "0.4", "target": "3", "source": "2",
              "copy_noise": "0.01", "from_round": "3"}
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
        ("hospital-03=low_effort:effort=0", "effort = 0.0 must lie in (0, 1]"),
        ("hospital-03=low_effort:effort=1.5", "effort = 1.5 must lie in (0, 1]"),
        ("hospital-03=low_effort:effort_rows=2.5", "effort_rows = '2.5' is not an integer"),
        ("hospital-03=low_effort:effort_rows=-1", "effort_rows = -1 must be >= 0"),
        ("hospital-03=colluder:effort_rows=0", "effort_rows = 0 must be at least 1"),
        ("hospital-03=colluder:copy_noise=-0.1", "copy_noise = -0.1 must be >= 0"),
        ("hospital-03=count_lie:claim_factor=0.5", "claim_factor = 0.5 must be >= 1"),
        ("hospital-03=count_lie:effort=0.5", "'effort' for count_lie"),
        ("hospital-03=backdoor:poison_fraction=1.2", "poison_fraction = 1.2 must lie in [0, 1]"),
        ("hospital-03=backdoor:target=-1", "target = -1 must be >= 0"),
        ("hospital-03=backdoor:target=1.0", "target = '1.0' is not an integer"),
        ("hospital-03=backdoor:source=1", "'source' for backdoor"),
        ("hospital-03=targeted_label_flip:source=7", "source = 7 must differ from target = 7"),
        ("hospital-03=targeted_label_flip:target=1", "source = 1 must differ from target = 1"),
        ("hospital-03=low_effort:from_round=0", "from_round = 0 must be at least 1"),
        ("hospital-03=sybil:from_round=2", "'from_round' for sybil"),
    ],
)
def test_bad_entries_raise_one_line_naming_the_offending_part(text: str, offending: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_behaviours(text, INSTITUTIONS)
    message = str(caught.value)
    assert offending in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "offending"),
    [
        ("hospital-03=backdoor:target=10", "target = 10 must be < the data's 10 classes"),
        ("hospital-03=targeted_label_flip:source=12:target=0", "source = 12 must be < the data's 10 classes"),
        ("hospital-03=targeted_label_flip:source=0:target=10", "target = 10"),
    ],
)
def test_classes_outside_the_data_are_refused_when_the_classes_are_known(text: str, offending: str) -> None:
    parse_behaviours(text, INSTITUTIONS)  # without the data's classes nothing is known to be wrong
    with pytest.raises(ConfigError) as caught:
        parse_behaviours(text, INSTITUTIONS, num_classes=10)
    assert offending in str(caught.value) and text in str(caught.value)
    assert "\n" not in str(caught.value)
    # The default target of targeted_label_flip (7) needs 8 classes.
    with pytest.raises(ConfigError, match="target = 7"):
        parse_behaviours("hospital-03=targeted_label_flip", INSTITUTIONS, num_classes=7)
    parse_behaviours("hospital-03=targeted_label_flip", INSTITUTIONS, num_classes=8)


def test_class_parameters_take_each_behaviours_default_and_ints_parse_as_ints() -> None:
    assert BehaviourSpec("backdoor").target_class == 0
    flip = BehaviourSpec("targeted_label_flip")
    assert (flip.source_class, flip.target_class) == (1, 7)
    specs = parse_behaviours("hospital-01=backdoor:target=4, hospital-02=targeted_label_flip:source=3,"
                             " hospital-03=low_effort:effort_rows=5", INSTITUTIONS)
    assert specs["hospital-01"].target_class == 4
    assert (specs["hospital-02"].source_class, specs["hospital-02"].target_class) == (3, 7)
    for spec in specs.values():
        for field in INT_PARAMETERS:
            value = getattr(spec, field)
            assert value is None or type(value) is int


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


@pytest.mark.parametrize(("factor", "rows"), [(1.0, 37), (3.0, 37), (10.0, 120)])
def test_count_lie_sends_the_trained_arrays_and_multiplies_its_count(factor: float, rows: int) -> None:
    start, trained = model_pair(5)
    arrays, claimed = apply_behaviour(BehaviourSpec("count_lie", claim_factor=factor), start, trained, rows, rng())
    assert claimed == int(factor) * rows
    for k in trained:
        np.testing.assert_array_equal(arrays[k], trained[k])


@pytest.mark.parametrize("noise", [1e-3, 0.1])
def test_colluder_adds_its_copy_noise_to_the_trained_arrays(noise: float) -> None:
    start = {"w": np.zeros((200, 100))}
    trained = {"w": np.full((200, 100), 0.25)}
    arrays, claimed = apply_behaviour(BehaviourSpec("colluder", copy_noise=noise), start, trained, 10, rng(3))
    assert claimed == 10
    assert (arrays["w"] - trained["w"]).std() == pytest.approx(noise, rel=0.03)
    exact, _ = apply_behaviour(BehaviourSpec("colluder", copy_noise=0.0), start, trained, 10, rng(3))
    np.testing.assert_array_equal(exact["w"], trained["w"])


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


def test_targeted_label_flip_relabels_exactly_the_source_class() -> None:
    y = np.tile(np.arange(10), 30)
    spec = BehaviourSpec("targeted_label_flip", source=3, target=8)
    poisoned = poison_targeted(y, 10, spec)
    np.testing.assert_array_equal(poisoned[y == 3], 8)
    np.testing.assert_array_equal(poisoned[y != 3], y[y != 3])
    assert poisoned.dtype == y.dtype
    np.testing.assert_array_equal(y, np.tile(np.arange(10), 30))  # the caller's labels are untouched
    for name in BEHAVIOURS:
        if name != "targeted_label_flip":
            assert poison_targeted(y, 10, BehaviourSpec(name)) is y


def test_targeted_label_flip_refuses_classes_outside_the_data() -> None:
    with pytest.raises(ValueError, match="target = 7 must be < the data's 3 classes"):
        poison_targeted(np.array([0, 1, 2]), 3, BehaviourSpec("targeted_label_flip"))


# --- low effort ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("effort", "rows"), [(0.1, 200), (0.25, 61), (1.0, 40), (0.001, 30)])
def test_low_effort_samples_its_share_of_distinct_rows(effort: float, rows: int) -> None:
    picked = effort_sample(BehaviourSpec("low_effort", effort=effort), rows, rng(4))
    assert len(picked) == max(1, round(effort * rows))
    assert len(set(picked.tolist())) == len(picked)
    assert picked.tolist() == sorted(picked.tolist()) and 0 <= picked.min() and picked.max() < rows


def test_effort_rows_takes_precedence_and_is_capped_at_the_rows_there_are() -> None:
    assert len(effort_sample(BehaviourSpec("low_effort", effort=0.5, effort_rows=5), 100, rng())) == 5
    assert len(effort_sample(BehaviourSpec("low_effort", effort_rows=0, effort=0.5), 100, rng())) == 50
    assert len(effort_sample(BehaviourSpec("low_effort", effort_rows=500), 100, rng())) == 100
    assert len(effort_sample(BehaviourSpec("colluder"), 100, rng())) == COLLUDER_ROWS
    assert len(effort_sample(BehaviourSpec("colluder", effort_rows=8), 100, rng())) == 8
    np.testing.assert_array_equal(effort_sample(HONEST, 7, rng()), np.arange(7))


def test_effort_sample_is_seeded() -> None:
    spec = BehaviourSpec("low_effort", effort_rows=5)
    assert effort_sample(spec, 100, rng(1)).tolist() == effort_sample(spec, 100, rng(1)).tolist()
    assert effort_sample(spec, 100, rng(1)).tolist() != effort_sample(spec, 100, rng(2)).tolist()


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


TRAIN_SPEC = TrainSection(local_epochs=2, batch_size=16, learning_rate=0.1)
CPU = torch.device("cpu")


def separable(seed: int = 11, rows: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Four features, two classes decided by the first."""
    X = rng(seed).normal(size=(rows, 4)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def fresh() -> torch.nn.Module:
    """The same tiny logistic regression every call."""
    torch.manual_seed(0)
    return build_model(ModelSection(name="logreg"), 4, 2)


def arrays_after(spec: BehaviourSpec, X: np.ndarray, y: np.ndarray, seed: int = 3,
                 collusion: Collusion | None = None) -> tuple[dict[str, np.ndarray], int]:
    """(sent, claimed) of one round of ``spec`` from :func:`fresh`, checking the model holds what is sent."""
    model = fresh()
    sent, claimed, result = train_as(spec, model, X, y, 2, TRAIN_SPEC, CPU, seed=seed, collusion=collusion)
    assert result.num_examples == claimed
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), sent[k])
    return sent, claimed


def local_round(spec: BehaviourSpec) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray],
                                               int]:
    """(global, honest trained, sent, claimed) for a tiny logistic regression on separable data."""
    X, y = separable()
    start = {k: v.numpy().copy() for k, v in fresh().state_dict().items()}
    honest, _ = arrays_after(HONEST, X, y)
    sent, claimed = arrays_after(spec, X, y)
    return start, honest, sent, claimed


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def differs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return any(not np.array_equal(a[k], b[k]) for k in a)


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


def test_train_as_count_lie_trains_honestly_and_inflates_its_claim() -> None:
    _, honest, sent, claimed = local_round(BehaviourSpec("count_lie", claim_factor=4))
    assert claimed == 4 * 60
    assert_same(sent, honest)


def test_train_as_low_effort_trains_on_its_sample_and_claims_every_row() -> None:
    X, y = separable()
    spec = BehaviourSpec("low_effort", effort_rows=5)
    sent, claimed = arrays_after(spec, X, y, seed=3)
    assert claimed == 60  # the lie: all its rows, for the work of five
    rows = effort_sample(spec, 60, rng(3))  # the rows train_as drew with the same seed
    on_sample, sample_claim = arrays_after(HONEST, X[rows], y[rows], seed=3)
    assert_same(sent, on_sample)
    assert sample_claim == 5
    _, honest, _, _ = local_round(HONEST)
    assert differs(sent, honest)


def test_train_as_low_effort_at_full_effort_is_honest() -> None:
    _, honest, sent, claimed = local_round(BehaviourSpec("low_effort", effort=1.0))
    assert claimed == 60
    assert_same(sent, honest)


@pytest.mark.parametrize("name", ["low_effort", "sign_flip", "free_rider", "colluder"])
def test_a_late_starting_attack_trains_honestly_before_its_round_and_attacks_from_it(name: str) -> None:
    X, y = separable()
    spec = BehaviourSpec(name, from_round=3)
    honest, honest_claim = arrays_after(HONEST, X, y)
    always = arrays_after(BehaviourSpec(name), X, y)

    def sent_in(server_round: int) -> tuple[dict[str, np.ndarray], int]:
        model = fresh()
        sent, claimed, _ = train_as(spec, model, X, y, 2, TRAIN_SPEC, CPU, seed=3, server_round=server_round)
        return sent, claimed

    for early in (1, 2):
        sent, claimed = sent_in(early)
        assert_same(sent, honest)
        assert claimed == honest_claim
    for late in (3, 7):
        sent, claimed = sent_in(late)
        assert_same(sent, always[0])
        assert claimed == always[1]
        assert differs(sent, honest)


def test_a_late_starting_colluder_trains_on_its_own_rows_until_its_round() -> None:
    X, y = separable()
    leader = Collusion(*separable(seed=12), seed=5)  # another institution's rows and seed
    spec = BehaviourSpec("colluder", from_round=2)
    honest, _ = arrays_after(HONEST, X, y)
    grouped, _ = arrays_after(BehaviourSpec("colluder"), X, y, collusion=leader)
    for server_round, expected in ((1, honest), (2, grouped)):
        model = fresh()
        sent, _, _ = train_as(spec, model, X, y, 2, TRAIN_SPEC, CPU, seed=3, collusion=leader,
                              server_round=server_round)
        assert_same(sent, expected)
    assert differs(honest, grouped)


def test_train_as_targeted_label_flip_trains_on_the_relabelled_rows() -> None:
    X, y = separable()
    spec = BehaviourSpec("targeted_label_flip", source=1, target=0)
    sent, claimed = arrays_after(spec, X, y)
    assert claimed == 60
    relabelled, _ = arrays_after(HONEST, X, np.zeros_like(y))  # every class-1 row now says 0
    assert_same(sent, relabelled)
    honest, _ = arrays_after(HONEST, X, y)
    assert differs(sent, honest)


def test_colluders_send_near_copies_of_one_model_trained_on_the_leaders_rows() -> None:
    leader_X, leader_y = separable(11, rows=60)
    own_X, own_y = separable(12, rows=45)  # a follower's own data: it claims these rows, trains on none
    spec = BehaviourSpec("colluder", copy_noise=1e-3)
    group = Collusion(leader_X, leader_y, seed=3)
    leader, leader_claim = arrays_after(spec, leader_X, leader_y, seed=3)  # no collusion given: leads itself
    as_led, _ = arrays_after(spec, leader_X, leader_y, seed=3, collusion=group)
    assert_same(leader, as_led)
    follower, follower_claim = arrays_after(spec, own_X, own_y, seed=77, collusion=group)
    assert (leader_claim, follower_claim) == (60, 45)
    for k in leader:
        gap = follower[k] - leader[k]
        assert 0 < np.abs(gap).max() < 1e-2  # apart only by two draws of N(0, 1e-3²)
    # Without noise the copies are exact; the common model is honest training on the leader's sample.
    exact = BehaviourSpec("colluder", copy_noise=0.0)
    copy_a, _ = arrays_after(exact, own_X, own_y, seed=77, collusion=group)
    copy_b, _ = arrays_after(exact, leader_X, leader_y, seed=5, collusion=group)
    rows = effort_sample(exact, 60, rng(3))
    assert len(rows) == COLLUDER_ROWS
    on_sample, _ = arrays_after(HONEST, leader_X[rows], leader_y[rows], seed=3)
    assert_same(copy_a, copy_b)
    assert_same(copy_a, on_sample)


# --- in a federation --------------------------------------------------------------------------------------------


def colluding_config() -> RunConfig:
    # A sybil ahead of the colluders shifts partition ids: the leader is found by partition id, not by name.
    return RunConfig.load(overrides=[
        "data.institutions=6",
        "integrity.behaviours='hospital-01=sybil:sybil_identities=2, hospital-03=colluder, hospital-05=colluder'",
    ])


def test_the_roster_groups_colluders_under_the_first_of_them() -> None:
    members = roster(colluding_config())
    leaders = {m.name: m.leader for m in members}
    lead = members[leaders["hospital-03"]]
    assert lead.name == "hospital-03"
    assert leaders["hospital-05"] == leaders["hospital-03"]
    assert [name for name, leader in leaders.items() if leader is not None] == ["hospital-03", "hospital-05"]


def test_the_roster_refuses_a_class_the_data_lacks() -> None:
    config = RunConfig.load(overrides=["integrity.behaviours='hospital-02=backdoor:target=10'"])
    with pytest.raises(ConfigError, match="target = 10 must be < the data's 10 classes"):
        roster(config)


def test_colluding_institutions_reply_near_copies_and_claim_their_own_rows() -> None:
    config = colluding_config()
    members = roster(config)
    grid = LocalGrid(build_client_app(config), len(members))
    model = init_model(config.model, members[0].data.num_features, members[0].data.num_classes, config.run.seed)
    ids = {m.name: i for i, m in enumerate(members)}

    def reply(name: str) -> tuple[dict[str, np.ndarray], int]:
        content = RecordDict({ARRAYS_KEY: ArrayRecord(model.state_dict()),
                              "config": ConfigRecord({"server-round": 1})})
        message = grid.create_message(content, "train", ids[name] + 1, "1")
        (answer,) = grid.send_and_receive([message])
        arrays = {k: v.numpy() for k, v in answer.content.array_records[ARRAYS_KEY].items()}
        return arrays, int(answer.content.metric_records[METRICS_KEY][EXAMPLES_KEY])

    leader, leader_claim = reply("hospital-03")
    follower, follower_claim = reply("hospital-05")
    honest, _ = reply("hospital-04")
    assert leader_claim == len(members[ids["hospital-03"]].data)
    assert follower_claim == len(members[ids["hospital-05"]].data) != leader_claim
    gap = np.concatenate([(follower[k] - leader[k]).ravel() for k in leader])
    # One model plus two independent draws of N(0, copy_noise²): the gap is N(0, 2·copy_noise²), nothing more.
    assert gap.std() == pytest.approx(np.sqrt(2) * 1e-3, rel=0.1)
    assert abs(gap.mean()) < 4 * gap.std() / np.sqrt(gap.size)
    apart = np.concatenate([(honest[k] - leader[k]).ravel() for k in leader])
    assert apart.std() > 3 * gap.std()


@pytest.mark.parametrize("name", ["free_rider", "disguised_free_rider"])
def test_a_free_rider_claims_claim_factor_times_its_rows_unless_it_names_a_count(name: str) -> None:
    start = {"w": np.zeros((2, 2), dtype=np.float32)}
    trained = {"w": np.ones((2, 2), dtype=np.float32)}
    counts = [apply_behaviour(spec, start, trained, 37, np.random.default_rng(0), previous=start)[1]
              for spec in (BehaviourSpec(name), BehaviourSpec(name, claim_factor=1.0),
                           BehaviourSpec(name, claim_factor=2.5, claimed_examples=900))]
    assert counts == [370, 37, 900]
    assert parse_behaviours(f"hospital-01={name}:claim_factor=1", ["hospital-01"])["hospital-01"].claim_factor == 1.0
