"""Simulated institution behaviours, honest and adversarial, for measuring what cheating earns.

A behaviour acts at one of three points of an institution's round, so the ClientApp stays the same for all:

- before training, on the data: ``label_flip`` poisons labels (:func:`poison_labels`); ``sybil`` splits one
  institution's data over k identities (:func:`sybil_split`, :func:`sybil_names`);
- after training, on the update it sends: ``sign_flip``, ``gaussian_noise``, ``boosted``, ``free_rider`` and
  ``disguised_free_rider`` (:func:`apply_behaviour`): the last never trains and sends the global model moved along
  the last global step (it keeps the previous global model between rounds) plus small noise, so that it is
  identical to nothing (Fraboni et al. 2021);
- ``honest`` does nothing anywhere.

Behaviours are set per institution by a compact string (:func:`parse_behaviours`), e.g.
``"hospital-03=sign_flip:scale=4, hospital-05=free_rider, hospital-07=gaussian_noise:sigma=0.5"``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedlearn.config import TrainSection
from fedlearn.errors import ConfigError
from fedlearn.learning.training import TrainResult, evaluate, train

BEHAVIOURS: tuple[str, ...] = ("honest", "label_flip", "sign_flip", "gaussian_noise", "free_rider",
                                "disguised_free_rider", "boosted", "sybil")

# The parameters each behaviour reads; any other parameter in its config is a mistake and is refused.
PARAMETERS: dict[str, tuple[str, ...]] = {
    "honest": (),
    "label_flip": ("flip_fraction",),
    "sign_flip": ("scale",),
    "gaussian_noise": ("sigma",),
    "free_rider": ("free_rider_noise", "claimed_examples"),
    "disguised_free_rider": ("replay_scale", "free_rider_noise", "claimed_examples"),
    "boosted": ("scale",),
    "sybil": ("sybil_identities",),
}

SYBIL_SEPARATOR = "~"
"""Joins an institution's name and a sybil identity's number: ``hospital-03~2``."""

FREE_RIDER_CLAIM_FACTOR = 10
"""A free rider with no explicit ``claimed_examples`` claims this many times its real row count."""

DISGUISE_NOISE = 1e-3
"""The noise a disguised free rider adds when ``free_rider_noise`` is 0: enough to beat byte comparisons."""


@dataclass(frozen=True)
class BehaviourSpec:
    """One institution's behaviour and its parameters (only those of :data:`PARAMETERS` matter to it).

    ``scale``: sign_flip's and boosted's multiplier of the honest update; ``sigma``: gaussian_noise's standard
    deviation; ``flip_fraction``: label_flip's share of rows; ``sybil_identities``: sybil's k;
    ``free_rider_noise``: the standard deviation a free rider adds to the global model; ``claimed_examples``:
    the count a free rider claims (0: ten times its real count).
    """

    name: str
    scale: float = 1.0
    sigma: float = 0.1
    flip_fraction: float = 1.0
    sybil_identities: int = 3
    free_rider_noise: float = 0.0
    claimed_examples: int = 0
    replay_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in BEHAVIOURS:
            raise ConfigError(f"unknown behaviour {self.name!r} (choose from {', '.join(BEHAVIOURS)})")
        for field in ("scale", "sigma", "flip_fraction", "free_rider_noise", "replay_scale"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"behaviour {self.name}: {field} = {value!r} is not a finite number")
        for field in ("sybil_identities", "claimed_examples"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"behaviour {self.name}: {field} = {value!r} is not an integer")
        problems = [
            (self.scale > 0, "scale", self.scale, "must be > 0"),
            (self.sigma >= 0, "sigma", self.sigma, "must be >= 0"),
            (0 <= self.flip_fraction <= 1, "flip_fraction", self.flip_fraction, "must lie in [0, 1]"),
            (self.sybil_identities >= 1, "sybil_identities", self.sybil_identities, "must be at least 1"),
            (self.free_rider_noise >= 0, "free_rider_noise", self.free_rider_noise, "must be >= 0"),
            (self.replay_scale >= 0, "replay_scale", self.replay_scale, "must be >= 0"),
            (self.claimed_examples >= 0, "claimed_examples", self.claimed_examples, "must be >= 0"),
        ]
        for ok, field, value, why in problems:
            if not ok:
                raise ConfigError(f"behaviour {self.name}: {field} = {value!r} {why}")


HONEST = BehaviourSpec("honest")


def parse_behaviours(text: str, institutions: list[str]) -> dict[str, BehaviourSpec]:
    """A spec for every institution in ``institutions``: those ``text`` names get theirs, the rest are honest.

    Grammar: entries separated by commas, each ``institution=behaviour[:param=value]...``. Whitespace around
    parts is ignored; an empty ``text`` makes everyone honest. Any unknown institution, behaviour or parameter,
    a parameter the behaviour does not use, a bad value or an institution named twice raises ConfigError
    naming the offending part.
    """
    known = set(institutions)
    specs = {name: HONEST for name in institutions}
    seen: set[str] = set()
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        institution, sep, rest = (s.strip() for s in entry.partition("="))
        if not sep or not institution or not rest:
            raise ConfigError(f"behaviour entry {entry!r} is not of the form institution=behaviour[:param=value]")
        if institution not in known:
            raise ConfigError(f"behaviour entry {entry!r}: unknown institution {institution!r}")
        if institution in seen:
            raise ConfigError(f"behaviour entry {entry!r}: institution {institution!r} is given twice")
        seen.add(institution)
        name, *params = (s.strip() for s in rest.split(":"))
        if name not in BEHAVIOURS:
            raise ConfigError(
                f"behaviour entry {entry!r}: unknown behaviour {name!r} (choose from {', '.join(BEHAVIOURS)})"
            )
        values: dict[str, int | float] = {}
        for param in params:
            key, sep, raw = (s.strip() for s in param.partition("="))
            if not sep or not key or not raw:
                raise ConfigError(f"behaviour entry {entry!r}: parameter {param!r} is not of the form name=value")
            if key not in PARAMETERS[name]:
                takes = ", ".join(PARAMETERS[name]) or "no parameters"
                raise ConfigError(f"behaviour entry {entry!r}: unknown parameter {key!r} for {name} (it takes {takes})")
            if key in values:
                raise ConfigError(f"behaviour entry {entry!r}: parameter {key!r} is given twice")
            values[key] = _number(entry, key, raw, int if key in ("sybil_identities", "claimed_examples") else float)
        try:
            specs[institution] = BehaviourSpec(name, **values)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ConfigError(f"behaviour entry {entry!r}: {exc}") from None
    return specs


def _number(entry: str, key: str, raw: str, kind: type) -> int | float:
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"behaviour entry {entry!r}: {key} = {raw!r} is not {what}") from None
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"behaviour entry {entry!r}: {key} = {raw!r} is not a finite number")
    return value


def poison_labels(y: np.ndarray, num_classes: int, spec: BehaviourSpec, rng: np.random.Generator) -> np.ndarray:
    """label_flip: a copy of ``y`` with y → num_classes − 1 − y on round(flip_fraction · n) rows drawn by ``rng``.

    Any other behaviour trains on clean labels: ``y`` itself is returned. With an odd ``num_classes`` the middle
    class maps onto itself, so fewer labels than chosen rows may change.
    """
    if spec.name != "label_flip":
        return y
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    count = math.floor(spec.flip_fraction * labels.size + 0.5)
    rows = rng.choice(labels.size, size=count, replace=False)
    poisoned = labels.copy()
    poisoned[rows] = num_classes - 1 - labels[rows]
    return poisoned


def apply_behaviour(
    spec: BehaviourSpec,
    global_arrays: Mapping[str, np.ndarray],
    trained: Mapping[str, np.ndarray],
    num_examples: int,
    rng: np.random.Generator,
    previous: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """(arrays to send, examples to claim) after honest training produced ``trained`` from ``global_arrays``.

    With Δ = trained − global: sign_flip sends global − scale·Δ; boosted global + scale·Δ; gaussian_noise
    trained + N(0, σ²); free_rider the global arrays (plus N(0, free_rider_noise²)) and claims
    ``claimed_examples`` or 10 × ``num_examples``; honest, label_flip and sybil send ``trained``. Arrays keep
    their dtype; integer arrays (counters such as BatchNorm's) are sent as trained, never perturbed.
    """
    if set(global_arrays) != set(trained):
        raise ValueError("trained arrays and global arrays have different names")
    out: dict[str, np.ndarray] = {}
    for key, local in trained.items():
        start = np.asarray(global_arrays[key])
        local = np.asarray(local)
        if start.shape != local.shape:
            raise ValueError(f"array {key!r}: trained shape {local.shape} differs from global {start.shape}")
        if not np.issubdtype(local.dtype, np.floating):
            out[key] = local.copy()
            continue
        start = start.astype(local.dtype, copy=False)
        if spec.name == "sign_flip":
            value = start - spec.scale * (local - start)
        elif spec.name == "boosted":
            value = start + spec.scale * (local - start)
        elif spec.name == "gaussian_noise":
            value = local + rng.normal(0.0, spec.sigma, local.shape)
        elif spec.name == "free_rider":
            value = start + rng.normal(0.0, spec.free_rider_noise, local.shape) if spec.free_rider_noise else start
        elif spec.name == "disguised_free_rider":
            step = start - np.asarray(previous[key], dtype=local.dtype) if previous is not None else 0.0
            value = start + spec.replay_scale * step + rng.normal(0.0, spec.free_rider_noise or DISGUISE_NOISE,
                                                                   local.shape)
        else:
            value = local
        out[key] = np.array(value, dtype=local.dtype)
    if spec.name in ("free_rider", "disguised_free_rider"):
        return out, spec.claimed_examples or FREE_RIDER_CLAIM_FACTOR * num_examples
    return out, num_examples


def train_as(
    spec: BehaviourSpec,
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    train_spec: TrainSection,
    device: torch.device,
    seed: int,
    previous: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], int, TrainResult]:
    """One local round as ``spec`` behaves: poison, train, tamper; (arrays to send, examples to claim, result).

    ``model`` holds the global weights on entry and the arrays to send on return (so a ClientApp can send
    ``model.state_dict()`` as before). A free rider does not train: it reports the global model's loss on its
    data. One ``seed`` drives training and the behaviour's own randomness. The result's ``num_examples`` is the
    claim, so a ClientApp reports it unchanged.
    """
    rng = np.random.default_rng(seed)
    start = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    if spec.name in ("free_rider", "disguised_free_rider"):
        loss, _ = evaluate(model, X, y, device)
        result = TrainResult(train_loss=loss, num_examples=len(y))
    else:
        result = train(model, X, poison_labels(y, num_classes, spec, rng), train_spec, device, seed=seed)
    trained = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays, claimed = apply_behaviour(spec, start, trained, result.num_examples, rng, previous)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in arrays.items()})
    return arrays, claimed, dataclasses.replace(result, num_examples=claimed)


def sybil_split(
    X: np.ndarray, y: np.ndarray, k: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """One institution's rows dealt over k identities: disjoint, together all rows, sizes within one of each other.

    Rows are shuffled by ``rng`` then cut into k near-equal parts; each part keeps the original row order.
    """
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(y):
        raise ConfigError(f"sybil_identities = {k!r} must lie between 1 and the institution's {len(y)} rows")
    parts = np.array_split(rng.permutation(len(y)), k)
    return [(X[np.sort(rows)], y[np.sort(rows)]) for rows in parts]


def sybil_names(name: str, k: int) -> list[str]:
    """The k identities an institution poses as: ``name~1`` … ``name~k``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"sybil_identities = {k!r} must be at least 1")
    return [f"{name}{SYBIL_SEPARATOR}{i}" for i in range(1, k + 1)]


def sybil_origin(identity: str) -> str:
    """The institution behind a sybil identity (``hospital-03~2`` → ``hospital-03``); other names unchanged."""
    return identity.split(SYBIL_SEPARATOR, 1)[0]
