"""A strategy that wraps any Flower strategy and scores every institution's update every round."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)
from torch import nn

from fedlearn.config import RunConfig
from fedlearn.errors import ConfigError
from fedlearn.replies import EXAMPLES_KEY, METRICS_KEY, Rejection, institution_of, partition_replies
from fedlearn.scoring import score_round
from fedlearn.valuation import round_utility

log = logging.getLogger("flwr")  # shown with Flower's own lines under `flwr run`


def build_flower_strategy(config: RunConfig) -> Strategy:
    """The Flower strategy named in ``strategy.name``; evaluation is server-side, so clients never evaluate."""
    s, n = config.strategy, config.data.institutions
    common = dict(
        fraction_train=s.fraction_train,
        fraction_evaluate=0.0,
        min_train_nodes=max(1, int(n * s.fraction_train)),
        min_available_nodes=n,
    )
    if s.name in ("krum", "multikrum", "bulyan") and n <= 2 * s.num_malicious + 2:
        raise ConfigError(
            f"strategy.num_malicious = {s.num_malicious} is too large for {n} institutions "
            f"({s.name} needs more than 2f + 2 updates)"
        )
    if s.name == "bulyan" and n < 4 * s.num_malicious + 3:
        raise ConfigError(
            f"strategy.num_malicious = {s.num_malicious} is too large for bulyan with {n} institutions "
            "(needs at least 4f + 3)"
        )
    builders: dict[str, Callable[[], Strategy]] = {
        "fedavg": lambda: FedAvg(**common),
        "fedprox": lambda: FedProx(**common, proximal_mu=config.train.proximal_mu),
        "fedadam": lambda: FedAdam(**common, eta=s.server_learning_rate, eta_l=config.train.learning_rate),
        "krum": lambda: Krum(**common, num_malicious_nodes=s.num_malicious),
        "multikrum": lambda: MultiKrum(
            **common,
            num_malicious_nodes=s.num_malicious,
            num_nodes_to_select=s.multikrum_select or max(1, n - s.num_malicious),
        ),
        "bulyan": lambda: Bulyan(**common, num_malicious_nodes=s.num_malicious),
        "fedtrimmedavg": lambda: FedTrimmedAvg(**common, beta=s.trimmed_beta),
        "fedmedian": lambda: FedMedian(**common),
    }
    if s.name not in builders:
        raise ConfigError(f"unknown strategy.name {s.name!r} (choose from {', '.join(builders)})")
    return builders[s.name]()


@dataclass
class RoundScores:
    """What one round's scoring found; rejected institutions score 0."""

    server_round: int
    scores: dict[str, float]
    num_examples: dict[str, int]
    rejected: dict[str, str]
    evaluations: int
    scoring_seconds: float
    truncated: bool
    method: str


@dataclass
class ScoreBook:
    """Per-round and cumulative scores per institution."""

    rounds: list[RoundScores] = field(default_factory=list)

    def cumulative(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for record in self.rounds:
            for name, value in record.scores.items():
                total[name] = total.get(name, 0.0) + value
        return total


class ScoredStrategy(Strategy):
    """Delegates sampling and aggregation to a Flower strategy; checks replies first and scores after.

    Replies that fail the checks in :mod:`fedlearn.replies` never reach the wrapped strategy: they score 0 and
    are logged with the institution's name.
    """

    def __init__(
        self,
        inner: Strategy,
        model: nn.Module,
        validation: tuple[np.ndarray, np.ndarray],
        config: RunConfig,
        on_round: Callable[[RoundScores], None] | None = None,
    ):
        self.inner = inner
        self.model = model
        self.validation = validation
        self.scoring = config.scoring
        self.seed = config.run.seed
        self.book = ScoreBook()
        self.on_round = on_round
        self._start_arrays: ArrayRecord | None = None

    def summary(self) -> None:
        log.info("scoring: %s on server validation (%s)", self.scoring.method, self.scoring.utility)
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._start_arrays = arrays
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._start_arrays is None:
            raise RuntimeError("aggregate_train called before configure_train")
        accepted, rejected = partition_replies(list(replies), self._start_arrays)
        for rejection in rejected:
            log.warning("round %d: update from %s set aside: %s", server_round, rejection.institution,
                        rejection.reason)
        started = time.perf_counter()
        utility = round_utility(self.inner, server_round, accepted, self._start_arrays, self.model,
                                self.validation, self.scoring.utility)
        arrays, metrics = (None, None)
        if accepted:
            arrays, metrics = self.inner.aggregate_train(server_round, accepted)
        self._score(server_round, accepted, rejected, utility, started)
        return arrays, metrics

    def _score(
        self,
        server_round: int,
        accepted: list[Message],
        rejected: list[Rejection],
        utility: Callable[[frozenset[int]], float],
        started: float,
    ) -> None:
        names = [institution_of(m) for m in accepted]
        result = score_round(
            self.scoring.method,
            len(accepted),
            utility,
            rng=np.random.default_rng([self.seed, server_round]),
            within_round_epsilon=self.scoring.gtg_within_round_epsilon,
            between_round_epsilon=self.scoring.gtg_between_round_epsilon,
            convergence_tolerance=self.scoring.gtg_convergence_tolerance,
            max_permutations=self.scoring.gtg_max_permutations or None,
        )
        scores = {name: float(v) for name, v in zip(names, result.values)}
        scores.update({r.institution: 0.0 for r in rejected})
        record = RoundScores(
            server_round=server_round,
            scores=scores,
            num_examples={
                name: int(m.content.metric_records[METRICS_KEY][EXAMPLES_KEY]) for name, m in zip(names, accepted)
            },
            rejected={r.institution: r.reason for r in rejected},
            evaluations=result.evaluations,
            # Scoring time includes building the utility, not the real aggregation in between.
            scoring_seconds=time.perf_counter() - started,
            truncated=result.truncated,
            method=self.scoring.method,
        )
        self.book.rounds.append(record)
        if self.on_round is not None:
            self.on_round(record)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)
