"""Small torch models by name; the input and output sizes come from the data."""

from __future__ import annotations

import torch
from torch import nn

from fedlearn.config import MODEL_NAMES, ModelSection
from fedlearn.errors import ConfigError


def build_model(spec: ModelSection, num_features: int, num_classes: int) -> nn.Module:
    """A fresh model; weights come from the global model, so initialisation only matters for round 1."""
    if spec.name == "logreg":
        return nn.Linear(num_features, num_classes)
    if spec.name == "mlp":
        layers: list[nn.Module] = []
        width = num_features
        for _ in range(spec.hidden_layers):
            layers += [nn.Linear(width, spec.hidden_units), nn.ReLU()]
            width = spec.hidden_units
        layers.append(nn.Linear(width, num_classes))
        return nn.Sequential(*layers)
    raise ConfigError(f"unknown model.name {spec.name!r} (choose from {', '.join(MODEL_NAMES)})")


def init_model(spec: ModelSection, num_features: int, num_classes: int, seed: int) -> nn.Module:
    """The round-0 global model, identical for the same seed."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build_model(spec, num_features, num_classes)
    finally:
        torch.random.set_rng_state(gen_state)
