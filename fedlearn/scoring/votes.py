"""Peer validation, FLock style: seeded voters score every candidate update; a stake-weighted consensus decides. Pure.

Each round :func:`select_voters` draws voters from the institutions with a seed and the round number, so every
party can recompute who voted. Voters evaluate the candidate updates on their own local validation data and
reply one score per proposer; :func:`combine_votes` turns the ballots into one score per proposer, Yuma style
(Bittensor's Yuma Consensus), and names the voters whose ballots disagree with the consensus (they earn nothing
that round).

Ballots:

- A voter's vote on its own update is ignored: nobody grades itself.
- A non-finite (or non-numeric) vote is ignored, and the voter that cast it counts as disagreeing (a broken
  ballot earns nothing); its other votes count.

Consensus and scores. Each voter v holds a stake S_v ≥ 0 (all equal when unknown). For proposer p, let V_p be the
voters with a counted vote x_vp on it and a positive stake, s_v = S_v / Σ_{w ∈ V_p} S_w their stake shares, and
κ = 0.5 (``kappa``, any value in (0, 0.5]):

    c⁺_p    = max { x_vp : Σ_{w: x_wp ≥ x_vp} s_w ≥ κ }    the consensus: the highest vote stake κ stands behind
    c⁻_p    = min { x_vp : Σ_{w: x_wp ≤ x_vp} s_w ≥ κ }    its mirror from below
    score_p = Σ_{v ∈ V_p} s_v · clip(x_vp, c⁻_p, c⁺_p)     the stake-weighted mean of the clipped votes

Every vote above the consensus is clipped down to it, as in Yuma: inflating a proposer's score buys nothing.
Yuma clips only from above because its weights are non-negative and sum to one per validator, which bounds what
a low vote can take away; votes here are signed contributions, so a vote far below would drag the mean down
without limit, and votes are clipped from below as well. At κ = 0.5, c⁻ and c⁺ are the lower and upper
stake-weighted medians; they differ only when the stake splits exactly in half (the score is then their
midpoint), so the score is the stake-weighted median, and with equal stakes the ordinary median. A κ below 0.5
widens the band: the score becomes a stake-weighted winsorised mean. A proposer no voter with stake scored gets 0
and is listed in ``unvoted``.

Collusion, up and down. If the voters that collude hold less than κ of the stake in V_p, then c⁻_p, c⁺_p and
score_p lie within [min, max] of the honest votes on p, whatever the colluders vote: above the highest honest
vote only colluding stake (< κ) remains, so c⁺_p ≤ max; at or above the lowest honest vote stands all honest
stake (> 1 − κ ≥ κ), so c⁺_p ≥ min; c⁻_p mirrors this. So a colluding minority can neither lift a colluder above
the honest voters' range nor push an honest proposer below it. It can still choose where in that range a score
lands (with two honest voters and one colluder, the colluder's friends get the higher honest vote and everyone
else the lower): the damage is bounded by how far honest voters disagree. Colluders holding κ or more of the
stake can leave that range, and more than 1 − κ (a majority at κ = 0.5) set any score they like. The bound is
per proposer: a voter's self-vote is not counted, so an honest proposer that votes leaves one less honest voter
on itself.

Disagreement rule. Honest voters hold different local data, so their votes differ by a level (a voter with
harder data scores everyone lower) and by noise; neither is disagreement. For voter v over the proposers p it
scored, with consensus score_p:

    offset_v    = median_p (x_vp − score_p)                   the voter's own level, taken out
    deviation_v = sqrt(mean_p (x_vp − score_p − offset_v)²)   how far its *relative* judgement strays

v disagrees when ``deviation_v > k · m + tolerance``, where m, the typical deviation, is the stake-weighted median
of the deviations of the voters with stake (midpoint on an exact split; defaults k = 3, tolerance = 0.05 in vote
units, i.e. five points of accuracy): several times the typical voter's deviation and clearly above noise.
Weighting m by stake keeps colluders with a minority of the stake from raising the bar for themselves. The root
mean square lets one grossly wrong vote (a colluder lifting an attacker) count, where a mean or median of
absolute residuals would dilute it. Limits: with two voters neither can stand out (both deviate equally from
their own mean); a majority of bad voters becomes the consensus; a voter that inverts its votes only stands out
when the proposers differ, which is exactly when its votes would matter.

Validation is paid (:func:`pay_validators`). A share ν (``integrity.validator_share``, default 0.1) of the round's
positive score mass is taken from the positive scores (each positive score times 1 − ν; a negative score stands
whole, it is what slashing reads) and split among the voters in proportion to stake × ``voter_weight``: a voter
is paid for agreeing with the consensus, less as it strays, nothing once it disagrees (it also earns nothing for
its own update that round). The pot comes out of the round's scores, so the payout rule releases no more for it,
and a round with no positive score, or no voter with weight, pays no validator.

Agreement. Each voter's ``voter_weight`` in [0, 1] says how far it agreed: 1 when deviation_v ≤ m, falling
linearly to 0 at the threshold k · m + tolerance, 0 beyond it, and 0 for a disagreeing voter (a broken ballot
included); a voter with no counted vote on another proposer shows no disagreement and gets 1. Yuma's
validator trust (the share of a validator's weight that survives clipping) needs non-negative weights that sum
to one; signed votes with a per-voter level call for the offset-corrected distance above instead.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from fedlearn.errors import ConfigError

CONSENSUS_KAPPA = 0.5
DISAGREEMENT_K = 3.0
DISAGREEMENT_TOLERANCE = 0.05


def voter_count(institutions: int, fraction: float, count: int | None = None) -> int:
    """How many voters a round has: ``count`` when given, else round(fraction · institutions), at least 1."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"voters fraction = {fraction!r} must lie in (0, 1]")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"voters count = {count!r} must be a positive integer")
        if count > institutions:
            raise ConfigError(f"voters count = {count} is more than the {institutions} institutions")
        return count
    return max(1, math.floor(fraction * institutions + 0.5))


def select_voters(
    institutions: list[str], fraction: float, seed: int, round: int, *, count: int | None = None
) -> list[str]:
    """The round's voters, sorted: a uniform sample, the same for the same (institutions, seed, round).

    The draw depends on the set of institutions, not their order. ``count``, when given, overrides
    ``fraction`` (which must still be valid) and may not exceed the number of institutions.
    """
    names = sorted(set(institutions))
    if len(names) != len(institutions):
        raise ConfigError("institutions must be unique to select voters among them")
    if not names:
        raise ConfigError("no institutions to select voters from")
    for label, value in (("seed", seed), ("round", round)):
        try:
            if operator.index(value) < 0:
                raise TypeError
        except TypeError:
            raise ConfigError(f"voter selection {label} = {value!r} must be a non-negative integer") from None
    chosen = np.random.default_rng([seed, round]).choice(len(names), voter_count(len(names), fraction, count),
                                                          replace=False)
    return sorted(names[i] for i in chosen)


@dataclass(frozen=True)
class VoteResult:
    """The combined ballots of one round; every rule is in the module docstring.

    ``scores``: per proposer, the stake-weighted mean of its clipped votes (0 when unvoted).
    ``consensus``: per voted proposer, the band (c⁻, c⁺) its votes were clipped into.
    ``disagreeing``: voters whose ballot strays from the consensus or is broken.
    ``voter_weights``: per voter, its agreement in [0, 1] (0 for every disagreeing voter).
    ``deviation``: per voter with a counted vote, its offset-corrected distance from the consensus.
    ``threshold``: the deviation above which a voter disagrees; ``typical``: m, the stake-weighted median
    deviation (both ∞ when no voter with stake has a deviation).
    ``support``: how many counted votes from voters with stake each proposer's score rests on; ``unvoted`` lists
    proposers with none.
    """

    scores: dict[str, float]
    disagreeing: frozenset[str]
    deviation: dict[str, float] = field(default_factory=dict)
    threshold: float = math.inf
    support: dict[str, int] = field(default_factory=dict)
    unvoted: frozenset[str] = frozenset()
    consensus: dict[str, tuple[float, float]] = field(default_factory=dict)
    voter_weights: dict[str, float] = field(default_factory=dict)
    typical: float = math.inf


def combine_votes(
    votes: Mapping[str, Mapping[str, float]],
    *,
    stakes: Mapping[str, float] | None = None,
    kappa: float = CONSENSUS_KAPPA,
    k: float = DISAGREEMENT_K,
    tolerance: float = DISAGREEMENT_TOLERANCE,
) -> VoteResult:
    """Combine ``votes[voter][proposer]`` into proposer scores, flag disagreeing voters, weigh each voter's agreement.

    ``stakes[voter]`` (finite, ≥ 0; every voter needs one and at least one must be positive) weighs the voters;
    ``None`` weighs them equally. A voter with zero stake is judged but does not move any consensus. The result
    does not depend on the order of ``votes`` or of any ballot. Raises ConfigError on invalid parameters or stakes.
    """
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not 0 < kappa <= 0.5:
        raise ConfigError(f"vote consensus kappa = {kappa!r} must lie in (0, 0.5]")
    if isinstance(k, bool) or not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0):
        raise ConfigError(f"vote disagreement k = {k!r} must be a positive number")
    if isinstance(tolerance, bool) or not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance)
                                           and tolerance >= 0):
        raise ConfigError(f"vote disagreement tolerance = {tolerance!r} must be a non-negative number")
    stake = _stakes(votes, stakes)

    broken: set[str] = set()
    counted: dict[str, dict[str, float]] = {}
    for voter, ballot in votes.items():
        counted[voter] = {}
        for proposer, value in ballot.items():
            if proposer == voter:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                broken.add(voter)
                continue
            counted[voter][proposer] = float(value)

    proposers = sorted({p for ballot in votes.values() for p in ballot})
    received: dict[str, list[tuple[float, Fraction]]] = {p: [] for p in proposers}
    for voter, ballot in counted.items():
        if stake[voter] > 0:  # zero stake: judged below, but no say in any consensus
            for proposer, value in ballot.items():
                received[proposer].append((value, stake[voter]))
    consensus = {p: _band(pairs, _exact(kappa)) for p, pairs in received.items() if pairs}
    scores = {p: _clipped_mean(received[p], *consensus[p]) if p in consensus else 0.0 for p in proposers}
    support = {p: len(pairs) for p, pairs in received.items()}

    deviation: dict[str, float] = {}
    for voter, ballot in counted.items():
        residuals = [value - scores[p] for p, value in sorted(ballot.items()) if p in consensus]
        if residuals:
            residual = np.array(residuals)
            residual -= np.median(residual)
            deviation[voter] = float(np.sqrt(np.mean(residual**2)))
    weighed = [(d, stake[v]) for v, d in deviation.items() if stake[v] > 0]
    typical = (sum(_band(weighed, Fraction(1, 2))) / 2) if weighed else math.inf
    threshold = k * typical + tolerance
    disagreeing = broken | {v for v, d in deviation.items() if d > threshold}
    voter_weights = {v: 0.0 if v in disagreeing else _agreement(deviation.get(v), typical, threshold) for v in votes}
    return VoteResult(
        scores=scores,
        disagreeing=frozenset(disagreeing),
        deviation=deviation,
        threshold=threshold,
        support=support,
        unvoted=frozenset(p for p, n in support.items() if n == 0),
        consensus=consensus,
        voter_weights=voter_weights,
        typical=typical,
    )


def _stakes(votes: Mapping[str, object], stakes: Mapping[str, float] | None) -> dict[str, Fraction]:
    """Each voter's stake as an exact rational: ties in the consensus are decided exactly, in any order."""
    if stakes is None:
        return {voter: Fraction(1) for voter in votes}
    exact: dict[str, Fraction] = {}
    for voter in votes:
        if voter not in stakes:
            raise ConfigError(f"no stake given for voter {voter!r}")
        value = stakes[voter]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"stake of voter {voter!r} = {value!r} must be a finite number >= 0")
        exact[voter] = _exact(value)
    if exact and not any(exact.values()):
        raise ConfigError("the voters hold no stake: at least one needs a positive stake")
    return exact


def _exact(value: float) -> Fraction:
    """An integer exactly (stakes in wei exceed a float's 53 bits); a float as the decimal it prints as, so 0.1 and
    0.2 hold exactly as much as 0.3 and a κ of 0.2 is exactly a fifth."""
    return Fraction(int(value)) if isinstance(value, numbers.Integral) else Fraction(repr(float(value)))


def _band(pairs: list[tuple[float, Fraction]], kappa: Fraction) -> tuple[float, float]:
    """(c⁻, c⁺) of (value, stake > 0) pairs: the lowest value with stake ≥ κ at or below it, the highest with
    stake ≥ κ at or above it (κ as a share of the pairs' total stake)."""
    ordered = sorted(pairs)
    need = kappa * sum((s for _, s in ordered), Fraction(0))
    lower = upper = ordered[0][0]
    held = Fraction(0)
    for value, s in ordered:  # a tie group crosses at its own value, whichever of its members tips it
        held += s
        if held >= need:
            lower = value
            break
    held = Fraction(0)
    for value, s in reversed(ordered):
        held += s
        if held >= need:
            upper = value
            break
    return lower, upper


def _clipped_mean(pairs: list[tuple[float, Fraction]], lower: float, upper: float) -> float:
    """Stake-weighted mean of the values clipped into [lower, upper], computed exactly and rounded once."""
    total = sum((s for _, s in pairs), Fraction(0))
    clipped = sum((s * Fraction(min(max(value, lower), upper)) for value, s in pairs), Fraction(0))
    return float(clipped / total)


def _agreement(deviation: float | None, typical: float, threshold: float) -> float:
    """1 at or below the typical deviation, linearly down to 0 at the threshold; 1 with nothing to judge."""
    if deviation is None or deviation <= typical:
        return 1.0
    if deviation >= threshold:
        return 0.0
    return (threshold - deviation) / (threshold - typical)


def pay_validators(
    scores: Mapping[str, float],
    voter_weights: Mapping[str, float],
    share: float,
    *,
    stakes: Mapping[str, float] | None = None,
    unpaid: Collection[str] = (),
) -> tuple[dict[str, float], dict[str, float]]:
    """(every institution's score with its validation reward, voter → that reward); see the module docstring.

    ``scores``: the round's proposer scores; ``voter_weights``: each voter's agreement in [0, 1]; ``share``: ν in
    [0, 1). Voters need not be proposers. The rewards add up to ν × Σ max(score, 0), what the positive scores
    gave up; a voter whose own update scored negative gets its reward added to that score (net contribution).
    ``unpaid``: proposers not paid for their update this round whatever it scored (clipped as boosted): their
    scores neither fund the pot nor give anything up, since nothing is released for them.
    """
    if not 0 <= share < 1:
        raise ConfigError(f"integrity.validator_share must be in [0, 1), got {share}")
    raw = {v: (1.0 if stakes is None else float(stakes.get(v, 0.0))) * float(w) for v, w in voter_weights.items()}
    positive = {v: w for v, w in raw.items() if w > 0}
    # Scaled by the largest weight first: subnormal weights would otherwise lose their digits in w / total.
    top = max(positive.values(), default=0.0)
    weight = {v: w / top for v, w in positive.items()}
    total_weight = sum(weight.values())
    pot = share * sum(max(s, 0.0) for name, s in scores.items() if name not in unpaid)
    if pot <= 0 or total_weight <= 0:
        return dict(scores), {}
    rewards = {v: r for v, w in sorted(weight.items()) if (r := pot * w / total_weight) > 0}
    if not rewards:  # a pot too small to split in floating point
        return dict(scores), {}
    paid = {name: (1 - share) * s if s > 0 and name not in unpaid else s for name, s in scores.items()}
    for voter, reward in rewards.items():
        paid[voter] = paid.get(voter, 0.0) + reward
    return paid, rewards
