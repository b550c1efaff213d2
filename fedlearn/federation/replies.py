"""Checks every training reply before it may be aggregated or scored.

A bad reply (an error, wrong shapes, NaN/Inf, a non-positive or absurd example count, no institution name) is
set aside with a reason; it scores 0 and the round goes on without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode

from fedlearn.records.fingerprint import model_hash

ARRAYS_KEY = "arrays"
METRICS_KEY = "metrics"
META_KEY = "meta"
EXAMPLES_KEY = "num-examples"
INSTITUTION_KEY = "institution"
# No institution holds more rows than this; a larger claim is treated as a lie about its weight.
MAX_EXAMPLES = 10**9
CLAIMED_KEY = "claimed-examples"  # what the reply said, kept beside the count the coordinator stands behind
WEIGHTINGS = ("registered", "equal", "claimed")


@dataclass(frozen=True)
class Rejection:
    institution: str
    reason: str
    # Whether the rejection counts as a bad round for slashing: False for a free-rider set-aside in a round the
    # check could not read with confidence (fedlearn.federation.free_riders.POWER), and for an error the
    # institution's own ClientApp raised (a crash sends nothing: it is absence, not misconduct).
    evidence: bool = True
    # The hash of the weights the reply carried (fedlearn.records.fingerprint.model_hash), where it carried any:
    # what a slash for the offence rests on. None: no weights to hash (a crash, an unregistered node).
    update_hash: str | None = None


def sent_hash(reply: Message) -> str | None:
    """The hash of the weights ``reply`` carried, or None where it carried none that decode."""
    try:
        return model_hash({name: array.numpy() for name, array in arrays_of(reply).items()})
    except Exception:  # noqa: BLE001 - a reply without decodable weights has nothing to hash
        return None


def arrays_of(reply: Message) -> ArrayRecord:
    """The weights a checked reply carries."""
    return reply.content.array_records[ARRAYS_KEY]


def examples_of(reply: Message) -> int:
    """The example count a checked reply claims (check_reply made sure it is a positive number)."""
    value = reply.content.metric_records[METRICS_KEY][EXAMPLES_KEY]
    if not isinstance(value, (int, float)):
        raise TypeError(f"{EXAMPLES_KEY} is not a number in an unchecked reply")
    return int(value)


def claimed_of(reply: Message) -> int:
    """The example count a weighed reply claimed: weighting keeps it beside the count it stands behind (which
    "equal" weighting sets to 1)."""
    claimed = reply.content.metric_records[METRICS_KEY].get(CLAIMED_KEY)
    return int(claimed) if isinstance(claimed, (int, float)) else examples_of(reply)


def institution_of(reply: Message) -> str:
    """The institution a reply names, or a node label when it names none."""
    if not reply.has_error():
        meta = reply.content.config_records.get(META_KEY)
        if meta is not None and isinstance(meta.get(INSTITUTION_KEY), str) and meta[INSTITUTION_KEY]:
            return str(meta[INSTITUTION_KEY])
    return f"node-{reply.metadata.src_node_id}"


def check_reply(reply: Message, reference: ArrayRecord) -> str | None:
    """Why ``reply`` cannot be used against the round's global arrays ``reference``; None when it can."""
    if reply.has_error():
        return f"client error: {reply.error.reason}"
    content = reply.content
    meta = content.config_records.get(META_KEY)
    if meta is None or not isinstance(meta.get(INSTITUTION_KEY), str) or not meta[INSTITUTION_KEY]:
        return "reply names no institution"
    if len(content.array_records) != 1 or ARRAYS_KEY not in content.array_records:
        return f"expected exactly one ArrayRecord under {ARRAYS_KEY!r}"
    if len(content.metric_records) != 1 or METRICS_KEY not in content.metric_records:
        return f"expected exactly one MetricRecord under {METRICS_KEY!r}"
    examples = content.metric_records[METRICS_KEY].get(EXAMPLES_KEY)
    if isinstance(examples, bool) or not isinstance(examples, (int, float)):
        return f"{EXAMPLES_KEY} missing or not a number"
    # A count is whole: 0.5 would weigh a reply while int() made it 0 wherever counts are used as integers.
    if not math.isfinite(examples) or examples < 1 or examples > MAX_EXAMPLES or examples != int(examples):
        return f"{EXAMPLES_KEY} = {examples} is not a whole positive count"
    arrays = content.array_records[ARRAYS_KEY]
    if set(arrays.keys()) != set(reference.keys()):
        return "array names differ from the global model's"
    for name, ref in reference.items():
        try:
            value = arrays[name].numpy()
        except Exception as exc:  # noqa: BLE001 - any undecodable array makes the reply unusable
            return f"array {name!r} cannot be decoded: {exc}"
        if tuple(value.shape) != tuple(ref.shape):
            return f"array {name!r} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
        if not np.issubdtype(value.dtype, np.floating):
            return f"array {name!r} has dtype {value.dtype}, expected a float type"
        if not np.isfinite(value).all():
            return f"array {name!r} holds NaN or Inf"
    # Weights identical to the global model: nothing was trained, yet examples are claimed (a free ride).
    if all(np.array_equal(arrays[name].numpy(), ref.numpy()) for name, ref in reference.items()):
        return "update is identical to the global model (no local training)"
    return None


# What the SuperLink sends in place of a reply that never came (a node gone, a message expired); an in-process
# node may have id 1 as well, but its ClientApp's errors carry other codes.
SUPERLINK_ERRORS = frozenset({ErrorCode.NODE_UNAVAILABLE, ErrorCode.MESSAGE_UNAVAILABLE,
                              ErrorCode.REPLY_MESSAGE_UNAVAILABLE})


def is_superlink_error(reply: Message) -> bool:
    """Whether ``reply`` is an error the SuperLink sent in place of a node's reply (a node gone, a message
    expired): it comes from the SuperLink's own node id, with one of its codes."""
    return (reply.has_error() and reply.error.code in SUPERLINK_ERRORS
            and int(reply.metadata.src_node_id) == SUPERLINK_NODE_ID)


def instructed_node(reply: Message, sent: Sequence[Message]) -> int | None:
    """The node the instruction ``reply`` answers went to (``sent``: the instructions, pushed, so they carry their
    ids); ``None`` when it is not among them."""
    for message in sent:
        if message.metadata.message_id == reply.metadata.reply_to_message_id:
            return int(message.metadata.dst_node_id)
    return None


def answering_node(reply: Message, sent: Sequence[Message]) -> int:
    """The node ``reply`` answers for: its sender, or for an error the SuperLink sent in its place, the node the
    instruction went to."""
    node = instructed_node(reply, sent) if is_superlink_error(reply) else None
    return int(reply.metadata.src_node_id) if node is None else node


def partition_replies(
    replies: list[Message], reference: ArrayRecord, nodes: Mapping[int, str] | None = None,
    sent: Sequence[Message] = (),
) -> tuple[list[Message], list[Rejection], list[tuple[int | None, str]]]:
    """(usable replies sorted by institution name, rejections, unanswered); a repeated institution is rejected.

    ``nodes``: in a pilot, the institution each authenticated node was registered for at provisioning. A reply is
    then its node's institution's, whatever name it gives: one claiming another's name is set aside and recorded
    under its own node's institution; one from an unregistered node is set aside; an error its ClientApp raised
    is that institution's client error (no evidence for slashing). ``unanswered``: (the node the instruction went
    to, among ``sent``, else ``None``; the reason) of each error the SuperLink sent in place of a reply (a node that
    went away): the institution is missing from the round, not rejected, and no phantom name is recorded for it."""
    accepted: dict[str, Message] = {}
    rejected: list[Rejection] = []
    unanswered: list[tuple[int | None, str]] = []
    for reply in replies:
        if is_superlink_error(reply):
            unanswered.append((instructed_node(reply, sent), reply.error.reason or "no reason given"))
            continue
        name = institution_of(reply)
        if nodes is not None:
            node = int(reply.metadata.src_node_id)
            owner = nodes.get(node)
            if owner is None:
                rejected.append(Rejection(name, f"node {node} is not registered for any institution"))
                continue
            if reply.has_error():  # an error reply names nobody: it is its node's institution's
                rejected.append(Rejection(owner, f"client error: {reply.error.reason}", evidence=False))
                continue
            if name != owner:
                rejected.append(Rejection(owner, f"replied under the name {name!r}, but its node {node} is "
                                                 f"registered for {owner}"))
                continue
        reason = check_reply(reply, reference)
        if reason is None and name in accepted:
            reason = "institution replied twice in one round"
        if reason is None:
            accepted[name] = reply
        else:
            rejected.append(Rejection(name, reason, evidence=not reply.has_error(),
                                      update_hash=None if reply.has_error() else sent_hash(reply)))
    # Sorted by name so aggregation order, and so every score, is independent of arrival order.
    return [accepted[name] for name in sorted(accepted)], rejected, unanswered


def apply_weighting(
    accepted: list[Message], rule: str, registered: Mapping[str, int] | None
) -> tuple[list[Message], list[Rejection]]:
    """Replace each accepted reply's example count with one the coordinator can stand behind.

    ``registered``: the claim, which may not exceed the count registered for the institution: a reply that
    claims more is a lie about its weight and is set aside (it earns nothing that round, and counts towards
    slashing), as is a name the federation never registered; ``equal``: every reply weighs 1;
    ``claimed``: the reply's own count (trusts participants; an explicit, unsafe option). The claim is kept under
    ``claimed-examples``. Every wrapped strategy, the coalition models and peer votes read the replaced count.
    """
    if rule not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {rule!r} (choose from {', '.join(WEIGHTINGS)})")
    if rule == "registered" and registered is None:
        raise ValueError("weighting 'registered' needs the registered example counts")
    kept: list[Message] = []
    rejected: list[Rejection] = []
    for reply in accepted:
        name = institution_of(reply)
        metrics = reply.content.metric_records[METRICS_KEY]
        claimed = examples_of(reply)
        if rule == "registered":
            assert registered is not None
            if name not in registered:
                rejected.append(Rejection(name, "not an institution registered in this federation"))
                continue
            if claimed > int(registered[name]):
                rejected.append(Rejection(name, f"claims {claimed} examples, more than the {int(registered[name])} "
                                                "registered for it", update_hash=sent_hash(reply)))
                continue
            weight = claimed
        elif rule == "equal":
            weight = 1
        else:
            weight = claimed
        metrics[CLAIMED_KEY] = claimed
        metrics[EXAMPLES_KEY] = weight
        kept.append(reply)
    return kept, rejected
