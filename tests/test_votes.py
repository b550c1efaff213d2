"""Peer validation: seeded voter selection, median scores that resist collusion, and the disagreement rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedlearn.errors import ConfigError
from fedlearn.scoring.votes import combine_votes, select_voters, voter_count

INSTITUTIONS = [f"hospital-{i:02d}" for i in range(1, 11)]
ATTACKER = "hospital-10"


def quality(attacker: float = 0.1) -> dict[str, float]:
    """True accuracy each proposer's update reaches: nine honest ones near 0.88, the attacker far below."""
    g = np.random.default_rng(99)
    q = {name: float(0.84 + 0.08 * g.random()) for name in INSTITUTIONS}
    q[ATTACKER] = attacker
    return q


def honest_ballot(voter: str, q: dict[str, float], g: np.random.Generator, noise: float = 0.02) -> dict[str, float]:
    """What an honest voter measures on its own data: the truth, shifted by its data's difficulty, plus noise."""
    offset = g.uniform(-0.1, 0.05)
    return {p: v + offset + g.normal(0, noise) for p, v in q.items()}


def round_of_votes(seed: int, voters: list[str], q: dict[str, float]) -> dict[str, dict[str, float]]:
    g = np.random.default_rng(seed)
    return {v: honest_ballot(v, q, g) for v in voters}


VOTERS = ["hospital-01", "hospital-03", "hospital-05", "hospital-06", "hospital-08"]


# --- selection --------------------------------------------------------------------------------------------------


def test_selection_is_deterministic_and_varies_by_round_and_seed() -> None:
    a = select_voters(INSTITUTIONS, 0.3, seed=42, round=1)
    assert a == select_voters(INSTITUTIONS, 0.3, seed=42, round=1)
    assert a == select_voters(list(reversed(INSTITUTIONS)), 0.3, seed=42, round=1)  # order does not matter
    assert len(a) == 3 and len(set(a)) == 3 and set(a) <= set(INSTITUTIONS) and a == sorted(a)
    draws = {tuple(select_voters(INSTITUTIONS, 0.3, seed=42, round=r)) for r in range(1, 21)}
    assert len(draws) > 10
    assert {tuple(select_voters(INSTITUTIONS, 0.3, seed=s, round=1)) for s in range(20)} != {tuple(a)}


def test_every_institution_is_drawn_about_equally_often() -> None:
    counts = dict.fromkeys(INSTITUTIONS, 0)
    for r in range(2000):
        for name in select_voters(INSTITUTIONS, 0.3, seed=7, round=r):
            counts[name] += 1
    # Expected 600 each (binomial sd ≈ 20.5): all within 5 sd.
    assert all(abs(c - 600) < 103 for c in counts.values()), counts


@pytest.mark.parametrize(("n", "fraction", "expected"), [(10, 0.3, 3), (10, 1.0, 10), (10, 0.01, 1), (3, 0.5, 2),
                                                          (1, 0.2, 1), (7, 0.35, 2)])
def test_voter_count_rounds_and_is_at_least_one(n: int, fraction: float, expected: int) -> None:
    assert voter_count(n, fraction) == expected
    assert len(select_voters(INSTITUTIONS[:n], fraction, seed=0, round=0)) == expected


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01, math.nan, math.inf, True])
def test_a_fraction_outside_0_1_is_refused(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"must lie in \(0, 1\]"):
        select_voters(INSTITUTIONS, fraction, seed=0, round=1)


def test_an_explicit_count_is_used_and_validated() -> None:
    assert len(select_voters(INSTITUTIONS, 0.3, seed=0, round=1, count=7)) == 7
    with pytest.raises(ConfigError, match="more than the 10 institutions"):
        select_voters(INSTITUTIONS, 0.3, seed=0, round=1, count=11)
    with pytest.raises(ConfigError, match="positive integer"):
        select_voters(INSTITUTIONS, 0.3, seed=0, round=1, count=0)


def test_selection_refuses_bad_institutions_seeds_and_rounds() -> None:
    with pytest.raises(ConfigError, match="no institutions"):
        select_voters([], 0.5, seed=0, round=1)
    with pytest.raises(ConfigError, match="unique"):
        select_voters(["a", "a", "b"], 0.5, seed=0, round=1)
    with pytest.raises(ConfigError, match="round = -1"):
        select_voters(INSTITUTIONS, 0.5, seed=0, round=-1)
    with pytest.raises(ConfigError, match="seed = 1.5"):
        select_voters(INSTITUTIONS, 0.5, seed=1.5, round=1)  # type: ignore[arg-type]


# --- combining --------------------------------------------------------------------------------------------------


def test_scores_are_medians_and_self_votes_are_ignored() -> None:
    votes = {
        "a": {"a": 1.0, "b": 0.2, "c": 0.9},
        "b": {"a": 0.5, "b": 1.0, "c": 0.7},
        "c": {"a": 0.6, "b": 0.4, "c": 1.0},
        "d": {"a": 0.7, "b": 0.3, "c": 0.8},
    }
    result = combine_votes(votes)
    assert result.scores == {"a": pytest.approx(0.6), "b": pytest.approx(0.3), "c": pytest.approx(0.8)}
    assert result.support == {"a": 3, "b": 3, "c": 3}
    assert result.unvoted == frozenset()


def test_a_proposer_only_scored_by_itself_gets_zero_and_is_listed_unvoted() -> None:
    result = combine_votes({"a": {"a": 0.99, "b": 0.5}, "c": {"b": 0.6}})
    assert result.scores["a"] == 0.0
    assert result.unvoted == frozenset({"a"})
    assert result.scores["b"] == pytest.approx(0.55)


def test_the_median_resists_a_minority_of_colluders_lifting_an_attacker() -> None:
    q = quality()
    for seed in range(50):
        votes = round_of_votes(seed, VOTERS, q)
        honest_on_attacker = [b[ATTACKER] for b in votes.values()]
        for colluder in VOTERS[:2]:  # two of five voters give the attacker full marks
            votes[colluder][ATTACKER] = 1.0
        result = combine_votes(votes)
        assert result.scores[ATTACKER] <= max(honest_on_attacker)
        assert result.scores[ATTACKER] < 0.2
        assert min(s for p, s in result.scores.items() if p != ATTACKER) > 0.6
        assert set(VOTERS[:2]) <= result.disagreeing  # lifting one proposer by 0.9 stands out
        assert result.disagreeing == set(VOTERS[:2])


@pytest.mark.parametrize("attacker", [0.1, None])
def test_honest_voters_are_never_flagged(attacker: float | None) -> None:
    """Offsets from different local data and measurement noise are not disagreement; also in all-honest rounds."""
    q = quality() if attacker is not None else {p: 0.88 for p in INSTITUTIONS}
    for seed in range(200):
        voters = select_voters(INSTITUTIONS, 0.5, seed=seed, round=1)
        result = combine_votes(round_of_votes(seed, voters, q))
        assert result.disagreeing == frozenset(), (seed, result.deviation, result.threshold)


def test_an_inverted_voter_is_flagged() -> None:
    q = quality()
    for seed in range(50):
        votes = round_of_votes(seed, VOTERS, q)
        votes["hospital-05"] = {p: 1.0 - v for p, v in votes["hospital-05"].items()}
        result = combine_votes(votes)
        assert result.disagreeing == {"hospital-05"}, (seed, result.deviation, result.threshold)
        assert result.scores[ATTACKER] < 0.2


def test_a_random_voter_is_flagged() -> None:
    q = quality()
    for seed in range(50):
        votes = round_of_votes(seed, VOTERS, q)
        g = np.random.default_rng(1000 + seed)
        votes["hospital-06"] = {p: float(g.random()) for p in q}
        assert combine_votes(votes).disagreeing == {"hospital-06"}


def test_a_broken_ballot_is_ignored_and_its_voter_flagged() -> None:
    q = quality()
    votes = round_of_votes(0, VOTERS, q)
    clean = combine_votes(votes).scores
    votes["hospital-08"][ATTACKER] = math.nan
    result = combine_votes(votes)
    assert "hospital-08" in result.disagreeing
    assert result.support[ATTACKER] == 4
    assert all(math.isfinite(s) for s in result.scores.values())
    assert result.scores["hospital-02"] == clean["hospital-02"]


def test_combining_nothing_gives_nothing() -> None:
    result = combine_votes({})
    assert result.scores == {} and result.disagreeing == frozenset()


@pytest.mark.parametrize(("k", "tolerance"), [(0.0, 0.05), (-1.0, 0.05), (3.0, -0.1), (math.nan, 0.05)])
def test_bad_rule_parameters_are_refused(k: float, tolerance: float) -> None:
    with pytest.raises(ConfigError):
        combine_votes({"a": {"b": 1.0}}, k=k, tolerance=tolerance)
