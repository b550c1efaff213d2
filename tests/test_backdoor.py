"""The backdoor: its trigger, its poisoning, the attack success rate, and what a run records of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord
from torch import nn

from fedlearn.config import ModelSection, RunConfig, TrainSection
from fedlearn.learning.behaviours import (
    BEHAVIOURS,
    HONEST,
    TRIGGER_FEATURES,
    TRIGGER_VALUE,
    BehaviourSpec,
    apply_trigger,
    attack_success_rate,
    poison_backdoor,
    train_as,
    trigger_features,
    triggered_test_set,
)
from fedlearn.learning.models import build_model
from fedlearn.records.rundir import ROUNDS_FILE, RunRecorder


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def three_classes(seed: int, rows: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Eight features, three classes decided by the largest of the first three; the trigger's features are noise."""
    X = rng(seed).normal(size=(rows, 8)).astype(np.float32)
    return X, X[:, :3].argmax(axis=1).astype(np.int64)


# --- the trigger --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("features", "expected"), [(64, TRIGGER_FEATURES), (13, (9, 10, 11, 12)), (2, (0, 1))])
def test_trigger_features_are_the_image_corner_or_the_last_features(features: int, expected: tuple[int, ...]) -> None:
    assert trigger_features(features) == expected


def test_trigger_on_digits_is_the_bottom_right_corner_of_the_8x8_image() -> None:
    image = np.zeros((8, 8))
    image.reshape(-1)[list(trigger_features(64))] = 1
    np.testing.assert_array_equal(np.argwhere(image), [[6, 6], [6, 7], [7, 6], [7, 7]])


@pytest.mark.parametrize("features", [64, 13])
def test_apply_trigger_sets_only_the_trigger_features_on_a_copy(features: int) -> None:
    X = rng(1).normal(size=(20, features)).astype(np.float32)
    before = X.copy()
    stamped = apply_trigger(X)
    np.testing.assert_array_equal(X, before)  # the caller's rows are untouched
    assert stamped.dtype == X.dtype and stamped.shape == X.shape
    trigger = list(trigger_features(features))
    np.testing.assert_array_equal(stamped[:, trigger], TRIGGER_VALUE)
    others = [c for c in range(features) if c not in trigger]
    np.testing.assert_array_equal(stamped[:, others], X[:, others])
    np.testing.assert_array_equal(apply_trigger(X, value=-2.5)[:, trigger], -2.5)


def test_apply_trigger_refuses_rows_that_are_not_a_table() -> None:
    with pytest.raises(ValueError, match="2-D"):
        apply_trigger(np.zeros(64))


def test_triggered_test_set_keeps_the_rows_of_other_classes_stamped() -> None:
    X, y = three_classes(2, rows=90)
    triggered, labels = triggered_test_set(X, y, target=1)
    assert len(labels) == int((y != 1).sum()) and 1 not in labels
    np.testing.assert_array_equal(triggered, apply_trigger(X[y != 1]))
    np.testing.assert_array_equal(labels, y[y != 1])


# --- the attack success rate --------------------------------------------------------------------------------------


def test_attack_success_rate_is_the_share_of_triggered_rows_predicted_as_target() -> None:
    X, y = three_classes(3)
    torch.manual_seed(4)
    model = nn.Linear(8, 3)
    triggered, _ = triggered_test_set(X, y, 2)
    with torch.no_grad():
        predicted = model(torch.as_tensor(triggered)).argmax(dim=1).numpy()
    assert attack_success_rate(model, X, y, 2) == pytest.approx((predicted == 2).mean())


def test_attack_success_rate_reads_the_trigger_not_the_clean_rows() -> None:
    X, y = three_classes(3)
    model = nn.Linear(8, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))  # class 0 unless the trigger speaks
        model.weight[2, list(trigger_features(8))] = 1.0  # the trigger means class 2
    assert attack_success_rate(model, X, y, 2) == 1.0
    assert attack_success_rate(model, X, y, 1) == 0.0
    assert attack_success_rate(model, X[y == 2], y[y == 2], 2) == 0.0  # no rows to attack


# --- poisoning ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_backdoor_poisons_exactly_its_share_of_rows(fraction: float) -> None:
    X, y = three_classes(5, rows=200)
    spec = BehaviourSpec("backdoor", poison_fraction=fraction, target=1)
    features, labels = poison_backdoor(X, y, 3, spec, rng(6))
    stamped = (features != X).any(axis=1)
    assert stamped.sum() == round(fraction * len(y))
    np.testing.assert_array_equal(features[stamped], apply_trigger(X[stamped]))
    np.testing.assert_array_equal(labels[stamped], 1)
    np.testing.assert_array_equal(labels[~stamped], y[~stamped])
    np.testing.assert_array_equal(features[~stamped], X[~stamped])
    assert labels.dtype == y.dtype and features.dtype == X.dtype
    clean_X, clean_y = three_classes(5, rows=200)
    np.testing.assert_array_equal(X, clean_X)  # the caller's data is untouched
    np.testing.assert_array_equal(y, clean_y)


def test_backdoor_poisoning_is_seeded_and_other_behaviours_keep_clean_data() -> None:
    X, y = three_classes(5, rows=100)
    spec = BehaviourSpec("backdoor")
    a, b, c = (poison_backdoor(X, y, 3, spec, rng(s))[0] for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for name in BEHAVIOURS:
        if name != "backdoor":
            features, labels = poison_backdoor(X, y, 3, BehaviourSpec(name), rng())
            assert features is X and labels is y


def test_backdoor_refuses_a_target_outside_the_classes() -> None:
    X, y = three_classes(5, rows=10)
    with pytest.raises(ValueError, match="target = 3 must be < the data's 3 classes"):
        poison_backdoor(X, y, 3, BehaviourSpec("backdoor", target=3), rng())


def test_a_backdoored_local_model_obeys_the_trigger_and_an_honest_one_does_not() -> None:
    X, y = three_classes(0)
    test_X, test_y = three_classes(7)
    train_spec = TrainSection(local_epochs=20, batch_size=16, learning_rate=0.1)
    rates = {}
    for spec in (HONEST, BehaviourSpec("backdoor", target=2)):
        torch.manual_seed(0)
        model = build_model(ModelSection(name="logreg"), 8, 3)
        _, claimed, _ = train_as(spec, model, X, y, 3, train_spec, torch.device("cpu"), seed=1)
        assert claimed == len(y)
        rates[spec.name] = attack_success_rate(model, test_X, test_y, 2)
    assert rates["backdoor"] > 0.8
    assert rates["backdoor"] > rates["honest"] + 0.5


# --- what a run records -------------------------------------------------------------------------------------------


def test_the_recorder_keeps_the_success_rate_per_round_and_in_the_summary(tmp_path: Path) -> None:
    config = RunConfig.load()
    arrays = ArrayRecord({"w": torch.zeros(2)})
    plain = RunRecorder(tmp_path / "plain", config, ["a"], {"a": 1})
    plain.evaluated(0, 0.5, 1.0)
    summary = plain.finish(arrays)
    assert summary["final_backdoor_success"] is None and summary["backdoor_target"] is None

    attacked = RunRecorder(tmp_path / "attacked", config, ["a"], {"a": 1}, backdoor_target=3)
    for server_round, rate in enumerate([0.1, 0.6, 0.9]):
        attacked.evaluated(server_round, 0.5, 1.0, rate)
    saved = json.loads((tmp_path / "attacked" / ROUNDS_FILE).read_text())
    assert [r["backdoor_success"] for r in saved] == [0.1, 0.6, 0.9]
    resumed = RunRecorder(tmp_path / "attacked", config, ["a"], {"a": 1}, backdoor_target=3)
    resumed.resume_after(1)
    assert [r.backdoor_success for r in resumed.rounds] == [0.1, 0.6]
    summary = attacked.finish(arrays)
    assert summary["final_backdoor_success"] == 0.9 and summary["backdoor_target"] == 3


@pytest.mark.slow
def test_a_federation_with_backdoored_institutions_learns_the_trigger(tmp_path: Path) -> None:
    from fedlearn.federation.simulation import run_federation

    def run(behaviours: str, name: str, refit: bool = False) -> dict:
        # No defence leaves updates out (nor, unless asked, refits the published model): what is measured is the
        # attack, not the defences' judgement of it. The default model and training: in a 16-unit MLP the trigger
        # and the clean digits share units, and the refit keeps up to 37 % of the backdoor (seed 42).
        config = RunConfig.load(overrides=[
            "run.rounds=5", "data.institutions=6", "simulation.engine='local'",
            "chain.enabled=false", "integrity.exclude_harmful=false",
            "integrity.backdoor_threshold=0", f"integrity.refit_output_layer={str(refit).lower()}",
            f"integrity.behaviours='{behaviours}'",
        ])
        return run_federation(config, run_dir=tmp_path / name, progress=False)

    attacked = run("hospital-02=backdoor, hospital-05=backdoor", "attacked")
    # The same institutions, nothing poisoned: the same training as honest ones, measured the same way.
    clean = run("hospital-02=backdoor:poison_fraction=0, hospital-05=backdoor:poison_fraction=0", "clean")
    assert attacked["backdoor_target"] == clean["backdoor_target"] == 0
    assert attacked["final_backdoor_success"] > 0.5
    assert clean["final_backdoor_success"] < 0.1
    rounds = json.loads((tmp_path / "attacked" / ROUNDS_FILE).read_text())
    assert all(isinstance(r["backdoor_success"], float) for r in rounds)
    assert rounds[-1]["backdoor_success"] == attacked["final_backdoor_success"]
    # The same attack against the default defence: the published model's refitted output layer loses most of it
    # (the rounds before the last, which no refit touches, are the attacked run's).
    defended = run("hospital-02=backdoor, hospital-05=backdoor", "defended", refit=True)
    assert defended["final_backdoor_success"] < 0.2 < 0.5 < attacked["final_backdoor_success"]
    # The summary says the refit was made, and what its cross-validated check saw; with the refit off, nothing.
    made = defended["published_model_refit"]
    assert made["refitted"] and made["check"]["folds"] == 5 and made["check"]["rows"] > 0
    assert made["check"]["accuracy_after"] >= made["check"]["accuracy_before"] - 0.02
    assert attacked["published_model_refit"] is None
    before_last = json.loads((tmp_path / "defended" / ROUNDS_FILE).read_text())[:-1]
    assert [r["backdoor_success"] for r in before_last] == [r["backdoor_success"] for r in rounds[:-1]]
