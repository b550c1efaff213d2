"""Shared fixtures: Flower messages built outside a running federation."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from hypothesis import settings

from fedlearn.federation.replies import ARRAYS_KEY, EXAMPLES_KEY, INSTITUTION_KEY, META_KEY, METRICS_KEY

ReplyFactory = Callable[..., Message]

# CI runs the same examples every time (a red CI must be reproducible); no deadline on a shared 2-core machine.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True, scope="session")
def _task_identity() -> None:
    # Messages need a run identity; Flower's engines set it, a unit test must.
    TaskIdentity.run_id = 1
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = 0


def arrays_of(values: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in values.items()})


@pytest.fixture
def make_reply() -> ReplyFactory:
    """``make_reply(arrays, examples, institution, node_id)`` → a training reply as a ClientApp sends it."""

    def factory(
        arrays: dict[str, np.ndarray],
        examples: float = 10,
        institution: str | None = "hospital-01",
        node_id: int = 7,
    ) -> Message:
        instruction = Message(content=RecordDict(), dst_node_id=node_id, message_type="train")
        content = RecordDict({
            ARRAYS_KEY: arrays_of(arrays),
            METRICS_KEY: MetricRecord({EXAMPLES_KEY: examples, "train-loss": 0.5}),
        })
        if institution is not None:
            content[META_KEY] = ConfigRecord({INSTITUTION_KEY: institution})
        return Message(content=content, reply_to=instruction)

    return factory


# The files the suite waits longest on (scripts/test.sh --durations), longest first. scripts/test.sh gives each
# worker a file at a time, so a long file handed out last is what everyone waits for: these start first.
LONGEST_FILES = ("test_bad_input.py", "test_fuzz.py", "test_pilot.py", "test_deployment.py", "test_payout.py",
                 "test_free_riders.py", "test_integrity.py", "test_cli.py", "test_simulation.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
