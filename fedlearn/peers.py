"""Peer validation, FLock style: voters score the round's candidate updates on their own local data.

The server sends each voter one ``query.vote`` message carrying the round's starting model and every
candidate update (except the voter's own); the voter replies, per candidate, how much that update alone
improves accuracy over the starting model on its local validation split. Votes are combined by median in
fedlearn.scoring.votes; a voter whose votes disagree with the consensus earns nothing that round.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from torch import nn

from fedlearn.training import evaluate

VOTE_MESSAGE = "query.vote"
START_KEY = "start"
CANDIDATE_PREFIX = "candidate:"
VOTES_KEY = "votes"
# Share of each member's data held out as its local validation split when peers vote.
LOCAL_VALIDATION_FRACTION = 0.2


def request_votes(
    grid: Grid, server_round: int, start: ArrayRecord, candidates: list[tuple[str, int, ArrayRecord]],
    voters: list[str],
) -> dict[str, dict[str, float]]:
    """voter → {proposer: vote}, from ``candidates`` (proposer, node id, update); silent voters are left out."""
    node_of = {name: node for name, node, _ in candidates}
    messages = []
    for voter in voters:
        content = RecordDict({START_KEY: start, "config": ConfigRecord({"server-round": server_round})})
        for proposer, _, arrays in candidates:
            if proposer != voter:
                content[CANDIDATE_PREFIX + proposer] = arrays
        messages.append(Message(content=content, dst_node_id=node_of[voter], message_type=VOTE_MESSAGE))
    votes: dict[str, dict[str, float]] = {}
    voter_of = {node_of[v]: v for v in voters}
    for reply in grid.send_and_receive(messages, timeout=3600):
        if reply.has_error():
            continue
        record = reply.content.metric_records.get(VOTES_KEY)
        if record is not None:
            votes[voter_of[reply.metadata.src_node_id]] = {k: float(v) for k, v in record.items()}
    return votes


def local_split(X: np.ndarray, y: np.ndarray, seed: int) -> tuple[tuple[np.ndarray, np.ndarray],
                                                                     tuple[np.ndarray, np.ndarray]]:
    """(training part, local validation part) of a member's data, the same on every call."""
    order = np.random.default_rng(seed).permutation(len(y))
    cut = max(1, int(round(len(y) * LOCAL_VALIDATION_FRACTION)))
    held, kept = np.sort(order[:cut]), np.sort(order[cut:])
    return (X[kept], y[kept]), (X[held], y[held])


def cast_votes(message: Message, model: nn.Module, X: np.ndarray, y: np.ndarray) -> Message:
    """A voter's reply: per candidate, accuracy gain of that update alone over the starting model."""
    model.load_state_dict(message.content[START_KEY].to_torch_state_dict())
    _, baseline = evaluate(model, X, y, torch.device("cpu"))
    votes = MetricRecord()
    for key, arrays in message.content.array_records.items():
        if key.startswith(CANDIDATE_PREFIX):
            model.load_state_dict(arrays.to_torch_state_dict())
            _, accuracy = evaluate(model, X, y, torch.device("cpu"))
            votes[key.removeprefix(CANDIDATE_PREFIX)] = accuracy - baseline
    return Message(content=RecordDict({VOTES_KEY: votes}), reply_to=message)
