"""Local training: the device an institution trains on, and the same result on CUDA as on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from fedlearn.config import ModelSection, TrainSection
from fedlearn.errors import ConfigError
from fedlearn.learning.models import init_model
from fedlearn.learning.training import evaluate, select_device, train


def _digits() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def test_auto_picks_cuda_exactly_when_it_is_there() -> None:
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert select_device("cpu") == torch.device("cpu")


def test_an_absent_cuda_device_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="train.device = 'cuda:99'"):
        select_device("cuda:99")


def test_training_improves_the_model_on_its_own_data() -> None:
    X, y = _digits()
    model = init_model(ModelSection(), X.shape[1], 10, seed=0)
    before, _ = evaluate(model, X, y)
    result = train(model, X, y, TrainSection(local_epochs=2), torch.device("cpu"), seed=0)
    after, accuracy = evaluate(model, X, y)
    assert result.num_examples == len(y) and after < before and accuracy > 0.8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_training_on_cuda_matches_the_cpu_and_replies_cpu_weights() -> None:
    X, y = _digits()
    spec = TrainSection(local_epochs=1, optimizer="sgd")
    cpu = init_model(ModelSection(), X.shape[1], 10, seed=1)
    gpu = init_model(ModelSection(), X.shape[1], 10, seed=1)
    train(cpu, X, y, spec, torch.device("cpu"), seed=3)
    train(gpu, X, y, spec, select_device("auto"), seed=3)
    assert next(gpu.parameters()).is_cuda
    # What a ClientApp replies: the state moved back to the CPU, equal to CPU training up to float rounding.
    for (name, a), (_, b) in zip(cpu.state_dict().items(), gpu.cpu().state_dict().items()):
        assert b.device.type == "cpu"
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, err_msg=name)
