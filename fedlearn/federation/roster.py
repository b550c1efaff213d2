"""The federation a config describes: its members and their data, identical wherever it is computed.

In simulation the server and every institution derive the same split from the config's seed; each member then
trains on its own partition only. ``integrity.behaviours`` makes some members adversarial; a sybil institution
appears as k identities ("hospital-03~1" …) that split its data between them; colluders form one group led by
the first of them in partition order, whose data and seed they all train with.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fedlearn.config import RunConfig
from fedlearn.data import Dataset, FederatedSplit, federate, load_dataset
from fedlearn.learning.behaviours import HONEST, BehaviourSpec, parse_behaviours, sybil_names, sybil_split


@dataclass(frozen=True, eq=False)
class Member:
    """One participant: an institution, or one identity of a sybil institution (``origin`` is the real one)."""

    name: str
    origin: str
    data: Dataset
    behaviour: BehaviourSpec
    leader: int | None = None
    """A colluder's group leader's partition id (its own for the leader): whose rows and seed it trains with."""


def federated_split(config: RunConfig) -> FederatedSplit:
    return _split(config.to_json())


@lru_cache(maxsize=4)
def _split(config_json: str) -> FederatedSplit:
    config = RunConfig.from_json(config_json)
    d = config.data
    return federate(
        load_dataset(d.dataset, label_column=d.label_column),
        num_institutions=d.institutions,
        scheme=d.partition,
        seed=config.run.seed,
        alpha=d.alpha,
        classes_per_institution=d.classes_per_institution,
        validation_fraction=d.validation_fraction,
        test_fraction=d.test_fraction,
        name_prefix=d.name_prefix,
    )


def roster(config: RunConfig) -> list[Member]:
    """Every participant, in partition-id order (what ``num-partitions`` counts in simulation)."""
    return _roster(config.to_json())


@lru_cache(maxsize=4)
def _roster(config_json: str) -> list[Member]:
    config = RunConfig.from_json(config_json)
    split = _split(config_json)
    specs = parse_behaviours(config.integrity.behaviours, split.institutions, split.test.num_classes)
    members: list[Member] = []
    leader: int | None = None
    for index, (name, data) in enumerate(zip(split.institutions, split.partitions)):
        spec = specs.get(name, HONEST)
        if spec.name == "colluder":
            leader = len(members) if leader is None else leader  # a partition id: sybils before it shift it
            members.append(Member(name, name, data, spec, leader))
            continue
        if spec.name != "sybil":
            members.append(Member(name, name, data, spec))
            continue
        rng = np.random.default_rng([config.run.seed, index])
        parts = sybil_split(data.X, data.y, spec.sybil_identities, rng)
        for identity, (X, y) in zip(sybil_names(name, spec.sybil_identities), parts):
            # Each identity behaves honestly on its share: the attack is the split itself.
            members.append(Member(identity, name, Dataset(X, y, data.num_classes, identity), HONEST))
    return members


def institution_data(config: RunConfig, partition_id: int) -> Member:
    """The member at ``partition_id``."""
    members = roster(config)
    if not 0 <= partition_id < len(members):
        raise IndexError(f"partition-id {partition_id} outside 0..{len(members) - 1}")
    return members[partition_id]
