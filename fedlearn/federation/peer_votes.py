"""Peer validation, FLock style: voters score the round's candidate updates on their own local data.

The server sends each voter one ``query.vote`` message carrying every candidate update (except the voter's
own) with its example count. The voter forms their example-weighted mean, as FedAvg would, and votes for each
candidate its leave-one-out contribution on the voter's local validation split: accuracy of the mean of all
minus accuracy of the mean without that candidate. An honest update in a crowd of honest ones scores about 0,
a harmful one below 0. Votes are combined by median in fedlearn.scoring.votes; a voter whose votes disagree
with the consensus earns nothing that round.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from torch import nn

from fedlearn.learning.training import evaluate
from fedlearn.logs import log as money_log

VOTE_MESSAGE = "query.vote"
START_KEY = "start"
CANDIDATE_PREFIX = "candidate:"
VOTES_KEY = "votes"
WEIGHTS_KEY = "weights"
# Share of each member's data held out as its local validation split when peers vote.
LOCAL_VALIDATION_FRACTION = 0.2


def request_votes(
    grid: Grid, server_round: int, start: ArrayRecord, candidates: list[tuple[str, int, ArrayRecord, int]],
    voters: list[str],
) -> dict[str, dict[str, float]]:
    """voter → {proposer: vote}, from ``candidates`` (proposer, node id, update, examples); silent voters are
    left out."""
    node_of = {name: node for name, node, _, _ in candidates}
    messages = []
    for voter in voters:
        weights = ConfigRecord({name: examples for name, _, _, examples in candidates if name != voter})
        content = RecordDict({START_KEY: start, WEIGHTS_KEY: weights,
                              "config": ConfigRecord({"server-round": server_round})})
        for proposer, _, arrays, _ in candidates:
            if proposer != voter:
                content[CANDIDATE_PREFIX + proposer] = arrays
        messages.append(Message(content=content, dst_node_id=node_of[voter], message_type=VOTE_MESSAGE))
    votes: dict[str, dict[str, float]] = {}
    voter_of = {node_of[v]: v for v in voters}
    for reply in grid.send_and_receive(messages, timeout=3600):
        if reply.has_error():  # its proposers are scored by the other voters; say who was silent and why
            money_log.warning("round %d: voter %s sent no votes: %s", server_round,
                              voter_of.get(reply.metadata.src_node_id, reply.metadata.src_node_id),
                              reply.error.reason)
            continue
        record = reply.content.metric_records.get(VOTES_KEY)
        if record is not None:
            votes[voter_of[reply.metadata.src_node_id]] = {k: float(cast(float, v)) for k, v in record.items()}
    return votes


def local_split(X: np.ndarray, y: np.ndarray, seed: int) -> tuple[tuple[np.ndarray, np.ndarray],
                                                                     tuple[np.ndarray, np.ndarray]]:
    """(training part, local validation part) of a member's data, the same on every call."""
    order = np.random.default_rng(seed).permutation(len(y))
    cut = max(1, int(round(len(y) * LOCAL_VALIDATION_FRACTION)))
    held, kept = np.sort(order[:cut]), np.sort(order[cut:])
    return (X[kept], y[kept]), (X[held], y[held])


def cast_votes(message: Message, model: nn.Module, X: np.ndarray, y: np.ndarray) -> Message:
    """A voter's reply: per candidate, its leave-one-out contribution to the weighted mean, on local data."""
    records = message.content.array_records
    weights = {k: float(cast(float, v)) for k, v in message.content.config_records[WEIGHTS_KEY].items()}
    names = [k.removeprefix(CANDIDATE_PREFIX) for k in records if k.startswith(CANDIDATE_PREFIX)]
    states = {n: records[CANDIDATE_PREFIX + n].to_torch_state_dict() for n in names}

    def accuracy(members: list[str]) -> float:
        if not members:
            model.load_state_dict(records[START_KEY].to_torch_state_dict())
        else:
            total = sum(weights[n] for n in members)
            model.load_state_dict({
                key: sum(states[n][key] * (weights[n] / total) for n in members)
                for key in states[members[0]]
            })
        return evaluate(model, X, y, torch.device("cpu"))[1]

    everyone = accuracy(names)
    votes = MetricRecord({n: everyone - accuracy([m for m in names if m != n]) for n in names})
    return Message(content=RecordDict({VOTES_KEY: votes}), reply_to=message)
