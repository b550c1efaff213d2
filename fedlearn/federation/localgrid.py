"""An in-process Grid: the real ServerApp and ClientApp, messages handed over directly, no engine.

Flower's simulation engine (Ray) costs seconds to start and a process per client; sweeps that run dozens of
small federations (the integrity benchmark) use this instead. Messages, replies, errors and node configs are
the ones the engine would produce; what differs is only transport and isolation (one process, in turn).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

CLIENT_EXCEPTION = 4  # Flower's error code for an exception raised in a ClientApp


class LocalGrid(Grid):
    """Delivers each message to a ClientApp in this process and collects its reply."""

    def __init__(self, client_app: ClientApp, num_nodes: int, run_id: int = 1,
                 node_configs: list[dict[str, Any]] | None = None) -> None:
        """``node_configs``: each node's own config (a pilot's `institution` and `data-path`); by default the
        simulation's `partition-id` and `num-partitions`."""
        self._app = client_app
        self._run = Run.create_empty(run_id=run_id)
        configs = node_configs or [{"partition-id": i, "num-partitions": num_nodes} for i in range(num_nodes)]
        self._contexts = {
            node_id: Context(run_id=run_id, node_id=node_id, node_config=dict(configs[node_id - 1]),
                             state=RecordDict(), run_config={})
            for node_id in range(1, num_nodes + 1)
        }
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:  # the run is fixed at construction
        pass

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            self._replies[self._id(message)] = self._deliver(message)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(key) for key in message_ids if key in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return [self._deliver(message) for message in messages if self._id(message)]

    @staticmethod
    def _id(message: Message) -> str:
        """Gives ``message`` an id, as Flower's grids do when they push it: its reply names it."""
        message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        return message.metadata.message_id

    def _deliver(self, message: Message) -> Message:
        try:
            return self._app(message, self._contexts[message.metadata.dst_node_id])
        except Exception as exc:  # noqa: BLE001 - a failing client becomes an error reply, as in the engine
            return Message(Error(code=CLIENT_EXCEPTION, reason=f"{type(exc).__name__}: {exc}"), reply_to=message)


def run_in_process(server_app: ServerApp, client_app: ClientApp, num_nodes: int) -> None:
    """Run a ServerApp against ``num_nodes`` in-process ClientApps."""
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    grid = LocalGrid(client_app, num_nodes)
    server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
