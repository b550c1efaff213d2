"""FLTrust (Cao et al., NDSS 2021) as a Flower strategy: trust-weighted aggregation against a server update.

Flower does not ship it. Each round the server trains the global model on its own root data (here the
server validation split) to get a reference update; each client update is trusted by ReLU(cosine) with that
reference, rescaled to its norm, and averaged by trust. A negated, boosted or noise update gains nothing
from its magnitude and little or nothing from its direction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedlearn.records.checkpoint import numpy_arrays
from fedlearn.scoring.trust import TrustResult, fltrust_arrays

ServerUpdate = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class FLTrust(FedAvg):
    """FedAvg's sampling and metric aggregation; FLTrust's aggregation of arrays.

    ``server_update(global_arrays) -> trained_arrays`` trains a copy of the global model on the root data.
    """

    def __init__(self, server_update: ServerUpdate, **fedavg: Any) -> None:
        super().__init__(**fedavg)
        self.server_update = server_update
        self.current: dict[str, np.ndarray] | None = None
        self.last_trust: TrustResult | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current = {k: v.numpy() for k, v in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid or self.current is None:
            return None, None
        clients = [numpy_arrays(m.content.array_records[self.arrayrecord_key]) for m in valid]
        reference = self.server_update(self.current)
        self.last_trust, aggregated = fltrust_arrays(self.current, reference, clients)
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return ArrayRecord({k: Array(np.asarray(v)) for k, v in aggregated.items()}), metrics


class RootTrainer:
    """The server's own update: the global model trained on the root data with the run's local training.

    A class rather than a closure so that the strategy, and the checkpoints that hold it, can be pickled. The
    result depends only on the global model (seeded by its hash) and is cached, so scoring the subsets of a
    round reuses the round's reference update instead of training again.
    """

    def __init__(self, model_spec: Any, train_spec: Any, X: np.ndarray, y: np.ndarray, num_classes: int,
                 seed: int) -> None:
        self.model_spec, self.train_spec, self.X, self.y = model_spec, train_spec, X, y
        self.num_classes, self.seed = num_classes, seed
        self._cache: tuple[str, dict[str, np.ndarray]] | None = None

    def __call__(self, global_arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from fedlearn.learning.models import build_model
        from fedlearn.learning.training import train
        from fedlearn.records.fingerprint import model_hash

        key = model_hash(global_arrays)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        model = build_model(self.model_spec, self.X.shape[1], self.num_classes)
        model.load_state_dict({k: torch.as_tensor(v) for k, v in global_arrays.items()})
        train(model, self.X, self.y, self.train_spec, torch.device("cpu"),
              seed=(self.seed * 7_919 + int(key[2:10], 16)) % 2**63)
        result = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        self._cache = (key, result)
        return result
