"""Last-layer retraining (fedlearn.learning.head): a planted backdoor loses most of its hold, clean accuracy and
the features stay as trained, a model without a hidden layer is left alone."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from fedlearn.config import RunConfig
from fedlearn.data.partition import Dataset
from fedlearn.federation.roster import federated_split
from fedlearn.learning.behaviours import attack_success_rate
from fedlearn.learning.head import (
    RefitCheck,
    RefitError,
    check_refit,
    refit_output_layer,
    rows_to_check,
    stratified_folds,
)
from tests.trained import TARGET, backdoored_digits_mlp, gaussian_classes_mlp


def accuracy(model: nn.Module, data: Dataset) -> float:
    with torch.no_grad():
        return float((model(torch.as_tensor(data.X, dtype=torch.float32)).argmax(1).numpy() == data.y).mean())


def test_a_planted_backdoor_loses_most_of_its_hold_and_clean_accuracy_stays() -> None:
    # Prepare
    config = RunConfig.load(overrides=["data.institutions=1", "run.seed=0"])
    split = federated_split(config)
    model = backdoored_digits_mlp(config, split.partitions[0], seed=0)
    test = split.test
    before = attack_success_rate(model, test.X, test.y, TARGET), accuracy(model, test)
    hidden = copy.deepcopy(model[0].state_dict())
    model.train()  # measuring put it in eval mode; the refit must hand it back as it found it
    # Execute
    assert refit_output_layer(model, split.validation.X, split.validation.y, l2=config.integrity.refit_l2)
    handed_back = model.training and all(p.requires_grad for p in model.parameters())
    # Assert: the trigger sends far fewer rows to the target; clean accuracy holds; the features are untouched;
    # the model is back in the mode and trainability it had.
    after = attack_success_rate(model, test.X, test.y, TARGET), accuracy(model, test)
    assert before[0] > 0.9 and after[0] < 0.2, (before, after)
    assert after[1] >= before[1] - 0.01, (before, after)
    assert all(torch.equal(value, hidden[key]) for key, value in model[0].state_dict().items())
    assert handed_back


@pytest.mark.parametrize("seed", [0, 1])
def test_noisy_copies_take_the_trigger_out_of_what_the_plain_refit_leaves(seed: int) -> None:
    # Prepare: the planted backdoor of the test above (the plain refit leaves it 8 % and 14 % at these seeds).
    config = RunConfig.load(overrides=["data.institutions=1", f"run.seed={seed}"])
    split = federated_split(config)
    model = backdoored_digits_mlp(config, split.partitions[0], seed=seed)
    plain, noisy = copy.deepcopy(model), copy.deepcopy(model)
    validation, test = split.validation, split.test
    # Execute
    refit_output_layer(plain, validation.X, validation.y, l2=config.integrity.refit_l2)
    refit_output_layer(noisy, validation.X, validation.y, l2=config.integrity.refit_l2,
                       noise=config.integrity.refit_noise, seed=seed)
    # Assert: with the default noise the trigger buys the target for (almost) nobody, well below what the plain
    # refit leaves; clean accuracy stays within 2 points of the plain refit's.
    assert config.integrity.refit_noise > 0
    left = attack_success_rate(plain, test.X, test.y, TARGET)
    assert attack_success_rate(noisy, test.X, test.y, TARGET) < min(0.02, left / 4), left
    assert accuracy(noisy, test) >= accuracy(plain, test) - 0.02


@pytest.mark.parametrize("seed", [0, 1])
def test_the_check_sees_a_refit_that_costs_accuracy_before_it_is_made(seed: int) -> None:
    # Prepare: a model the refit on 300 validation rows hurts, and the backdoored digits model it helps.
    gaussian, validation, test = gaussian_classes_mlp(seed)
    config = RunConfig.load(overrides=["data.institutions=1", f"run.seed={seed}"])
    split = federated_split(config)
    digits = backdoored_digits_mlp(config, split.partitions[0], seed=seed)
    g = config.integrity
    cases = [(gaussian, validation, test), (digits, split.validation, split.test)]
    for model, held_out, unseen in cases:
        state = copy.deepcopy(model.state_dict())
        # Execute
        check = check_refit(model, held_out.X, held_out.y, l2=g.refit_l2, noise=g.refit_noise, seed=seed,
                            folds=g.refit_check_folds)
        refitted = copy.deepcopy(model)
        refit_output_layer(refitted, held_out.X, held_out.y, l2=g.refit_l2, noise=g.refit_noise, seed=seed)
        cost = accuracy(model, unseen) - accuracy(refitted, unseen)
        # Assert: the check leaves the model as it was and says, from the validation split alone, what the
        # refit then does to test accuracy: more than the default tolerance lost on the Gaussian classes
        # (10 and 8 points at these seeds), not lost on digits.
        assert check is not None
        assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
        assert check.costs_more_than(g.refit_max_drop) == (cost > 0.05), (check, cost)


def test_a_drop_of_exactly_the_tolerance_is_not_more_than_it() -> None:
    # 300 rows: 3 fewer right is exactly 1 point (in floating point, 100 * (8/300 - 5/300) > 1.0).
    assert not RefitCheck(5, 300, 8, 5).costs_more_than(1.0)
    assert RefitCheck(5, 300, 9, 5).costs_more_than(1.0)
    assert not RefitCheck(5, 300, 5, 9).costs_more_than(0.0)


def test_stratified_folds_hold_every_class_in_proportion() -> None:
    for counts, folds in (([10, 7, 3], 3), ([3] * 10, 5)):
        y = np.repeat(np.arange(len(counts)), counts)
        fold = stratified_folds(y, folds, seed=1)
        # Every class, and the folds themselves, within one row of even.
        for label, rows in enumerate(counts):
            sizes = np.bincount(fold[y == label], minlength=folds)
            assert sizes.sum() == rows and sizes.max() - sizes.min() <= 1
        assert np.ptp(np.bincount(fold, minlength=folds)) <= 1
        assert np.array_equal(fold, stratified_folds(y, folds, seed=1))


def test_a_class_too_small_to_check_the_refit_is_refused() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    X, y = np.random.default_rng(6).normal(size=(33, 4)).astype(np.float32), np.array([0, 1] * 15 + [2, 2, 2])
    # Three rows of class 2: at 5 folds each refit sees at least 2 of them; at 2 folds one sees only 1.
    assert (rows_to_check(5), rows_to_check(3), rows_to_check(2)) == (3, 3, 4)
    assert check_refit(model, X, y, l2=1e-4, noise=1.0, seed=0, folds=5) is not None
    with pytest.raises(RefitError, match=r"fewer than 4 rows of class\(es\) 2, too few to check the refit by 2-fold"):
        check_refit(model, X, y, l2=1e-4, noise=1.0, seed=0, folds=2)
    with pytest.raises(RefitError, match=r"fewer than 3 rows of class\(es\) 2"):
        check_refit(model, X[:-1], y[:-1], l2=1e-4, noise=1.0, seed=0, folds=5)
    assert check_refit(nn.Linear(4, 3), X, y, l2=1e-4, noise=1.0, seed=0, folds=5) is None


def test_the_check_runs_in_the_models_own_dtype_and_hands_it_back_as_it_found_it() -> None:
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    model[0].weight.requires_grad_(False)
    model.train()
    X, y = np.random.default_rng(7).normal(size=(60, 4)).astype(np.float32), np.arange(60) % 3
    state = copy.deepcopy(model.state_dict())
    first = check_refit(model, X, y, l2=1e-4, noise=1.0, seed=3, folds=5)
    assert first is not None and first == check_refit(model, X, y, l2=1e-4, noise=1.0, seed=3, folds=5)
    assert model.training and not model[0].weight.requires_grad and model[3].weight.requires_grad
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())


def test_the_noisy_refit_is_the_same_for_the_same_seed() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    X, y = np.random.default_rng(4).normal(size=(30, 4)).astype(np.float32), np.arange(30) % 3
    fits = [copy.deepcopy(model) for _ in range(3)]
    for fit, seed in zip(fits, (7, 7, 8)):
        refit_output_layer(fit, X, y, l2=1e-4, noise=1.0, seed=seed)
    assert torch.equal(fits[0][2].weight, fits[1][2].weight)
    assert not torch.equal(fits[0][2].weight, fits[2][2].weight)


def test_a_model_that_acts_after_its_output_layer_is_refitted_through_the_whole_model() -> None:
    # Prepare: a log-softmax after the output layer (the head's output is not the model's), and the same network
    # without it.
    torch.manual_seed(5)
    plain = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    trailing = nn.Sequential(*copy.deepcopy(plain), nn.LogSoftmax(dim=1))
    X, y = np.random.default_rng(5).normal(size=(60, 4)).astype(np.float32), np.arange(60) % 3
    # Execute
    refit_output_layer(plain, X, y, l2=1e-4, noise=1.0, seed=1)
    refit_output_layer(trailing, X, y, l2=1e-4, noise=1.0, seed=1)
    # Assert: both fits run on what the model outputs and agree (log-softmax leaves cross-entropy as it is).
    np.testing.assert_allclose(trailing[2].weight.detach().numpy(), plain[2].weight.detach().numpy(), atol=1e-4)
    assert not torch.equal(trailing[2].weight, torch.zeros_like(trailing[2].weight))


def test_a_model_without_a_hidden_layer_is_left_alone() -> None:
    model = nn.Linear(4, 3)
    state = copy.deepcopy(model.state_dict())
    X, y = np.random.default_rng(1).normal(size=(30, 4)).astype(np.float32), np.arange(30) % 3
    assert not refit_output_layer(model, X, y, l2=1e-4)
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())


def test_a_class_missing_from_the_validation_split_is_refused_and_the_model_untouched() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    state = copy.deepcopy(model.state_dict())
    X, y = np.random.default_rng(2).normal(size=(40, 4)).astype(np.float32), np.arange(40) % 2  # no class 2
    with pytest.raises(RefitError, match=r"class\(es\) 2 \(of 3\)"):
        refit_output_layer(model, X, y, l2=1e-4)
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())


def test_a_negative_label_is_refused_and_the_model_untouched() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    state = copy.deepcopy(model.state_dict())
    X, y = np.random.default_rng(3).normal(size=(30, 4)).astype(np.float32), np.arange(30) % 3 - 1  # -1, 0, 1
    with pytest.raises(RefitError, match=r"negative label \(-1\)"):
        refit_output_layer(model, X, y, l2=1e-4)
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
