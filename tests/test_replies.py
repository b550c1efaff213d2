"""Reply checks: a bad reply is set aside with a reason naming the institution, never aggregated."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode

from fedlearn.federation.replies import Rejection, answering_node, check_reply, institution_of, partition_replies
from tests.conftest import ReplyFactory, arrays_of

REFERENCE = arrays_of({"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)})


def good(**overrides: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {"w": np.ones((2, 3), np.float32), "b": np.ones(2, np.float32)}
    arrays.update(overrides)
    return arrays


def test_a_well_formed_reply_passes(make_reply: ReplyFactory) -> None:
    assert check_reply(make_reply(good()), REFERENCE) is None


@pytest.mark.parametrize(
    ("arrays", "examples", "expected"),
    [
        (good(w=np.ones((3, 2), np.float32)), 10, "has shape (3, 2), expected (2, 3)"),
        (good(w=np.full((2, 3), np.nan, np.float32)), 10, "NaN or Inf"),
        (good(b=np.array([np.inf, 0], np.float32)), 10, "NaN or Inf"),
        (good(b=np.array([1, 2], np.int64)), 10, "expected a float type"),
        ({"w": np.ones((2, 3), np.float32)}, 10, "array names differ"),
        (good(), 0, "is not a whole positive count"),
        (good(), -5, "is not a whole positive count"),
        (good(), float("nan"), "is not a whole positive count"),
        (good(), 10**12, "is not a whole positive count"),
        (good(), 0.5, "is not a whole positive count"),
        (good(), 12.25, "is not a whole positive count"),
    ],
)
def test_bad_replies_are_rejected_with_a_reason(
    make_reply: ReplyFactory, arrays: dict[str, np.ndarray], examples: float, expected: str
) -> None:
    reason = check_reply(make_reply(arrays, examples=examples), REFERENCE)
    assert reason is not None and expected in reason


def test_reply_without_an_institution_name_is_rejected(make_reply: ReplyFactory) -> None:
    reply = make_reply(good(), institution=None, node_id=42)
    assert check_reply(reply, REFERENCE) == "reply names no institution"
    assert institution_of(reply) == "node-42"


def test_client_error_reply_is_rejected() -> None:
    instruction = Message(content=RecordDict(), dst_node_id=3, message_type="train")
    reply = Message(Error(code=0, reason="out of memory"), reply_to=instruction)
    assert check_reply(reply, REFERENCE) == "client error: out of memory"


def test_partition_sorts_by_name_and_rejects_duplicates(make_reply: ReplyFactory) -> None:
    replies = [
        make_reply(good(), institution="hospital-03"),
        make_reply(good(), institution="hospital-01"),
        make_reply(good(w=np.full((2, 3), np.nan, np.float32)), institution="hospital-02"),
        make_reply(good(), institution="hospital-01"),
    ]
    accepted, rejected, unanswered = partition_replies(replies, REFERENCE)
    assert unanswered == []
    assert [institution_of(m) for m in accepted] == ["hospital-01", "hospital-03"]
    assert {(r.institution, r.reason.split(":")[0]) for r in rejected} == {
        ("hospital-02", "array 'w' holds NaN or Inf"),
        ("hospital-01", "institution replied twice in one round"),
    }


def test_a_node_that_went_away_is_missing_and_a_crashed_clientapp_is_its_own_institutions_error(
        make_reply: ReplyFactory) -> None:
    # Prepare: a pilot of two registered nodes. Node 7 (clinic-a) replies; node 8's ClientApp raises (its data file
    # went bad); the SuperLink answers for node 9 (clinic-c), which stopped sending heartbeats.
    nodes = {7: "clinic-a", 8: "clinic-b", 9: "clinic-c"}
    crashed = Message(Error(code=0, reason="ValueError: unreadable data"),
                      reply_to=Message(content=RecordDict(), dst_node_id=8, message_type="train"))
    to_c = Message(content=RecordDict(), dst_node_id=9, message_type="train")
    to_c.metadata.__dict__["_message_id"] = "to-clinic-c"  # as pushing the instruction sets it
    gone = Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="Error: Node Unavailable"), reply_to=to_c)
    gone.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID  # what the SuperLink's own error replies carry
    # Execute
    # An in-process node may be node 1 too: its ClientApp's error is still its own.
    first = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="OSError: disk"),
                    reply_to=Message(content=RecordDict(), dst_node_id=SUPERLINK_NODE_ID, message_type="train"))
    accepted, rejected, unanswered = partition_replies(
        [make_reply(good(), institution="clinic-a", node_id=7), crashed, gone], REFERENCE, nodes, [to_c])
    assert partition_replies([first], REFERENCE)[1:] == (
        [Rejection("node-1", "client error: OSError: disk", evidence=False)], [])
    # Assert: clinic-b's rejection says what happened (not an impersonation) and is no evidence for slashing (a
    # crash sends nothing), clinic-c is missing (not rejected), and no phantom "node-1" is recorded.
    assert [institution_of(m) for m in accepted] == ["clinic-a"]
    assert [(r.institution, r.reason, r.evidence) for r in rejected] == [
        ("clinic-b", "client error: ValueError: unreadable data", False)]
    assert unanswered == [(9, "Error: Node Unavailable")]
    # Peer votes ask who a reply answers for the same way: the node the instruction went to.
    assert [answering_node(r, [to_c]) for r in (gone, crashed)] == [9, 8]


def test_an_unchanged_global_model_is_a_free_ride(make_reply: ReplyFactory) -> None:
    unchanged = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)}
    assert check_reply(make_reply(unchanged, examples=10_000), REFERENCE) == (
        "update is identical to the global model (no local training)"
    )
