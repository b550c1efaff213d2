"""Peer validation, FLock style: seeded voters score every candidate update; the median decides. Pure.

Each round :func:`select_voters` draws voters from the institutions with a seed and the round number, so every
party can recompute who voted. Voters evaluate the candidate updates on their own local validation data and
reply one score per proposer; :func:`combine_votes` turns the ballots into one score per proposer and names the
voters whose ballots disagree with the consensus (they earn nothing that round).

Combining:

- A voter's vote on its own update is ignored: nobody grades itself.
- A non-finite vote is ignored, and the voter that cast it counts as disagreeing (a broken ballot earns nothing).
- A proposer's score is the median of the votes it received: fewer than half of its voters, colluding, cannot
  move it beyond the range of the honest votes. A proposer no voter scored gets 0 and is listed in ``unvoted``.

Disagreement rule. Honest voters hold different local data, so their votes differ by a level (a voter with
harder data scores everyone lower) and by noise; neither is disagreement. For voter v over the proposers p it
scored, with consensus c_p (the median):

    offset_v   = median_p (vote_vp − c_p)                 the voter's own level, taken out
    deviation_v = sqrt(mean_p (vote_vp − c_p − offset_v)²)  how far its *relative* judgement strays

v disagrees when ``deviation_v > k · median_w(deviation_w) + tolerance`` (defaults k = 3, tolerance = 0.05 in
vote units, i.e. five points of accuracy): several times the typical voter's deviation and clearly above noise.
The root mean square lets one grossly wrong vote (a colluder lifting an attacker) count, where a mean or median
of absolute residuals would dilute it. Limits: with two voters neither can stand out (both deviate equally
from their own mean); a majority of bad voters becomes the consensus; a voter that inverts its votes only
stands out when the proposers differ, which is exactly when its votes would matter.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedlearn.errors import ConfigError

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
    """Median score per proposer; voters that disagree; each voter's deviation and the threshold it was held to.

    ``support`` is how many counted votes each proposer's score rests on; ``unvoted`` lists proposers none scored.
    """

    scores: dict[str, float]
    disagreeing: frozenset[str]
    deviation: dict[str, float] = field(default_factory=dict)
    threshold: float = math.inf
    support: dict[str, int] = field(default_factory=dict)
    unvoted: frozenset[str] = frozenset()


def combine_votes(
    votes: Mapping[str, Mapping[str, float]],
    *,
    k: float = DISAGREEMENT_K,
    tolerance: float = DISAGREEMENT_TOLERANCE,
) -> VoteResult:
    """Robustly combine ``votes[voter][proposer]`` into proposer scores and flag disagreeing voters (see module)."""
    if not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0):
        raise ConfigError(f"vote disagreement k = {k!r} must be a positive number")
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"vote disagreement tolerance = {tolerance!r} must be a non-negative number")

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
    received: dict[str, list[float]] = {p: [] for p in proposers}
    for ballot in counted.values():
        for proposer, value in ballot.items():
            received[proposer].append(value)
    scores = {p: float(np.median(v)) if v else 0.0 for p, v in received.items()}
    support = {p: len(v) for p, v in received.items()}

    deviation: dict[str, float] = {}
    for voter, ballot in counted.items():
        if ballot:
            residual = np.array([value - scores[p] for p, value in ballot.items()])
            residual -= np.median(residual)
            deviation[voter] = float(np.sqrt(np.mean(residual**2)))
    threshold = k * float(np.median(list(deviation.values()))) + tolerance if deviation else math.inf
    disagreeing = broken | {v for v, d in deviation.items() if d > threshold}
    return VoteResult(
        scores=scores,
        disagreeing=frozenset(disagreeing),
        deviation=deviation,
        threshold=threshold,
        support=support,
        unvoted=frozenset(p for p, n in support.items() if n == 0),
    )
