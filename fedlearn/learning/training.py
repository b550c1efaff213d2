"""Local training and evaluation loops, and device selection."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedlearn.config import TrainSection
from fedlearn.errors import ConfigError


def select_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU; asking for an absent CUDA device is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device = {requested!r} but no CUDA device is available here")
        device = torch.device(requested)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device = {requested!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return device
    return torch.device(requested)


@dataclass(frozen=True)
class TrainResult:
    train_loss: float
    num_examples: int


@torch.enable_grad()  # training may be asked for inside an evaluation (FLTrust's root model, in scoring)
def train(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    spec: TrainSection,
    device: torch.device,
    seed: int,
) -> TrainResult:
    """Train ``model`` in place for ``spec.local_epochs`` epochs; FedProx's proximal term when mu > 0."""
    model.to(device)
    model.train()
    features = torch.as_tensor(X, dtype=torch.float32, device=device)
    labels = torch.as_tensor(y, dtype=torch.long, device=device)
    if spec.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=spec.learning_rate, momentum=spec.momentum)
    # The proximal term pulls local weights towards the global ones the round started from.
    global_params = [p.detach().clone() for p in model.parameters()] if spec.proximal_mu > 0 else []
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    total_loss, seen = 0.0, 0
    for _ in range(spec.local_epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, spec.batch_size):
            batch = order[start : start + spec.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(features[batch]), labels[batch])
            if global_params:
                prox = sum((p - g).pow(2).sum() for p, g in zip(model.parameters(), global_params))
                loss = loss + spec.proximal_mu / 2 * prox
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * len(batch)
            seen += len(batch)
    return TrainResult(train_loss=total_loss / max(seen, 1), num_examples=n)


@torch.no_grad()
def evaluate(model: nn.Module, X: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
             device: torch.device | None = None) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) of ``model`` on (X, y)."""
    device = device or next(model.parameters()).device
    model.to(device)
    model.eval()
    features = torch.as_tensor(X, dtype=torch.float32, device=device)
    labels = torch.as_tensor(y, dtype=torch.long, device=device)
    logits = model(features)
    loss = nn.functional.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
    return loss, accuracy
