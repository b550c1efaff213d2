"""The utility of a subset of a round's updates: the validation metric of the model they aggregate to.

How subset models are formed: the wrapped Flower strategy aggregates the subset exactly as it aggregates the
whole round (FedAvg and FedProx: the weighted mean; Krum / MultiKrum: their selection among the subset;
Bulyan, FedTrimmedAvg, FedMedian: their robust rule over the subset; FedAdam: its server-optimiser step from the
round's optimiser state, on a copy so scoring never moves the real state). Where a robust rule cannot run on
a subset that small (Bulyan needs at least 4f + 3 updates, FedTrimmedAvg fails when beta trims everything), the
subset's weighted mean stands in. The empty subset is the round's starting global model.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from flwr.app import ArrayRecord, Message
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import FedAvg, FedAvgM, FedProx, Strategy
from flwr.serverapp.strategy.fedopt import FedOpt
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from torch import nn

from fedlearn.federation.replies import EXAMPLES_KEY, arrays_of, examples_of
from fedlearn.scoring.utility import UTILITY_MAX


def per_example_utility(logits: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    """Each example's utility: 1/0 for a correct/wrong prediction (accuracy), the log-probability of the correct
    class (neg_loss), minus the Brier score (the squared distance of the predicted distribution from the
    one-hot label, in [-2, 0]), or σ(correct logit − the strongest other logit) (margin: p(correct) against its
    strongest rival, in (0, 1); smooth like Brier, but it does not care how the rest of the probability is spread,
    which is closer to what accuracy measures). The mean over examples is the model's utility.

    ``logits`` is (examples, classes), or (models, examples, classes) for many models on the same examples at
    once (one call instead of one per model: the Python overhead of a call was half of scoring's time)."""
    if metric == "accuracy":
        return (logits.argmax(dim=-1) == y).to(torch.float64)
    if metric == "neg_loss":
        log_probs = torch.log_softmax(logits.to(torch.float64), dim=-1)
        return log_probs.gather(-1, y.expand(log_probs.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    if metric == "margin":
        scores = logits.to(torch.float64)
        labels = y.expand(scores.shape[:-1]).unsqueeze(-1)
        correct = scores.gather(-1, labels).squeeze(-1)
        rival = scores.scatter(-1, labels, float("-inf")).amax(dim=-1)
        return torch.sigmoid(correct - rival)
    if metric == "brier":
        probs = torch.softmax(logits.to(torch.float64), dim=-1)
        onehot = nn.functional.one_hot(y, probs.shape[-1]).to(torch.float64)
        return -((probs - onehot) ** 2).sum(dim=-1)
    raise ValueError(f"unknown utility {metric!r} (choose from {', '.join(UTILITY_MAX)})")


@contextlib.contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Garbage collections inside skip the objects that exist on entry (``gc.freeze``).

    Flower's Bulyan forces a full collection for every reply it reads (``to_numpy_ndarrays(keep_input=False)``).
    Over a coordinator's long-lived objects (the chain, the ledger, torch) each took half a second: scoring one
    round, a thousand subset aggregations, took nine minutes. What the aggregation itself leaves is still collected.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class SubsetAggregator:
    """Aggregates any subset of one round's accepted replies with the wrapped strategy's own rule."""

    def __init__(self, strategy: Strategy, server_round: int, replies: list[Message], start: ArrayRecord):
        # Server-optimiser strategies keep state that one aggregation advances: keep the state the round
        # started from (build this before the real aggregation) and aggregate every subset on a copy of it.
        self._stateful = isinstance(strategy, (FedOpt, FedAvgM))
        self._strategy = copy.deepcopy(strategy) if self._stateful else strategy
        self._round = server_round
        # FedMedian, FedTrimmedAvg and Bulyan pop arrays out of the replies they aggregate: keep pristine
        # copies (taken before the real aggregation) and hand each aggregation copies of its own.
        self._replies = [copy.deepcopy(m) for m in replies]
        self._start = start

    def __call__(self, subset: frozenset[int]) -> ArrayRecord:
        if not subset:
            return self._start
        chosen = [copy.deepcopy(self._replies[i]) for i in sorted(subset)]
        strategy = copy.deepcopy(self._strategy) if self._stateful else self._strategy
        flwr_logger = logging.getLogger("flwr")
        level = flwr_logger.level
        flwr_logger.setLevel(logging.ERROR)  # thousands of subset aggregations would flood the log
        try:
            with long_lived_objects_frozen():
                arrays, _ = strategy.aggregate_train(self._round, chosen)
        except AggregationError:  # FedTrimmedAvg on a subset whose trim would leave nothing
            arrays = None
        finally:
            flwr_logger.setLevel(level)
        if arrays is None:  # Bulyan returns None below 4f + 3 updates; the subset's weighted mean stands in
            arrays = aggregate_arrayrecords([m.content for m in chosen], EXAMPLES_KEY)
        return arrays


BATCH = 256  # subset models evaluated at once: 256 copies of the demo's MLP and their activations are a few MB


class MeanUtility:
    """U(S) when the wrapped strategy aggregates by the example-weighted mean (FedAvg, FedProx).

    The same value as ModelUtility over Flower's aggregation, computed without it: every update is decoded
    once and stacked, a subset's model is one weighted sum per tensor, and the model runs on those tensors
    directly. Scoring a round costs hundreds of evaluations; this keeps each in the tens of microseconds.
    """

    def __init__(
        self,
        model: nn.Module,
        replies: list[Message],
        start: ArrayRecord,
        X: np.ndarray,
        y: np.ndarray,
        metric: str = "accuracy",
        device: torch.device | None = None,
    ):
        self._device = device or torch.device("cpu")
        self._model = model.to(self._device).eval()
        self._X = torch.as_tensor(X, dtype=torch.float32, device=self._device)
        self._y = torch.as_tensor(y, dtype=torch.long, device=self._device)
        self._metric = metric
        self._start = {k: v.to(self._device) for k, v in start.to_torch_state_dict().items()}
        self._examples = torch.tensor(
            [float(examples_of(m)) for m in replies], dtype=torch.float64
        )
        states = [arrays_of(m).to_torch_state_dict() for m in replies]
        self._stacked = {
            k: torch.stack([s[k].to(torch.float64) for s in states]).to(self._device) for k in self._start
        }

    @property
    def weights(self) -> np.ndarray:
        """Each update's aggregation weight (the example count its reply carries, checked against the registered
        one), in the order of the replies."""
        return self._examples.numpy().copy()

    def many(self, subsets: Sequence[frozenset[int]]) -> list[float]:
        """U of every subset, ``BATCH`` subset models at a time (:meth:`mixes`, each subset's weight shares as its
        row). The same values as one call each, to float rounding."""
        members = torch.zeros((len(subsets), len(self._examples)), dtype=torch.float64)
        for row, subset in enumerate(subsets):
            members[row, sorted(subset)] = 1.0
        weights = members * self._examples
        # The empty subset's row stays 0: the round's start model, not a mean of nothing.
        return self.mixes(weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-300))

    @torch.no_grad()
    def mixes(self, coefficients: torch.Tensor) -> list[float]:
        """U of the model start + Σ_j c_j (update_j − start) for each row c of ``coefficients`` (one column per
        update): a subset's mean when c holds its weight shares, and any other mix of the round's updates with
        its start model (a coalition beside an update that did not move, a step of another length). Evaluated
        ``BATCH`` models at a time: their weights are one matrix product with the stacked updates, and the model
        runs on all of them at once (``torch.func.vmap``)."""
        values: list[float] = []
        for begin in range(0, len(coefficients), BATCH):
            chunk = coefficients[begin:begin + BATCH].to(torch.float64)
            rest = (1.0 - chunk.sum(dim=1)).to(self._device)
            # A row of weight shares sums to 1 up to rounding: its model is their mean exactly, as Flower's is, and
            # only the other rows (the empty subset's, in scoring) take the start model in.
            moved = rest.abs() >= 1e-9
            chunk = chunk.to(self._device)
            params = {}
            for k, v in self._stacked.items():
                mixed = torch.tensordot(chunk, v, dims=1)
                if bool(moved.any()):
                    start = self._start[k].to(torch.float64)
                    mixed[moved] += rest[moved].reshape(-1, *[1] * start.dim()) * start
                params[k] = mixed.to(self._start[k].dtype)
            logits = torch.func.vmap(lambda p: torch.func.functional_call(self._model, p, (self._X,)))(params)
            values.extend(per_example_utility(logits, self._y, self._metric).mean(dim=-1).tolist())
        return values

    @torch.no_grad()
    def __call__(self, subset: frozenset[int]) -> float:
        if subset:
            index = torch.tensor(sorted(subset), device=self._device)
            weights = self._examples.to(self._device)[index]
            weights = weights / weights.sum()
            params = {
                k: torch.tensordot(weights, v[index], dims=1).to(self._start[k].dtype)
                for k, v in self._stacked.items()
            }
        else:
            params = self._start
        logits = torch.func.functional_call(self._model, params, (self._X,))
        return float(per_example_utility(logits, self._y, self._metric).mean())


def models_follow_weight_shares(strategy: Strategy) -> bool:
    """Whether a coalition's model is a function of its members' weight shares alone — what the surrogate Banzhaf
    estimator models: FedAvg and FedProx take the weighted mean, FedAdam (any FedOpt) one optimiser step along
    it; robust rules select or trim by the updates themselves."""
    return type(strategy) in (FedAvg, FedProx) or isinstance(strategy, FedOpt)


def round_utility(
    strategy: Strategy,
    server_round: int,
    replies: list[Message],
    start: ArrayRecord,
    model: nn.Module,
    validation: tuple[np.ndarray, np.ndarray],
    metric: str,
) -> Callable[[frozenset[int]], float]:
    """The round's utility; build it before the real aggregation (robust rules consume their replies)."""
    if type(strategy) in (FedAvg, FedProx):
        return MeanUtility(model, replies, start, *validation, metric=metric)
    return ModelUtility(model, SubsetAggregator(strategy, server_round, replies, start), *validation, metric=metric)


class ModelUtility:
    """U(S) for a round: accuracy (or negative loss) on the server validation set of the subset's model."""

    def __init__(
        self,
        model: nn.Module,
        aggregate: Callable[[frozenset[int]], ArrayRecord],
        X: np.ndarray,
        y: np.ndarray,
        metric: str = "accuracy",
        device: torch.device | None = None,
    ):
        self._model = model
        self._aggregate = aggregate
        self._device = device or torch.device("cpu")
        self._X = torch.as_tensor(X, dtype=torch.float32, device=self._device)
        self._y = torch.as_tensor(y, dtype=torch.long, device=self._device)
        self._metric = metric
        self._model.to(self._device)

    @torch.no_grad()
    def __call__(self, subset: frozenset[int]) -> float:
        arrays = self._aggregate(subset)
        self._model.load_state_dict(arrays.to_torch_state_dict())
        self._model.eval()
        return float(per_example_utility(self._model(self._X), self._y, self._metric).mean())
