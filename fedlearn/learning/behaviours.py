"""Simulated institution behaviours, honest and adversarial, for measuring what cheating earns.

A behaviour acts at one of three points of an institution's round, so the ClientApp stays the same for all:

- before training, on the data: ``label_flip`` poisons labels (:func:`poison_labels`); ``targeted_label_flip``
  relabels every row of class ``source`` (default 1) as ``target`` (default 7) (:func:`poison_targeted`);
  ``backdoor`` stamps a trigger (:func:`apply_trigger`) into ``poison_fraction`` of its rows and relabels them
  ``target`` (default 0) (:func:`poison_backdoor`; :func:`attack_success_rate` measures what it planted);
  ``low_effort`` trains on ``effort`` of its rows, or on exactly ``effort_rows`` when that is > 0
  (:func:`effort_sample`); ``colluder`` trains on ``effort_rows`` (default 5) rows of its group leader's data
  with the group's seed (:class:`Collusion`), so every colluder computes the same model; ``sybil`` splits one
  institution's data over k identities (:func:`sybil_split`, :func:`sybil_names`);
- after training, on the update it sends or the count it claims: ``sign_flip``, ``gaussian_noise``, ``boosted``,
  ``free_rider`` and ``disguised_free_rider`` (:func:`apply_behaviour`): the last never trains and sends the
  global model moved along the last global step (it keeps the previous global model between rounds) plus small
  noise, so that it is identical to nothing (Fraboni et al. 2021); ``colluder`` adds its own N(0, copy_noise²)
  so the group's near-copies differ by a little; ``count_lie`` claims ``claim_factor`` × its rows, and
  ``low_effort`` and ``colluder`` claim all their own rows whatever they trained on;
- ``honest`` does nothing anywhere.

Behaviours are set per institution by a compact string (:func:`parse_behaviours`), e.g.
``"hospital-03=sign_flip:scale=4, hospital-05=free_rider, hospital-07=backdoor:target=0:poison_fraction=0.5"``.
Class parameters (``target``, ``source``) are checked against the data's classes where those are known (the
roster passes them to :func:`parse_behaviours`).
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
                                "disguised_free_rider", "boosted", "sybil", "low_effort", "count_lie", "backdoor",
                                "targeted_label_flip", "colluder")

# The parameters each behaviour reads; any other parameter in its config is a mistake and is refused.
_OWN_PARAMETERS: dict[str, tuple[str, ...]] = {
    "honest": (),
    "label_flip": ("flip_fraction",),
    "sign_flip": ("scale",),
    "gaussian_noise": ("sigma",),
    "free_rider": ("free_rider_noise", "claimed_examples", "claim_factor"),
    "disguised_free_rider": ("replay_scale", "free_rider_noise", "claimed_examples", "claim_factor"),
    "boosted": ("scale",),
    "sybil": ("sybil_identities",),
    "low_effort": ("effort", "effort_rows"),
    "count_lie": ("claim_factor",),
    "backdoor": ("poison_fraction", "target"),
    "targeted_label_flip": ("source", "target"),
    "colluder": ("effort_rows", "copy_noise"),
}
# Every behaviour but honesty and a sybil split (what the data is, not what a round does) can also start late:
# honest before round ``from_round``, then the attack, so that the first rounds' scores look like anyone's.
PARAMETERS: dict[str, tuple[str, ...]] = {
    name: own if name in ("honest", "sybil") else (*own, "from_round") for name, own in _OWN_PARAMETERS.items()
}

# Parameters read as integers (the rest are floats).
INT_PARAMETERS: tuple[str, ...] = ("sybil_identities", "claimed_examples", "effort_rows", "target", "source",
                                   "from_round")

# A class parameter left out takes its behaviour's default: the same name means different classes to each.
DEFAULT_CLASSES: dict[str, dict[str, int]] = {
    "backdoor": {"target": 0},
    "targeted_label_flip": {"source": 1, "target": 7},
}

COLLUDER_ROWS = 5
"""The rows a colluder trains on when ``effort_rows`` is not given."""

TRIGGER_FEATURES: tuple[int, ...] = (54, 55, 62, 63)
"""The backdoor trigger's pixels on 8×8 images (64 features): the bottom-right 2×2 corner. Data with another
number of features gets its last ``len(TRIGGER_FEATURES)`` features instead (:func:`trigger_features`)."""

TRIGGER_VALUE = 5.0
"""What the trigger sets its features to. Features are standardised on the institutions' pooled training data
(``federate``), so this means 5 standard deviations: digits' corner pixels are blank in most images and no
clean digit has all four this bright. One constant, so that attacker and evaluator stamp the very same pattern
(a maximum taken from each one's own rows would differ between them)."""

SYBIL_SEPARATOR = "~"
"""Joins an institution's name and a sybil identity's number: ``hospital-03~2``."""

DISGUISE_NOISE = 1e-3
"""The noise a disguised free rider adds when ``free_rider_noise`` is 0: enough to beat byte comparisons."""


@dataclass(frozen=True)
class BehaviourSpec:
    """One institution's behaviour and its parameters (only those of :data:`PARAMETERS` matter to it).

    ``scale``: sign_flip's and boosted's multiplier of the honest update; ``sigma``: gaussian_noise's standard
    deviation; ``flip_fraction``: label_flip's share of rows; ``sybil_identities``: sybil's k;
    ``free_rider_noise``: the standard deviation a free rider adds to the global model; ``claimed_examples``:
    the count a free rider claims (0: ``claim_factor`` times its real count); ``effort``: low_effort's share of
    rows it trains on; ``effort_rows``: the exact rows low_effort (when > 0) and colluder (default 5) train on;
    ``claim_factor``: count_lie's and a free rider's multiplier of its row count (default 10);
    ``poison_fraction``: backdoor's share of rows;
    ``target``/``source``: the classes backdoor and targeted_label_flip use (None: :data:`DEFAULT_CLASSES`;
    read them through :attr:`target_class` and :attr:`source_class`); ``copy_noise``: a colluder's noise;
    ``from_round``: the first round it behaves so (honest before it; 1: from the start).
    """

    name: str
    scale: float = 1.0
    sigma: float = 0.1
    flip_fraction: float = 1.0
    sybil_identities: int = 3
    free_rider_noise: float = 0.0
    claimed_examples: int = 0
    replay_scale: float = 1.0
    effort: float = 0.1
    effort_rows: int | None = None
    claim_factor: float = 10.0
    poison_fraction: float = 0.3
    target: int | None = None
    source: int | None = None
    copy_noise: float = 1e-3
    from_round: int = 1

    def __post_init__(self) -> None:
        if self.name not in BEHAVIOURS:
            raise ConfigError(f"unknown behaviour {self.name!r} (choose from {', '.join(BEHAVIOURS)})")
        for field in ("scale", "sigma", "flip_fraction", "free_rider_noise", "replay_scale", "effort",
                      "claim_factor", "poison_fraction", "copy_noise"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"behaviour {self.name}: {field} = {value!r} is not a finite number")
        for field in INT_PARAMETERS:
            value = getattr(self, field)
            if value is None and field in ("effort_rows", "target", "source"):
                continue  # not given: the behaviour's default
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
            (0 < self.effort <= 1, "effort", self.effort, "must lie in (0, 1]"),
            (self.effort_rows is None or self.effort_rows >= (1 if self.name == "colluder" else 0), "effort_rows",
             self.effort_rows, "must be at least 1" if self.name == "colluder" else "must be >= 0"),
            (self.claim_factor >= 1, "claim_factor", self.claim_factor, "must be >= 1"),
            (0 <= self.poison_fraction <= 1, "poison_fraction", self.poison_fraction, "must lie in [0, 1]"),
            (self.target is None or self.target >= 0, "target", self.target, "must be >= 0"),
            (self.source is None or self.source >= 0, "source", self.source, "must be >= 0"),
            (self.copy_noise >= 0, "copy_noise", self.copy_noise, "must be >= 0"),
            (self.from_round >= 1, "from_round", self.from_round, "must be at least 1"),
            (self.name != "targeted_label_flip" or self.source_class != self.target_class, "source",
             self.source_class, f"must differ from target = {self.target_class}"),
        ]
        for ok, field, value, why in problems:
            if not ok:
                raise ConfigError(f"behaviour {self.name}: {field} = {value!r} {why}")

    @property
    def target_class(self) -> int:
        """backdoor's and targeted_label_flip's target class (given, or the behaviour's default)."""
        return self.target if self.target is not None else DEFAULT_CLASSES.get(self.name, {}).get("target", 0)

    @property
    def source_class(self) -> int:
        """targeted_label_flip's source class (given, or the default)."""
        return self.source if self.source is not None else DEFAULT_CLASSES.get(self.name, {}).get("source", 0)

    def check_classes(self, num_classes: int) -> None:
        """ConfigError unless every class this behaviour names is one of the data's ``num_classes``."""
        used = {"backdoor": ("target",), "targeted_label_flip": ("source", "target")}.get(self.name, ())
        for field in used:
            value = self.target_class if field == "target" else self.source_class
            if value >= num_classes:
                raise ConfigError(f"behaviour {self.name}: {field} = {value} must be < the data's {num_classes} "
                                  f"classes (0..{num_classes - 1})")


HONEST = BehaviourSpec("honest")


def parse_behaviours(text: str, institutions: list[str], num_classes: int | None = None
                     ) -> dict[str, BehaviourSpec]:
    """A spec for every institution in ``institutions``: those ``text`` names get theirs, the rest are honest.

    Grammar: entries separated by commas, each ``institution=behaviour[:param=value]...``. Whitespace around
    parts is ignored; an empty ``text`` makes everyone honest. Any unknown institution, behaviour or parameter,
    a parameter the behaviour does not use, a bad value, a class outside ``num_classes`` (when given) or an
    institution named twice raises ConfigError naming the offending part.
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
            values[key] = _number(entry, key, raw, int if key in INT_PARAMETERS else float)
        try:
            specs[institution] = BehaviourSpec(name, **values)  # type: ignore[arg-type]
            if num_classes is not None:
                specs[institution].check_classes(num_classes)
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
    labels = _checked_labels(y, num_classes)
    count = math.floor(spec.flip_fraction * labels.size + 0.5)
    rows = rng.choice(labels.size, size=count, replace=False)
    poisoned = labels.copy()
    poisoned[rows] = num_classes - 1 - labels[rows]
    return poisoned


def _checked_labels(y: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    return labels


def _check_classes(spec: BehaviourSpec, num_classes: int) -> None:
    try:
        spec.check_classes(num_classes)
    except ConfigError as exc:  # a caller past config parsing passed data of other classes: a ValueError
        raise ValueError(str(exc)) from None


def poison_targeted(y: np.ndarray, num_classes: int, spec: BehaviourSpec) -> np.ndarray:
    """targeted_label_flip: a copy of ``y`` with every ``source`` label made ``target``; others get ``y`` itself."""
    if spec.name != "targeted_label_flip":
        return y
    labels = _checked_labels(y, num_classes)
    _check_classes(spec, num_classes)
    return np.where(labels == spec.source_class, spec.target_class, labels).astype(labels.dtype, copy=False)


def trigger_features(num_features: int) -> tuple[int, ...]:
    """The feature indices the backdoor trigger sets: :data:`TRIGGER_FEATURES` on 64 features (8×8 images),
    else the last ``len(TRIGGER_FEATURES)`` features (all of them when there are fewer)."""
    if num_features == 64:
        return TRIGGER_FEATURES
    return tuple(range(max(num_features - len(TRIGGER_FEATURES), 0), num_features))


def apply_trigger(X: np.ndarray, value: float | None = None) -> np.ndarray:
    """A copy of the 2-D ``X`` with the trigger stamped: its :func:`trigger_features` set to ``value``
    (default :data:`TRIGGER_VALUE`)."""
    stamped = np.array(X, copy=True)
    if stamped.ndim != 2:
        raise ValueError(f"features must be 2-D (n, d), got shape {stamped.shape}")
    stamped[:, list(trigger_features(stamped.shape[1]))] = TRIGGER_VALUE if value is None else value
    return stamped


def poison_backdoor(
    X: np.ndarray, y: np.ndarray, num_classes: int, spec: BehaviourSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """backdoor: copies of (X, y) with the trigger stamped on round(poison_fraction · n) rows drawn by ``rng`` and
    those rows relabelled ``target``. Any other behaviour gets ``X`` and ``y`` themselves."""
    if spec.name != "backdoor":
        return X, y
    labels = _checked_labels(y, num_classes)
    _check_classes(spec, num_classes)
    if len(X) != labels.size:
        raise ValueError(f"X has {len(X)} rows but y has {labels.size}")
    rows = rng.choice(labels.size, size=math.floor(spec.poison_fraction * labels.size + 0.5), replace=False)
    features, poisoned = np.array(X, copy=True), labels.copy()
    features[rows] = apply_trigger(features[rows])
    poisoned[rows] = spec.target_class
    return features, poisoned


def triggered_test_set(X: np.ndarray, y: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """(triggered features, true labels) of the rows whose true label is not ``target``: the rows a backdoor
    must move to ``target`` (those already of that class prove nothing)."""
    keep = np.asarray(y) != target
    return apply_trigger(np.asarray(X)[keep]), np.asarray(y)[keep]


@torch.no_grad()
def attack_success_rate(model: nn.Module, X: np.ndarray, y: np.ndarray, target: int,
                        device: torch.device | None = None) -> float:
    """The share of ``X``'s rows of a true class other than ``target`` that ``model`` classifies as ``target``
    once triggered (:func:`triggered_test_set`); 0.0 when there are no such rows."""
    triggered, _ = triggered_test_set(X, y, target)
    if len(triggered) == 0:
        return 0.0
    device = device or next(model.parameters()).device
    model.to(device)
    model.eval()
    logits = model(torch.as_tensor(triggered, dtype=torch.float32, device=device))
    return float((logits.argmax(dim=1) == target).float().mean().item())


def effort_sample(spec: BehaviourSpec, rows: int, rng: np.random.Generator) -> np.ndarray:
    """The sorted row indices, out of ``rows``, a behaviour trains on, drawn by ``rng`` without replacement.

    low_effort: ``effort_rows`` rows when > 0, else round(effort · rows) but at least one; colluder:
    ``effort_rows`` (default :data:`COLLUDER_ROWS`); both at most ``rows``. Any other behaviour: every row
    (``rng`` untouched).
    """
    if spec.name == "low_effort":
        wanted = spec.effort_rows or max(1, math.floor(spec.effort * rows + 0.5))
    elif spec.name == "colluder":
        wanted = spec.effort_rows if spec.effort_rows is not None else COLLUDER_ROWS
    else:
        return np.arange(rows)
    return np.sort(rng.choice(rows, size=min(wanted, rows), replace=False))


@dataclass(frozen=True, eq=False)
class Collusion:
    """What a colluder shares with its group: the group leader's training rows and the group's training seed.

    Every colluder picks the same rows of (X, y) and trains with the same seed, so all compute one model; each
    then adds its own noise, drawn from its own seed.
    """

    X: np.ndarray
    y: np.ndarray
    seed: int


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
    trained + N(0, σ²); colluder trained + N(0, copy_noise²); free_rider the global arrays (plus
    N(0, free_rider_noise²)) and claims ``claimed_examples`` or round(claim_factor · ``num_examples``) (10× by
    default; 1 claims the true count, so that only the free-rider check can stop it); count_lie claims
    round(claim_factor · ``num_examples``); the rest send ``trained`` and claim ``num_examples``. Arrays keep
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
        elif spec.name == "colluder":
            value = local + rng.normal(0.0, spec.copy_noise, local.shape) if spec.copy_noise else local
        elif spec.name == "free_rider":
            value = start + rng.normal(0.0, spec.free_rider_noise, local.shape) if spec.free_rider_noise else start
        elif spec.name == "disguised_free_rider":
            step = start - np.asarray(previous[key], dtype=local.dtype) if previous is not None else 0.0
            value = start + spec.replay_scale * step + rng.normal(0.0, spec.free_rider_noise or DISGUISE_NOISE,
                                                                   local.shape)
        else:
            value = local
        out[key] = np.array(value, dtype=local.dtype)
    if spec.name in ("free_rider", "disguised_free_rider") and spec.claimed_examples:
        return out, spec.claimed_examples
    if spec.name in ("free_rider", "disguised_free_rider", "count_lie"):
        return out, math.floor(spec.claim_factor * num_examples + 0.5)
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
    collusion: Collusion | None = None,
    server_round: int | None = None,
) -> tuple[dict[str, np.ndarray], int, TrainResult]:
    """One local round as ``spec`` behaves: poison, train, tamper; (arrays to send, examples to claim, result).

    ``model`` holds the global weights on entry and the arrays to send on return (so a ClientApp can send
    ``model.state_dict()`` as before). A free rider does not train: it reports the global model's loss on its
    data. One ``seed`` drives training and the behaviour's own randomness, except a colluder's: it trains on
    ``collusion``'s rows with ``collusion``'s seed (without one it leads its own group: its rows, ``seed``) and
    only its noise comes from ``seed``. Every behaviour but free riders' and count_lie claims ``len(y)``, its
    own rows, whatever it trained on. The result's ``num_examples`` is the claim, so a ClientApp reports it
    unchanged. Before ``spec.from_round`` (when ``server_round`` is given) it trains honestly.
    """
    if server_round is not None and server_round < spec.from_round:
        spec, collusion = HONEST, None
    rng = np.random.default_rng(seed)
    start = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    if spec.name in ("free_rider", "disguised_free_rider"):
        loss, _ = evaluate(model, X, y, device)
        result = TrainResult(train_loss=loss, num_examples=len(y))
    elif spec.name in ("low_effort", "colluder"):
        # A colluder draws rows and trains from its group's seed, so the whole group computes one model.
        group = collusion if spec.name == "colluder" and collusion is not None else Collusion(X, y, seed)
        rows = effort_sample(spec, len(group.y), np.random.default_rng(group.seed))
        result = train(model, group.X[rows], group.y[rows], train_spec, device, seed=group.seed)
    else:
        X, poisoned = poison_backdoor(X, y, num_classes, spec, rng)
        poisoned = poison_targeted(poison_labels(poisoned, num_classes, spec, rng), num_classes, spec)
        result = train(model, X, poisoned, train_spec, device, seed=seed)
    trained = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays, claimed = apply_behaviour(spec, start, trained, len(y), rng, previous)
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
