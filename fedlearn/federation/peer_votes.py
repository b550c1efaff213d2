"""Peer validation, FLock style: voters score the round's candidate updates on their own local data, committing
to their votes before revealing them.

A round's ballot runs in two phases over the Flower Grid; :func:`peer_scores` runs both and combines the votes.

1. Commit. The server sends each voter one ``query.vote`` message carrying every candidate update (except the
   voter's own) with its example count, and the round. The voter forms their example-weighted mean, as FedAvg
   would, and votes for each candidate its leave-one-out contribution on the voter's local validation split:
   the utility (minus the Brier score, smooth where accuracy on a few dozen rows moves in steps) of the mean of
   all minus that of the mean without that candidate. An honest update in a crowd of honest ones scores about 0,
   a harmful one below 0. The voter keeps its votes and a fresh random 32-byte salt
   in its node state (``Context.state``, which persists between a run's messages) and replies only the
   commitment, the sha256 of the canonical ballot (:func:`ballot_commitment`).
2. Reveal. Once every commitment is in, the server sends each voter that committed a ``query.reveal`` message;
   the voter replies the votes and the salt it kept. The server recomputes the commitment
   (:func:`open_ballot`). A reveal that is missing, malformed or does not match, like a commitment that is not
   a sha256 digest, is a broken ballot: its votes are ignored and the voter counts as disagreeing.

A voter that sends no commitment at all is left out of the round, not penalised: an outage is not an offence,
and it learnt nothing it could exploit. A voter is bound to its votes before any ballot is opened, and the
commitments, once recorded (or posted on chain, as FLock's contracts do), let anyone check later that the votes
combined are the ones committed. Votes are combined by stake-weighted consensus in fedlearn.scoring.votes; a
voter that disagrees with the consensus earns nothing for its own update that round, and a voter is paid for
validating in proportion to how far it agreed (``integrity.validator_share`` of the round's positive scores).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from torch import nn

from fedlearn.federation.coalitions import per_example_utility
from fedlearn.federation.replies import answering_node
from fedlearn.logs import log as money_log
from fedlearn.scoring.votes import combine_votes, pay_validators

VOTE_MESSAGE = "query.vote"
REVEAL_MESSAGE = "query.reveal"
START_KEY = "start"
CANDIDATE_PREFIX = "candidate:"
VOTES_KEY = "votes"
WEIGHTS_KEY = "weights"
CONFIG_KEY = "config"
ROUND_KEY = "server-round"
COMMITMENT_KEY = "commitment"  # phase 1 reply: ConfigRecord {DIGEST_KEY: sha256 hex}
DIGEST_KEY = "sha256"
REVEAL_KEY = "reveal"  # phase 2 reply: ConfigRecord {SALT_KEY: hex}, beside the votes
SALT_KEY = "salt"
BALLOT_KEY = "peer-ballot"  # node state: the committed ballot's round and salt (ConfigRecord)
BALLOT_VOTES_KEY = "peer-ballot-votes"  # node state: the committed ballot's votes (MetricRecord)
SALT_BYTES = 32
# Share of each member's data held out as its local validation split when peers vote.
LOCAL_VALIDATION_FRACTION = 0.2
# Seconds the server waits for each phase's replies.
BALLOT_TIMEOUT = 3600.0

_DIGEST = re.compile(r"[0-9a-f]{64}")
_SALT = re.compile(rf"[0-9a-f]{{{2 * SALT_BYTES}}}")

Candidate = tuple[str, int, ArrayRecord, int]
"""(proposer, its node id, its update, its example count)."""


class BrokenBallot(ValueError):
    """A reveal that does not open its commitment; the message says why."""


@dataclass(frozen=True)
class PeerRound:
    """One round of peer validation, ready to record.

    ``scores``: every candidate proposer's score; a disagreeing voter's is capped at 0 (it earns nothing for its
    own update that round, and a negative score still stands); then each voter's validation reward is added
    (``rewards``: voter → that reward, by agreement). ``disagreeing``: voters whose ballot disagreed
    with the consensus or was broken. ``evaluations``: votes counted (in ballots that opened).
    ``commitments``: voter → the sha256 hex it committed to, for every voter that committed. ``voter_weights``:
    each judged voter's agreement in [0, 1] (0 for a broken ballot). ``votes``: the opened ballots, voter →
    {proposer: vote}; ``salts``: the salts that opened them, so that anyone holding the record can recheck every
    commitment with :func:`ballot_commitment`. ``broken``: voter → why its ballot was void. ``stakes``: each
    voter's stake as the votes were weighed by it (empty: equally).
    """

    scores: dict[str, float]
    disagreeing: frozenset[str]
    evaluations: int
    commitments: dict[str, str]
    voter_weights: dict[str, float]
    votes: dict[str, dict[str, float]] = field(default_factory=dict)
    salts: dict[str, str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    rewards: dict[str, float] = field(default_factory=dict)
    stakes: Mapping[str, float] = field(default_factory=dict)

    def ballots(self) -> dict[str, dict]:
        """voter → its ballot as recorded (``commitment``, ``salt``, ``votes``, ``weight``, ``stake`` when the
        votes were weighed by stake, and ``broken`` with the reason when it did not open), for every voter that
        committed."""
        return {voter: {"commitment": commitment, "salt": self.salts.get(voter, ""),
                        "votes": self.votes.get(voter, {}), "weight": self.voter_weights.get(voter, 0.0),
                        "reward": self.rewards.get(voter, 0.0),
                        **({"stake": self.stakes[voter]} if voter in self.stakes else {}),
                        **({"broken": self.broken[voter]} if voter in self.broken else {})}
                for voter, commitment in self.commitments.items()}


def peer_scores(
    grid: Grid, server_round: int, start: ArrayRecord, candidates: list[Candidate], voters: list[str],
    stakes: Mapping[str, float] | None = None,
    validator_share: float = 0.0,
    unpaid: Collection[str] = (),
) -> PeerRound:
    """Run the round's ballot (commit, then reveal) among ``voters`` and combine the opened ballots.

    ``candidates``: (proposer, node id, update, examples), one per proposer; every voter must be one of them
    (its node id is looked up there). ``stakes``: each voter's stake (``None``: equal); see
    :func:`fedlearn.scoring.votes.combine_votes`, whose ConfigError it raises for invalid stakes. Votes on
    proposers that are not candidates are dropped. ``validator_share`` of the positive score mass pays the voters
    by agreement (:func:`fedlearn.scoring.votes.pay_validators`; ``unpaid`` proposers' scores fund none of it); the
    scores returned include those rewards.
    """
    combine_votes(dict.fromkeys(voters, {}), stakes=stakes)  # invalid stakes fail before any voter works
    node_of = {name: node for name, node, _, _ in candidates}
    commitments, broken = request_commitments(grid, server_round, start, candidates, voters)
    opened, failed = request_reveals(grid, server_round, commitments, {v: node_of[v] for v in commitments})
    broken.update(failed)
    names = set(node_of)
    votes = {voter: {p: v for p, v in ballot.items() if p in names} for voter, (ballot, _) in opened.items()}
    for voter, reason in sorted(broken.items()):
        money_log.warning("round %d: ballot of voter %s is broken: %s", server_round, voter, reason)

    # With stakes, a round whose opened ballots hold none (the staked voters' broke) has no consensus: nobody is
    # graded, rather than the round failing.
    weighed = stakes is None or any(stakes[voter] > 0 for voter in votes)
    combined = combine_votes(votes if weighed else {}, stakes=stakes)
    disagreeing = combined.disagreeing | frozenset(broken)
    scores = {name: combined.scores.get(name, 0.0) for name in node_of}
    for voter in disagreeing:  # earns nothing this round; a harmful update's negative score is not forgiven
        if voter in scores:
            scores[voter] = min(scores[voter], 0.0)
    weights = {**combined.voter_weights, **dict.fromkeys(broken, 0.0)}
    scores, rewards = pay_validators(scores, weights, validator_share, stakes=stakes, unpaid=unpaid)
    return PeerRound(
        scores=scores,
        disagreeing=disagreeing,
        evaluations=sum(len(ballot) for ballot in votes.values()),
        commitments=commitments,
        voter_weights=weights,
        votes=votes,
        salts={voter: salt for voter, (_, salt) in opened.items()},
        broken=broken,
        rewards=rewards,
        stakes={} if stakes is None else {voter: stakes[voter] for voter in voters},
    )


def request_commitments(
    grid: Grid, server_round: int, start: ArrayRecord, candidates: list[Candidate], voters: list[str],
) -> tuple[dict[str, str], dict[str, str]]:
    """Phase 1: send the candidates to ``voters``; (voter → commitment, voter → why its commitment is void).

    A voter that replies an error is logged and left out of both."""
    node_of = {name: node for name, node, _, _ in candidates}
    messages = []
    for voter in voters:
        weights = ConfigRecord({name: examples for name, _, _, examples in candidates if name != voter})
        content = RecordDict({START_KEY: start, WEIGHTS_KEY: weights,
                              CONFIG_KEY: ConfigRecord({ROUND_KEY: server_round})})
        for proposer, _, arrays, _ in candidates:
            if proposer != voter:
                content[CANDIDATE_PREFIX + proposer] = arrays
        messages.append(Message(content=content, dst_node_id=node_of[voter], message_type=VOTE_MESSAGE))
    voter_of = {node_of[v]: v for v in voters}
    commitments: dict[str, str] = {}
    broken: dict[str, str] = {}
    for reply in grid.send_and_receive(messages, timeout=BALLOT_TIMEOUT):
        sender = voter_of.get(answering_node(reply, messages))
        if sender is None:
            continue
        if reply.has_error():  # its proposers are scored by the other voters; say who was silent and why
            money_log.warning("round %d: voter %s sent no votes: %s", server_round, sender, reply.error.reason)
            continue
        record = reply.content.config_records.get(COMMITMENT_KEY)
        digest = record.get(DIGEST_KEY) if record is not None else None
        if isinstance(digest, str) and _DIGEST.fullmatch(digest):
            commitments[sender] = digest
        else:
            broken[sender] = "its commitment is not a sha256 hex digest"
    return commitments, broken


def request_reveals(
    grid: Grid, server_round: int, commitments: Mapping[str, str], node_of: Mapping[str, int],
) -> tuple[dict[str, tuple[dict[str, float], str]], dict[str, str]]:
    """Phase 2, once every commitment is in: ask each committed voter to reveal; (voter → (opened votes, salt),
    voter → why its reveal is void). A voter that does not answer has a broken ballot."""
    voter_of = {node_of[v]: v for v in commitments}
    messages = [Message(content=RecordDict({CONFIG_KEY: ConfigRecord({ROUND_KEY: server_round})}),
                        dst_node_id=node_of[voter], message_type=REVEAL_MESSAGE) for voter in commitments]
    opened: dict[str, tuple[dict[str, float], str]] = {}
    broken = {voter: "it revealed nothing" for voter in commitments}
    for reply in grid.send_and_receive(messages, timeout=BALLOT_TIMEOUT):
        voter = voter_of.get(answering_node(reply, messages))
        if voter is None or voter in opened:
            continue
        if reply.has_error():
            broken[voter] = f"its reveal failed: {reply.error.reason}"
            continue
        try:
            votes = open_ballot(server_round, commitments[voter], reply.content)
        except BrokenBallot as exc:
            broken[voter] = str(exc)
        else:
            opened[voter] = votes, cast(str, reply.content.config_records[REVEAL_KEY][SALT_KEY])
            del broken[voter]
    return opened, broken


def ballot_commitment(server_round: int, votes: Mapping[str, float], salt: str) -> str:
    """sha256 (lowercase hex) of the canonical ballot: the UTF-8 bytes of the JSON object
    ``{"round": server_round, "salt": salt, "votes": {proposer: float(vote)}}`` with sorted keys, no whitespace
    (``separators=(",", ":")``), ASCII escapes, and floats as Python writes them (their shortest exact repr;
    NaN and ±Infinity as JSON's ``NaN``/``Infinity`` extensions, so a broken vote can still be revealed).
    The round binds the commitment to one ballot; the secret salt keeps the votes from being guessed."""
    payload = json.dumps({"round": int(server_round), "salt": salt,
                          "votes": {str(p): float(v) for p, v in votes.items()}},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def open_ballot(server_round: int, commitment: str, content: RecordDict) -> dict[str, float]:
    """The votes in a reveal's ``content`` (a MetricRecord of votes and a ConfigRecord holding the salt), if they
    and the salt hash to ``commitment`` for ``server_round``; raises BrokenBallot saying why not."""
    record = content.metric_records.get(VOTES_KEY)
    reveal = content.config_records.get(REVEAL_KEY)
    if record is None or reveal is None:
        raise BrokenBallot("its reveal lacks the votes or the salt")
    salt = reveal.get(SALT_KEY)
    if not isinstance(salt, str) or not _SALT.fullmatch(salt):
        raise BrokenBallot(f"its salt is not {SALT_BYTES} bytes of hex")
    votes: dict[str, float] = {}
    for proposer, value in record.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BrokenBallot(f"its vote on {proposer} is not a number")
        votes[proposer] = float(value)
    if not hmac.compare_digest(ballot_commitment(server_round, votes, salt).encode(), commitment.encode()):
        raise BrokenBallot("its reveal does not match its commitment")
    return votes


def local_split(X: np.ndarray, y: np.ndarray, seed: int) -> tuple[tuple[np.ndarray, np.ndarray],
                                                                     tuple[np.ndarray, np.ndarray]]:
    """(training part, local validation part) of a member's data, the same on every call."""
    order = np.random.default_rng(seed).permutation(len(y))
    cut = max(1, int(round(len(y) * LOCAL_VALIDATION_FRACTION)))
    held, kept = np.sort(order[:cut]), np.sort(order[cut:])
    return (X[kept], y[kept]), (X[held], y[held])


def evaluate_candidates(message: Message, model: nn.Module, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Per candidate in a ``query.vote`` message, its leave-one-out contribution to the weighted mean: the mean
    per-example utility (minus the Brier score) on (X, y) of all candidates' mean minus that without it."""
    records = message.content.array_records
    weights = {k: float(cast(float, v)) for k, v in message.content.config_records[WEIGHTS_KEY].items()}
    names = [k.removeprefix(CANDIDATE_PREFIX) for k in records if k.startswith(CANDIDATE_PREFIX)]
    states = {n: records[CANDIDATE_PREFIX + n].to_torch_state_dict() for n in names}

    def utility(members: list[str]) -> float:
        if not members:
            model.load_state_dict(records[START_KEY].to_torch_state_dict())
        else:
            total = sum(weights[n] for n in members)
            model.load_state_dict({
                key: sum(states[n][key] * (weights[n] / total) for n in members)
                for key in states[members[0]]
            })
        # Minus the Brier score, not accuracy: a voter holds a few dozen rows, where accuracy moves in steps of
        # 1/rows and a leave-one-out difference in a crowd is almost always exactly 0.
        with torch.no_grad():
            model.eval()
            logits = model(torch.as_tensor(X, dtype=torch.float32))
        return float(per_example_utility(logits, torch.as_tensor(y, dtype=torch.long), "brier").mean())

    everyone = utility(names)
    return {n: everyone - utility([m for m in names if m != n]) for n in names}


def cast_votes(message: Message, model: nn.Module, X: np.ndarray, y: np.ndarray, state: RecordDict) -> Message:
    """A voter's phase-1 reply: it votes (:func:`evaluate_candidates`), keeps the votes and a fresh salt in its
    node ``state`` and replies only their commitment."""
    votes = evaluate_candidates(message, model, X, y)
    server_round = int(cast(int, message.content.config_records[CONFIG_KEY][ROUND_KEY]))
    salt = secrets.token_hex(SALT_BYTES)  # secret and fresh: nobody can test guesses of the votes against it
    state[BALLOT_KEY] = ConfigRecord({ROUND_KEY: server_round, SALT_KEY: salt})
    state[BALLOT_VOTES_KEY] = MetricRecord(dict(votes))
    digest = ballot_commitment(server_round, votes, salt)
    return Message(content=RecordDict({COMMITMENT_KEY: ConfigRecord({DIGEST_KEY: digest})}), reply_to=message)


def reveal_votes(message: Message, state: RecordDict) -> Message:
    """A voter's phase-2 reply: the votes and salt it committed to for the round in ``message``. Raises
    LookupError (the server sees an error reply: a broken ballot) when it committed to none for that round."""
    asked = int(cast(int, message.content.config_records[CONFIG_KEY][ROUND_KEY]))
    kept = state.config_records.get(BALLOT_KEY)
    votes = state.metric_records.get(BALLOT_VOTES_KEY)
    if kept is None or votes is None or kept.get(ROUND_KEY) != asked:
        raise LookupError(f"no ballot committed for round {asked}")
    return Message(content=RecordDict({VOTES_KEY: MetricRecord(dict(votes)),
                                       REVEAL_KEY: ConfigRecord({SALT_KEY: kept[SALT_KEY]})}), reply_to=message)
