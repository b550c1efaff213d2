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

from fedlearn.config import FILES, RunConfig, read_toml, split_list
from fedlearn.data import Dataset, FederatedSplit, federate, load_dataset
from fedlearn.data.schema import Schema, load_local
from fedlearn.errors import ConfigError, DataError
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


def schema_of(config: RunConfig) -> Schema:
    """The federation's data schema (``data.dataset = "files"``)."""
    d = config.data
    return Schema.parse(d.features, d.classes, d.label_column, d.feature_columns)


@lru_cache(maxsize=4)
def _split(config_json: str) -> FederatedSplit:
    config = RunConfig.from_json(config_json)
    d = config.data
    if d.dataset == FILES:
        # A pilot: the coordinator holds its own validation and test files and none of the institutions' rows.
        schema, names = schema_of(config), split_list(d.institution_names)
        return FederatedSplit(names, [schema.empty(n) for n in names],
                              load_local(d.validation_path, schema, "the coordinator's validation file"),
                              load_local(d.test_path, schema, "the coordinator's test file"))
    dataset = load_dataset(d.dataset, label_column=d.label_column)
    if d.partition == "pathological" and d.classes_per_institution > dataset.num_classes:
        raise ConfigError(f"data.classes_per_institution = {d.classes_per_institution} is more than the "
                          f"{dataset.num_classes} classes of dataset {dataset.name!r}")
    return federate(
        dataset,
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
    if config.data.dataset == FILES:
        return [Member(name, name, data, HONEST) for name, data in zip(split.institutions, split.partitions)]
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


def registered_counts(config: RunConfig, members: list[Member]) -> dict[str, int]:
    """The example count the coordinator stands behind for each participant: its partition's size in a
    simulation, the count registered at provisioning in a pilot (0 where none was: equal weighting)."""
    if config.data.dataset != FILES:
        return {m.name: len(m.data) for m in members}
    counts = [int(c) for c in split_list(config.data.registered_examples)] or [0] * len(members)
    return {m.name: count for m, count in zip(members, counts)}


def node_registry(config: RunConfig) -> dict[int, str] | None:
    """Authenticated node id → institution, from ``data.node_registry`` (None when not set)."""
    path = config.data.node_registry
    if not path:
        return None
    table = read_toml(path, "data.node_registry file")
    names = {m.name for m in roster(config)}
    nodes: dict[int, str] = {}
    for name, node in table.items():
        if name not in names:
            raise ConfigError(f"data.node_registry {path} names {name!r}, not an institution of this federation")
        if isinstance(node, bool) or not isinstance(node, int) or node <= 0:
            raise ConfigError(f"data.node_registry {path}: {name}'s node id must be a positive integer, got {node!r}")
        if node in nodes:
            raise ConfigError(f"data.node_registry {path}: node {node} is registered for both {nodes[node]} and "
                              f"{name}")
        nodes[node] = name
    return nodes


def own_member(config: RunConfig, institution: str, data_path: str) -> tuple[Member, int]:
    """A pilot institution's node: its member, read from its own file only, and its index in the federation."""
    names = split_list(config.data.institution_names)
    if institution not in names:
        raise DataError(f"node config names institution {institution!r}, which is not in this federation "
                        f"({', '.join(names)})")
    return Member(institution, institution, _own_data(config.to_json(), institution, data_path), HONEST), \
        names.index(institution)


@lru_cache(maxsize=2)
def _own_data(config_json: str, institution: str, data_path: str) -> Dataset:
    return load_local(data_path, schema_of(RunConfig.from_json(config_json)), institution)


def institution_data(config: RunConfig, partition_id: int) -> Member:
    """The member at ``partition_id``."""
    members = roster(config)
    if not 0 <= partition_id < len(members):
        raise IndexError(f"partition-id {partition_id} outside 0..{len(members) - 1}")
    return members[partition_id]
