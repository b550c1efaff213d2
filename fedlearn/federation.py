"""The federation a config describes: its institutions and their data, identical wherever it is computed.

In simulation the server and every institution derive the same split from the config's seed; each
institution then trains on its own partition only.
"""

from __future__ import annotations

from functools import lru_cache

from fedlearn.config import RunConfig
from fedlearn.data import Dataset, FederatedSplit, federate, load_dataset


def federated_split(config: RunConfig) -> FederatedSplit:
    return _split(config.to_json())


@lru_cache(maxsize=4)
def _split(config_json: str) -> FederatedSplit:
    d = RunConfig.from_json(config_json).data
    seed = RunConfig.from_json(config_json).run.seed
    return federate(
        load_dataset(d.dataset, label_column=d.label_column),
        num_institutions=d.institutions,
        scheme=d.partition,
        seed=seed,
        alpha=d.alpha,
        classes_per_institution=d.classes_per_institution,
        validation_fraction=d.validation_fraction,
        test_fraction=d.test_fraction,
        name_prefix=d.name_prefix,
    )


def institution_data(config: RunConfig, partition_id: int) -> tuple[str, Dataset]:
    """(name, training data) of the institution at ``partition_id``."""
    split = federated_split(config)
    if not 0 <= partition_id < len(split.partitions):
        raise IndexError(f"partition-id {partition_id} outside 0..{len(split.partitions) - 1}")
    return split.institutions[partition_id], split.partitions[partition_id]
