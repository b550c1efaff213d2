"""The two-phase ballot over the Flower Grid, end to end: voters commit first and reveal once every commitment is in;
a reveal that does not open its commitment, or never comes, is a broken ballot.

The real ClientApp answers through the in-process grid; a grid that tampers with chosen replies plays the voter
that changes its mind, goes quiet or sends garbage.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import cast

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict

from fedlearn.config import RunConfig
from fedlearn.errors import ConfigError
from fedlearn.federation.institution import build_client_app
from fedlearn.federation.localgrid import LocalGrid
from fedlearn.federation.peer_votes import (
    BALLOT_KEY,
    COMMITMENT_KEY,
    REVEAL_KEY,
    REVEAL_MESSAGE,
    VOTE_MESSAGE,
    VOTES_KEY,
    BrokenBallot,
    Candidate,
    PeerRound,
    ballot_commitment,
    open_ballot,
    peer_scores,
    reveal_votes,
)
from fedlearn.federation.replies import ARRAYS_KEY, arrays_of, examples_of, institution_of
from fedlearn.federation.roster import roster
from fedlearn.learning.models import build_model
from fedlearn.scoring.votes import combine_votes

NOISY = "hospital-04"
CONFIG = RunConfig.load(overrides=[
    "data.institutions=5", "data.partition='iid'", "scoring.validation='peers'", "simulation.engine='local'",
    "train.learning_rate=0.05", "train.momentum=0.9", f"integrity.behaviours='{NOISY}=gaussian_noise:sigma=2'",
])
NAMES = [m.name for m in roster(CONFIG)]
SALT = "ab" * 32
# Replaces a reply (or drops it: None) as it comes back from a node.
Tamper = Callable[[Message, Message], Message | None]


class TamperingGrid(LocalGrid):
    """The in-process grid, with a hook that sees (message, reply) and may replace or drop the reply."""

    def __init__(self, tamper: Tamper | None = None) -> None:
        super().__init__(build_client_app(CONFIG), len(NAMES))
        self.tamper = tamper or (lambda message, reply: reply)
        self.seen: list[tuple[Message, Message]] = []

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for message in messages:
            reply = self.tamper(message, self._deliver(message))
            if reply is not None:
                self.seen.append((message, reply))
                replies.append(reply)
        return replies

    def state(self, name: str) -> RecordDict:
        return self._contexts[NAMES.index(name) + 1].state


def node(name: str) -> int:
    return NAMES.index(name) + 1


@pytest.fixture(scope="module")
def trained() -> tuple[ArrayRecord, list[Candidate]]:
    """(start model, candidates): one real training round of every institution, the noisy one included."""
    member = roster(CONFIG)[0]
    torch.manual_seed(0)
    start = ArrayRecord(build_model(CONFIG.model, member.data.X.shape[1], member.data.num_classes).state_dict())
    grid = TamperingGrid()
    messages = [Message(content=RecordDict({ARRAYS_KEY: start, "config": ConfigRecord({"server-round": 1})}),
                        dst_node_id=node(name), message_type="train") for name in NAMES]
    replies = list(grid.send_and_receive(messages))
    assert not any(r.has_error() for r in replies)
    return start, [(institution_of(r), r.metadata.src_node_id, arrays_of(r), examples_of(r)) for r in replies]


def ballot(grid: TamperingGrid, trained: tuple[ArrayRecord, list[Candidate]],
           stakes: Mapping[str, float] | None = None) -> PeerRound:
    """Round 1's ballot among every institution."""
    start, candidates = trained
    return peer_scores(grid, 1, start, candidates, NAMES, stakes)


def replace_in(phase: str, voter: str, change: Tamper) -> Tamper:
    """A tamper hook that applies ``change`` to ``voter``'s reply in ``phase`` (a message type) only."""
    def tamper(message: Message, reply: Message) -> Message | None:
        hit = message.metadata.message_type == phase and message.metadata.dst_node_id == node(voter)
        return change(message, reply) if hit else reply
    return tamper


# --- the protocol, honest -----------------------------------------------------------------------------------------


def test_honest_voters_commit_then_reveal_and_every_ballot_opens(trained: tuple[ArrayRecord, list[Candidate]]) -> None:
    grid = TamperingGrid()
    result = ballot(grid, trained)
    assert set(result.commitments) == set(NAMES) and result.broken == {}
    assert all(re.fullmatch(r"[0-9a-f]{64}", c) for c in result.commitments.values())
    assert {v: set(b) for v, b in result.votes.items()} == {v: set(NAMES) - {v} for v in NAMES}
    assert result.evaluations == len(NAMES) * (len(NAMES) - 1)
    assert set(result.scores) == set(NAMES) and set(result.voter_weights) == set(NAMES)
    # Phase 1 carries only the commitment; every reveal was asked for after the last commitment came in.
    kinds = [m.metadata.message_type for m, _ in grid.seen]
    assert kinds == [VOTE_MESSAGE] * len(NAMES) + [REVEAL_MESSAGE] * len(NAMES)
    for _, reply in grid.seen[:len(NAMES)]:
        assert list(reply.content.keys()) == [COMMITMENT_KEY]
    # Each voter kept its salt in its node state; the commitment is the canonical hash over round, votes and salt.
    for voter in NAMES:
        salt = grid.state(voter).config_records[BALLOT_KEY]["salt"]
        assert isinstance(salt, str) and len(bytes.fromhex(salt)) == 32 and result.salts[voter] == salt
        assert ballot_commitment(1, result.votes[voter], salt) == result.commitments[voter]
    # The votes themselves: the noisy update is scored lowest, and the scores are the combined opened ballots.
    assert result.scores[NOISY] == min(result.scores.values()) < 0
    combined = combine_votes(result.votes)
    assert result.disagreeing == combined.disagreeing
    assert all(result.scores[n] == (min(s, 0.0) if n in result.disagreeing else s)
               for n, s in combined.scores.items())


def test_salts_are_fresh_so_the_same_votes_commit_differently(trained: tuple[ArrayRecord, list[Candidate]]) -> None:
    first, second = ballot(TamperingGrid(), trained), ballot(TamperingGrid(), trained)
    assert first.votes == second.votes and first.scores == second.scores
    assert all(first.commitments[v] != second.commitments[v] for v in NAMES)


def test_stakes_reach_the_consensus(trained: tuple[ArrayRecord, list[Candidate]]) -> None:
    # One voter holding most of the stake decides every score but its own.
    heavy = NAMES[0]
    result = ballot(TamperingGrid(), trained, stakes={n: 100.0 if n == heavy else 1.0 for n in NAMES})
    assert all(result.scores[p] == pytest.approx(result.votes[heavy][p]) for p in NAMES
               if p != heavy and p not in result.disagreeing)
    with pytest.raises(ConfigError, match="no stake given"):
        ballot(TamperingGrid(), trained, stakes={heavy: 1.0})
    # Each ballot records the stake it was weighed by, so the consensus can be rechecked from the record alone.
    assert {v: b["stake"] for v, b in result.ballots().items()} == {n: 100.0 if n == heavy else 1.0 for n in NAMES}
    assert all("stake" not in b for b in ballot(TamperingGrid(), trained).ballots().values())


def test_when_the_only_staked_voters_ballot_breaks_nobody_is_graded(
        trained: tuple[ArrayRecord, list[Candidate]]) -> None:
    # Prepare: one voter holds all the stake (in wei, beyond a float's 53 bits); its reveal is dropped.
    heavy = NAMES[0]
    stakes = {n: 10 * 10**18 if n == heavy else 0 for n in NAMES}
    # Execute
    result = ballot(TamperingGrid(replace_in(REVEAL_MESSAGE, heavy, dropped)), trained, stakes=stakes)
    # Assert: the round goes on with no consensus (every proposer scores 0, nobody is paid to validate) rather
    # than failing; the other voters' ballots opened, and say nothing without stake.
    assert result.broken == {heavy: "it revealed nothing"} and set(result.votes) == set(NAMES) - {heavy}
    assert all(score == 0.0 for score in result.scores.values()) and not any(result.rewards.values())
    assert result.ballots()[heavy]["stake"] == 10 * 10**18


# --- broken ballots -------------------------------------------------------------------------------------------------


def changed_vote(message: Message, reply: Message) -> Message:
    votes = reply.content.metric_records[VOTES_KEY]
    proposer = sorted(votes)[0]
    votes[proposer] = float(cast(float, votes[proposer])) + 0.5
    return reply


def dropped(message: Message, reply: Message) -> None:
    return None


def failed(message: Message, reply: Message) -> Message:
    return Message(Error(code=4, reason="node went away"), reply_to=message)


def garbage_commitment(message: Message, reply: Message) -> Message:
    return Message(RecordDict({COMMITMENT_KEY: ConfigRecord({"sha256": "trust me"})}), reply_to=message)


@pytest.mark.parametrize(("phase", "change", "reason"), [
    (REVEAL_MESSAGE, changed_vote, "its reveal does not match its commitment"),
    (REVEAL_MESSAGE, dropped, "it revealed nothing"),
    (REVEAL_MESSAGE, failed, "its reveal failed: node went away"),
    (VOTE_MESSAGE, garbage_commitment, "its commitment is not a sha256 hex digest"),
])
def test_a_broken_ballot_is_ignored_and_its_voter_disagrees(
        trained: tuple[ArrayRecord, list[Candidate]], phase: str, change: Tamper, reason: str) -> None:
    cheat = "hospital-02"
    honest = ballot(TamperingGrid(), trained)
    result = ballot(TamperingGrid(replace_in(phase, cheat, change)), trained)
    assert result.broken == {cheat: reason}
    assert cheat in result.disagreeing and result.voter_weights[cheat] == 0.0
    assert cheat not in result.votes and cheat not in result.salts  # none of its votes count ...
    others = {v: b for v, b in honest.votes.items() if v != cheat}
    assert result.votes == others  # ... and everyone else's do, unchanged
    expected = combine_votes(others)
    assert result.scores[cheat] == min(expected.scores[cheat], 0.0)  # it earns nothing for its own update
    assert all(result.scores[p] == expected.scores[p] for p in NAMES if p not in result.disagreeing)
    assert result.disagreeing == expected.disagreeing | {cheat}


def test_voters_are_paid_for_agreeing_out_of_the_rounds_positive_scores(
        trained: tuple[ArrayRecord, list[Candidate]]) -> None:
    """Rechecked from the opened ballots alone: the consensus, the disagreeing voters' caps, then a tenth of the
    positive scores split among the voters by agreement weight; a broken ballot's voter gets no share."""
    start, candidates = trained
    cheat = "hospital-02"
    result = peer_scores(TamperingGrid(replace_in(REVEAL_MESSAGE, cheat, dropped)), 1, start, candidates, NAMES,
                         validator_share=0.1)
    combined = combine_votes(result.votes)
    before = {p: min(s, 0.0) if p in result.disagreeing else s for p, s in combined.scores.items()}
    pot = 0.1 * sum(max(s, 0.0) for s in before.values())
    weights = {v: w for v, w in combined.voter_weights.items() if w > 0}
    assert pot > 0 and cheat not in result.rewards and set(result.rewards) == set(weights)
    for voter, reward in result.rewards.items():
        assert reward == pytest.approx(pot * weights[voter] / sum(weights.values()))
        assert result.ballots()[voter]["reward"] == reward
    assert result.ballots()[cheat]["reward"] == 0.0
    for p, s in before.items():
        assert result.scores[p] == pytest.approx((0.9 * s if s > 0 else s) + result.rewards.get(p, 0.0))


def test_a_voter_silent_in_phase_one_is_left_out_unpunished(trained: tuple[ArrayRecord, list[Candidate]]) -> None:
    quiet = "hospital-03"
    result = ballot(TamperingGrid(replace_in(VOTE_MESSAGE, quiet, failed)), trained)
    assert quiet not in result.commitments and quiet not in result.votes and quiet not in result.broken
    assert quiet not in result.voter_weights and quiet not in result.disagreeing
    assert set(result.scores) == set(NAMES) and result.broken == {}


# --- opening a ballot directly ----------------------------------------------------------------------------------


def metrics(votes: Mapping[str, float]) -> MetricRecord:
    return MetricRecord({k: float(v) for k, v in votes.items()})


def reveal_content(votes: Mapping[str, float], salt: str = SALT) -> RecordDict:
    return RecordDict({VOTES_KEY: metrics(votes), REVEAL_KEY: ConfigRecord({"salt": salt})})


def test_the_commitment_is_sha256_over_the_canonical_ballot() -> None:
    canonical = '{"round":3,"salt":"' + SALT + '","votes":{"a":0.5,"b":-0.25,"c":1.0}}'
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert ballot_commitment(3, {"c": 1, "b": -0.25, "a": 0.5}, SALT) == expected  # any order; an int as a float
    assert ballot_commitment(3, {"a": 0.5, "b": -0.25, "c": 1.0}, SALT) == expected
    assert ballot_commitment(4, {"a": 0.5, "b": -0.25, "c": 1.0}, SALT) != expected
    assert ballot_commitment(3, {"a": 0.5, "b": -0.25, "c": 1.0 + 2**-52}, SALT) != expected  # every bit counts


def test_open_ballot_returns_the_votes_only_when_they_match() -> None:
    votes = {"a": 0.5, "b": -0.25, "c": float("nan")}  # a broken vote can still be revealed (and is judged later)
    commitment = ballot_commitment(2, votes, SALT)
    opened = open_ballot(2, commitment, reveal_content(votes))
    assert opened.keys() == votes.keys() and opened["a"] == 0.5 and opened["c"] != opened["c"]
    cases = [
        (2, reveal_content({**votes, "a": 0.6}), "does not match"),
        (2, reveal_content({"a": 0.5, "b": -0.25}), "does not match"),  # a vote withheld
        (3, reveal_content(votes), "does not match"),  # another round's commitment
        (2, reveal_content(votes, "cd" * 32), "does not match"),
        (2, reveal_content(votes, "xyz"), "32 bytes of hex"),
        (2, RecordDict({VOTES_KEY: metrics(votes)}), "lacks the votes or the salt"),
        (2, RecordDict({VOTES_KEY: MetricRecord({"a": [0.5, 0.5]}), REVEAL_KEY: ConfigRecord({"salt": SALT})}),
         "not a number"),
    ]
    for server_round, content, fragment in cases:
        with pytest.raises(BrokenBallot, match=fragment):
            open_ballot(server_round, commitment, content)


def test_a_voter_reveals_only_the_round_it_committed_to() -> None:
    state = RecordDict()
    asking = Message(RecordDict({"config": ConfigRecord({"server-round": 5})}), dst_node_id=1,
                     message_type=REVEAL_MESSAGE)
    with pytest.raises(LookupError, match="no ballot committed for round 5"):
        reveal_votes(asking, state)
    state[BALLOT_KEY] = ConfigRecord({"server-round": 4, "salt": SALT})
    state["peer-ballot-votes"] = MetricRecord({"a": 0.1})
    with pytest.raises(LookupError, match="round 5"):
        reveal_votes(asking, state)
    state[BALLOT_KEY] = ConfigRecord({"server-round": 5, "salt": SALT})
    reply = reveal_votes(asking, state)
    assert open_ballot(5, ballot_commitment(5, {"a": 0.1}, SALT), reply.content) == {"a": 0.1}


def test_the_client_app_answers_both_phases() -> None:
    app = build_client_app(CONFIG)
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": len(NAMES)},
                      state=RecordDict(), run_config={})
    with pytest.raises(LookupError, match="no ballot committed for round 1"):  # routed to the reveal handler
        app(Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=1,
                    message_type=REVEAL_MESSAGE), context)
