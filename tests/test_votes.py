"""Peer validation: seeded voter selection, stake-weighted consensus with clipping that resists a colluding minority
(up and down), the disagreement rule and each voter's agreement."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fedlearn.errors import ConfigError
from fedlearn.scoring.votes import VoteResult, combine_votes, pay_validators, select_voters, voter_count

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


# --- stake-weighted consensus -----------------------------------------------------------------------------------

PROPOSERS = [f"p{i}" for i in range(6)]
vote_st = st.floats(-1.0, 1.0, allow_nan=False)
wild_st = st.floats(-1e6, 1e6, allow_nan=False)  # a colluder may vote anything finite
stake_st = st.integers(1, 100)


@st.composite
def collusion_st(draw: st.DrawFn) -> tuple[dict[str, dict[str, float]], dict[str, int], set[str]]:
    """(votes, stakes, colluders): honest and colluding voters, every one scoring every proposer in PROPOSERS;
    the colluders hold less than half of the stake."""
    honest = [f"h{i}" for i in range(draw(st.integers(1, 6)))]
    colluders = [f"c{i}" for i in range(draw(st.integers(0, 5)))]
    stakes = {v: draw(stake_st) for v in honest + colluders}
    honest_stake = sum(stakes[v] for v in honest)
    for v in colluders:  # scale the colluding stake below the honest stake, keeping every stake positive
        stakes[v] = max(1, stakes[v] * (honest_stake - 1) // (100 * len(colluders)))
    if sum(stakes[v] for v in colluders) >= honest_stake:
        colluders, stakes = [], {v: stakes[v] for v in honest}
    votes = {v: {p: draw(vote_st) for p in PROPOSERS} for v in honest}
    votes |= {v: {p: draw(wild_st) for p in PROPOSERS} for v in colluders}
    return votes, stakes, set(colluders)


@given(collusion_st())
def test_a_colluding_minority_cannot_move_any_score_outside_the_honest_votes(
        case: tuple[dict[str, dict[str, float]], dict[str, int], set[str]]) -> None:
    """Neither up (lifting a colluder above every honest vote) nor down (an honest proposer below every one)."""
    votes, stakes, colluders = case
    result = combine_votes(votes, stakes=stakes)
    for p in PROPOSERS:
        honest = [ballot[p] for v, ballot in votes.items() if v not in colluders]
        low, high = result.consensus[p]
        assert min(honest) <= low <= high <= max(honest)
        assert min(honest) <= result.scores[p] <= max(honest)


def test_colluders_voting_honest_proposers_down_and_their_own_up_change_nothing_beyond_the_honest_range() -> None:
    q = quality()
    colluders = ["hospital-08", "hospital-09", ATTACKER]  # 3 of 10 institutions; 2 of the 5 voters
    for seed in range(50):
        votes = round_of_votes(seed, VOTERS, q)
        honest = {v: dict(b) for v, b in votes.items() if v not in colluders}
        for colluder in set(VOTERS) & set(colluders):
            votes[colluder] = {p: 1.0 if p in colluders else -1.0 for p in q}
        result = combine_votes(votes)
        for p in q:
            counted = [b[p] for v, b in honest.items() if v != p]
            assert min(counted) <= result.scores[p] <= max(counted)
        assert result.disagreeing == {"hospital-08"}  # the colluding voter stands out
        assert result.voter_weights["hospital-08"] == 0.0


@given(st.dictionaries(st.sampled_from(PROPOSERS), st.dictionaries(st.sampled_from(PROPOSERS), vote_st, min_size=1),
                       min_size=1))
def test_with_equal_stakes_the_score_is_the_median_of_the_counted_votes(votes: dict[str, dict[str, float]]) -> None:
    result = combine_votes(votes)
    for p, score in result.scores.items():
        counted = [b[p] for v, b in votes.items() if v != p and p in b]
        assert score == (float(np.median(counted)) if counted else 0.0)


def test_stakes_weigh_the_consensus() -> None:
    votes = {"a": {"p": 0.2, "q": 0.5}, "b": {"p": 0.9, "q": 0.5}, "c": {"p": 0.8, "q": 0.5}}
    assert combine_votes(votes).scores["p"] == 0.8  # equal stakes: the median
    assert combine_votes(votes, stakes={"a": 3, "b": 1, "c": 1}).scores["p"] == 0.2  # a holds 3/5
    assert combine_votes(votes, stakes={"a": 1, "b": 1, "c": 2}).scores["p"] == 0.8  # {c} alone has half: c⁺
    assert combine_votes(votes, stakes={"a": 2, "b": 1, "c": 1}).consensus["p"] == (0.2, 0.8)  # an exact split
    assert combine_votes(votes, stakes={"a": 2, "b": 1, "c": 1}).scores["p"] == pytest.approx(0.5)  # midpoint
    # A voter with no stake is judged but has no say.
    assert combine_votes(votes, stakes={"a": 0, "b": 1, "c": 1}).scores["p"] == pytest.approx(0.85)


def test_votes_above_the_consensus_are_clipped_down_to_it() -> None:
    votes = {"a": {"p": 0.1}, "b": {"p": 0.2}, "c": {"p": 0.3}, "d": {"p": 0.4}, "e": {"p": 0.9}}
    result = combine_votes(votes, kappa=0.2)  # c⁺: the highest vote a fifth of the stake backs, c⁻ its mirror
    assert result.consensus["p"] == (0.1, 0.9)
    result = combine_votes(votes, kappa=0.4)
    assert result.consensus["p"] == (0.2, 0.4)
    assert result.scores["p"] == pytest.approx((0.2 + 0.2 + 0.3 + 0.4 + 0.4) / 5)  # winsorised mean
    votes["e"]["p"] = 100.0  # inflating a vote above the consensus buys nothing
    assert combine_votes(votes, kappa=0.4).scores["p"] == result.scores["p"]


@given(collusion_st(), st.sampled_from(PROPOSERS), st.floats(0.0, 1e6, allow_nan=False),
       st.sampled_from([0.5, 0.4, 0.25, 0.1]))
def test_moving_a_vote_further_outside_the_band_changes_nothing(
        case: tuple[dict[str, dict[str, float]], dict[str, int], set[str]], p: str, push: float, kappa: float,
) -> None:
    votes, stakes, _ = case
    result = combine_votes(votes, stakes=stakes, kappa=kappa)
    low, high = result.consensus[p]
    for v, ballot in votes.items():
        moved = {w: dict(b) for w, b in votes.items()}
        if ballot[p] > high:  # a vote at the band's edge may be the one that holds it there
            moved[v][p] = ballot[p] + push
        elif ballot[p] < low:
            moved[v][p] = ballot[p] - push
        else:
            continue
        again = combine_votes(moved, stakes=stakes, kappa=kappa)
        assert again.scores[p] == result.scores[p] and again.consensus[p] == result.consensus[p]


@given(collusion_st(), st.floats(-1.0, 1.0, allow_nan=False))
def test_a_majority_of_the_stake_sets_any_score_it_likes(
        case: tuple[dict[str, dict[str, float]], dict[str, int], set[str]], target: float) -> None:
    votes, stakes, _ = case
    honest_stake = sum(stakes.values())
    votes["boss"] = dict.fromkeys(PROPOSERS, target)
    result = combine_votes(votes, stakes={**stakes, "boss": honest_stake + 1})
    assert all(result.scores[p] == target for p in PROPOSERS)


@given(collusion_st(), st.randoms(use_true_random=False), st.integers(1, 10**6))
@settings(max_examples=50)
def test_the_result_depends_on_neither_order_nor_the_unit_of_stake(
        case: tuple[dict[str, dict[str, float]], dict[str, int], set[str]], rng: random.Random, unit: int,
) -> None:
    votes, stakes, _ = case
    result = combine_votes(votes, stakes=stakes)
    voters = list(votes)
    rng.shuffle(voters)
    shuffled = {}
    for v in voters:
        items = list(votes[v].items())
        rng.shuffle(items)
        shuffled[v] = dict(items)
    assert combine_votes(shuffled, stakes=stakes) == result
    scaled = combine_votes(votes, stakes={v: s * unit for v, s in stakes.items()})
    assert scaled.scores == result.scores and scaled.disagreeing == result.disagreeing


@given(collusion_st())
def test_voter_weights_lie_in_0_1_and_are_0_exactly_for_the_disagreeing_or_at_the_bar(
        case: tuple[dict[str, dict[str, float]], dict[str, int], set[str]]) -> None:
    votes, stakes, _ = case
    result = combine_votes(votes, stakes=stakes)
    assert set(result.voter_weights) == set(votes)
    for v, w in result.voter_weights.items():
        assert 0.0 <= w <= 1.0
        assert v not in result.disagreeing or w == 0.0
        assert w > 0.0 or v in result.disagreeing or result.deviation[v] == result.threshold
        assert w == 1.0 or result.deviation[v] > result.typical


def test_honest_voters_keep_nearly_full_weight_and_a_lifting_colluder_loses_it() -> None:
    q = quality()
    weights = []
    for seed in range(50):
        votes = round_of_votes(seed, VOTERS, q)
        weights += list(combine_votes(votes).voter_weights.values())
        votes["hospital-03"][ATTACKER] = 1.0
        result = combine_votes(votes)
        assert result.voter_weights["hospital-03"] == 0.0
        assert all(w > 0 for v, w in result.voter_weights.items() if v != "hospital-03")
    assert min(weights) > 0.2 and float(np.mean(weights)) > 0.8


def test_stake_weighs_the_typical_deviation_so_a_heavy_honest_voter_sets_the_bar() -> None:
    # Three sloppy voters with little stake cannot make sloppiness the norm against two careful heavy ones.
    votes: dict[str, dict[str, float]] = {
        "careful-1": {"a": 0.80, "b": 0.70, "c": 0.60, "d": 0.50},
        "careful-2": {"a": 0.81, "b": 0.71, "c": 0.61, "d": 0.51},
        "sloppy-1": {"a": 0.50, "b": 0.80, "c": 0.60, "d": 0.70},
        "sloppy-2": {"a": 0.60, "b": 0.50, "c": 0.80, "d": 0.70},
        "sloppy-3": {"a": 0.70, "b": 0.60, "c": 0.50, "d": 0.80},
    }
    equal = combine_votes(votes, tolerance=0.0)
    heavy = combine_votes(votes, tolerance=0.0, stakes={"careful-1": 10, "careful-2": 10, "sloppy-1": 1,
                                                          "sloppy-2": 1, "sloppy-3": 1})
    assert heavy.typical < equal.typical
    assert heavy.disagreeing > equal.disagreeing and heavy.disagreeing <= {"sloppy-1", "sloppy-2", "sloppy-3"}


def test_a_broken_ballot_gets_no_weight_and_a_voter_with_nothing_to_judge_full_weight() -> None:
    result = combine_votes({"a": {"a": 0.9}, "b": {"a": 0.5, "c": math.inf}, "c": {"a": 0.6}})
    assert result.voter_weights == {"a": 1.0, "b": 0.0, "c": 1.0}
    assert result.disagreeing == {"b"}
    assert result.scores["a"] == pytest.approx(0.55) and result.scores["c"] == 0.0 and result.unvoted == {"c"}


def test_a_proposer_scored_only_by_voters_without_stake_is_unvoted() -> None:
    result = combine_votes({"a": {"p": 0.9}, "b": {"q": 0.4}}, stakes={"a": 0, "b": 1.5})
    assert result.scores == {"p": 0.0, "q": 0.4} and result.unvoted == {"p"}
    assert result.support == {"p": 0, "q": 1}


@pytest.mark.parametrize(("stakes", "fragment"), [
    ({"a": 1.0}, "no stake given for voter 'b'"),
    ({"a": 1.0, "b": -1.0}, "must be a finite number >= 0"),
    ({"a": 1.0, "b": math.nan}, "must be a finite number >= 0"),
    ({"a": 1.0, "b": True}, "must be a finite number >= 0"),
    ({"a": 0, "b": 0.0}, "hold no stake"),
])
def test_bad_stakes_are_refused(stakes: dict[str, float], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        combine_votes({"a": {"b": 1.0}, "b": {"a": 1.0}}, stakes=stakes)


def test_stakes_in_wei_are_exact() -> None:
    wei = 10**18
    votes = {"a": {"p": 0.1}, "b": {"p": 0.2}, "c": {"p": 0.3}}
    # b and c hold exactly half; a float would round 10**25 + 1 and lose the tie-break.
    result = combine_votes(votes, stakes={"a": 10**7 * wei + 1, "b": 5 * 10**6 * wei, "c": 5 * 10**6 * wei})
    assert result.consensus["p"] == (0.1, 0.1)


@pytest.mark.parametrize("kappa", [0.0, 0.51, -0.1, math.nan, True])
def test_a_kappa_outside_0_half_is_refused(kappa: float) -> None:
    with pytest.raises(ConfigError, match="kappa"):
        combine_votes({"a": {"b": 1.0}}, kappa=kappa)


def test_the_result_type_is_frozen() -> None:
    result = combine_votes({"a": {"b": 1.0}})
    assert isinstance(result, VoteResult)
    with pytest.raises(AttributeError):
        result.scores = {}  # type: ignore[misc]


# ---- validators are paid for agreeing -----------------------------------------------------------------------------


def test_the_readme_example_pays_validators_by_agreement() -> None:
    scores, rewards = pay_validators({"p1": 0.04, "p2": 0.02, "p3": -0.01}, {"A": 1.0, "B": 0.5}, 0.1)
    assert rewards == pytest.approx({"A": 0.004, "B": 0.002})
    assert scores == pytest.approx({"p1": 0.036, "p2": 0.018, "p3": -0.01, "A": 0.004, "B": 0.002})


def test_an_update_paid_nothing_for_its_round_funds_no_validator_and_gives_nothing_up() -> None:
    # The README example with p1 clipped as boosted: its +0.04 is not released, so it funds no validator pay.
    scores, rewards = pay_validators({"p1": 0.04, "p2": 0.02, "p3": -0.01}, {"A": 1.0, "B": 0.5}, 0.1,
                                     unpaid={"p1"})
    assert rewards == pytest.approx({"A": 0.002 * 2 / 3, "B": 0.002 / 3})
    assert scores == pytest.approx({"p1": 0.04, "p2": 0.018, "p3": -0.01, **rewards})


def test_agreeing_voters_out_earn_a_lifting_colluder_who_validates_for_nothing() -> None:
    """Real ballots: the colluder that lifts the attacker disagrees, so its validation earns nothing and its own
    update nothing; the honest voters take the whole pot, in proportion to how far they agreed."""
    q = quality()
    for seed in range(30):
        votes = round_of_votes(seed, VOTERS, q)
        votes["hospital-03"][ATTACKER] = 1.0
        result = combine_votes(votes)
        scores, rewards = pay_validators(result.scores, result.voter_weights, 0.1)
        assert "hospital-03" not in rewards
        assert sum(rewards.values()) == pytest.approx(0.1 * sum(max(s, 0.0) for s in result.scores.values()))
        for v, reward in rewards.items():
            assert reward == pytest.approx(sum(rewards.values()) * result.voter_weights[v]
                                           / sum(result.voter_weights.values()))
            assert scores[v] == pytest.approx(0.9 * max(result.scores[v], 0.0) + min(result.scores[v], 0.0) + reward)


@given(scores=st.dictionaries(st.sampled_from(INSTITUTIONS), st.floats(-1, 1), max_size=8),
       weights=st.dictionaries(st.sampled_from(INSTITUTIONS), st.floats(0, 1), max_size=8),
       share=st.floats(0, 0.99))
@settings(max_examples=200, deadline=None)
@example(scores={"hospital-01": 0.0625}, weights={"hospital-01": 2.2250738585e-313}, share=0.0625)  # subnormal
def test_validator_pay_moves_only_positive_mass_and_never_a_negative_score_down(
    scores: dict[str, float], weights: dict[str, float], share: float
) -> None:
    paid, rewards = pay_validators(scores, weights, share)
    positive = sum(max(s, 0.0) for s in scores.values())
    assert all(r > 0 for r in rewards.values()) and set(rewards) <= {v for v, w in weights.items() if w > 0}
    if rewards:
        assert math.isclose(sum(rewards.values()), share * positive, rel_tol=1e-9, abs_tol=1e-12)
    for name, s in scores.items():
        assert paid[name] >= min(s, 0.0) - 1e-12  # a harmful score is never made worse
        if s > 0:
            assert paid[name] >= (1 - share) * s - 1e-12
    if rewards:
        assert math.isclose(sum(paid.values()), sum(scores.values()), rel_tol=1e-9, abs_tol=1e-9)
    else:
        assert paid == scores


@pytest.mark.parametrize("share", [-0.1, 1.0, math.nan])
def test_a_validator_share_outside_0_1_is_refused(share: float) -> None:
    with pytest.raises(ConfigError, match=r"integrity.validator_share must be in \[0, 1\)"):
        pay_validators({"a": 1.0}, {"b": 1.0}, share)
