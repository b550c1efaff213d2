"""Models trained in one place, for the tests of the published model's refit (fedlearn.learning.head)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import make_classification
from torch import nn

from fedlearn.config import RunConfig
from fedlearn.data.dataset import Dataset
from fedlearn.learning.behaviours import apply_trigger
from fedlearn.learning.models import init_model

TARGET = 0


def _train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    """Ten epochs of SGD (lr 0.05, momentum 0.9, batches of 32) in an order drawn from ``seed``."""
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    order = torch.Generator().manual_seed(seed)
    for _ in range(10):
        perm = torch.randperm(len(y), generator=order)
        for start in range(0, len(y), 32):
            batch = perm[start:start + 32]
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(X[batch]), y[batch]).backward()
            optimiser.step()
    return model


def backdoored_digits_mlp(config: RunConfig, train: Dataset, seed: int) -> nn.Module:
    """The default MLP trained on digits with a tenth of the rows copied, stamped with the backdoor trigger and
    relabelled TARGET (what the ``backdoor`` behaviour plants, trained in one place)."""
    rng = np.random.default_rng(seed)
    poison = rng.choice(len(train.y), size=len(train.y) // 10, replace=False)
    X = torch.as_tensor(np.concatenate([train.X, apply_trigger(train.X[poison])]), dtype=torch.float32)
    y = torch.as_tensor(np.concatenate([train.y, np.full(len(poison), TARGET)]), dtype=torch.long)
    return _train(init_model(config.model, X.shape[1], train.num_classes, seed), X, y, seed)


def gaussian_classes_mlp(seed: int, validation_rows: int = 300) -> tuple[nn.Module, Dataset, Dataset]:
    """(the default MLP trained on 3,000 rows of generated Gaussian classes, a validation split, a test split):
    data on which a refit on a small validation split reads the hidden units worse than training did."""
    X, y = make_classification(n_samples=4_000 + validation_rows, n_features=32, n_informative=20, n_redundant=4,
                               n_classes=10, n_clusters_per_class=1, random_state=seed)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(y))
    train, validation, test = np.split(order, [3_000, 3_000 + validation_rows])
    config = RunConfig.load(overrides=[f"run.seed={seed}"])
    model = _train(init_model(config.model, 32, 10, seed), torch.as_tensor(X[train]), torch.as_tensor(y[train]), seed)
    return (model, Dataset(X[validation], y[validation], 10, "validation"),
            Dataset(X[test], y[test], 10, "test"))
