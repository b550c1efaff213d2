"""The payout rule: tokens that follow validated contribution, paid as the run goes, trued up at the end. Pure.

Inputs, per round: each institution's contribution score and whether the round's gain was significant (see
``fedlearn.scoring.significance``). The run's budget B is ``chain.reward_per_round × run.rounds`` wei.

1. **Contribution.** An institution's cumulative contribution C_i is the sum of its scores over the rounds whose
   gain was significant (``payout.round_weight = "equal"``, the default). With "headroom" (an option) each
   round's scores are first divided by the error left at its start, best utility − U(start of round): a score
   counts as the share of the remaining error the update removed, so the last rounds, where only the data the
   others lack still helps, count as much as the first, where any data moves a random model a long way. A round
   whose gain is noise, or negative, contributes nothing to anyone. The contribution share is
   max(C_i, 0) / Σ max(C, 0).
2. **Release.** By round t the run has released P(t) = ⌊α · B · min(1, G(t) / H)⌋, where G(t) is the sum of the
   significant gains so far, H the headroom (the best utility minus the first round's starting utility) and α
   ``payout.interim_fraction``. A round with no significant gain adds nothing to P; no budget piles up for a
   later round to pay out because of noise. The last round releases all of B, unless no institution has a
   positive contribution, in which case everything unpaid goes back to the funder. P(t) never exceeds t times
   the reward per round: the distributor holds the coordinator to that rate on chain (each settlement may add
   at most the governed reward per round plus what earlier settlements left unspent), so every release, the
   true-up included, fits. What early gains earned beyond that rate is released as the rate allows, in later
   rounds whether or not they gained.
3. **Allocation (water-filling).** After each round, every institution's cumulative amount becomes
   max(paid_i, λ · max(C_i, 0)) with λ chosen so the amounts add up to P(t) exactly: as close to proportional to
   contribution as amounts that never decrease allow. Integer wei: each amount is floored and the few wei of
   remainder go, one each, to the largest fractions the floor cut off (ties: the larger contributor, then the
   name), so every wei is paid, carried or returned.

Worked example (B = 1,000 tokens, α = 0.25, the default, H = 1.0): round 1 gains 0.4 (significant), A scores 0.3
and B 0.1: P(1) = 0.25·1000·0.4 = 100, paid A 75, B 25. Round 2's gain is noise: nothing released, nothing paid.
Round 3 (the last) gains 0.2 significantly, A scores 0.0 and B 0.2: C = (0.3, 0.3), P = 1,000, λ = 1000/0.6, so A
and B each end at 500 (A had 75, B 25: A gets 425 more, B 475). Had A been paid more than its share before the true-up,
it would keep it and the others would split the rest in proportion. With "headroom", round 3 having started at
0.4 of a best 1.0, B's 0.2 would count 0.2 / 0.6 and B would end above A.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from fedlearn.scoring.utility import round_weight


@dataclass(frozen=True)
class RoundMeasure:
    """What the payout rule reads of one round: its scores, and whether (and how much) it gained."""

    round: int
    scores: Mapping[str, float]
    gain: float
    significant: bool
    start_utility: float


@dataclass(frozen=True)
class Allocation:
    """The cumulative amounts after a round and what became of the budget (every wei is in one place)."""

    cumulative: dict[str, int]
    released: int  # Σ cumulative: paid to institutions so far
    carried: int  # not yet released: waits for later rounds or the final true-up
    returned: int  # given back to the funder (only when the run ends)

    @property
    def total(self) -> int:
        return self.released + self.carried + self.returned


def contributions(history: Sequence[RoundMeasure], best_utility: float, weighting: str) -> dict[str, Fraction]:
    """Cumulative contribution per institution: scores summed over the significant rounds, each round's weighed
    by ``weighting`` (``fedlearn.scoring.utility.round_weight``), in exact rationals."""
    total: dict[str, Fraction] = {}
    for measure in history:
        weight = Fraction(round_weight(measure.start_utility, best_utility, weighting))
        for name, score in measure.scores.items():
            total.setdefault(name, Fraction(0))
            if measure.significant:
                total[name] += Fraction(score) * weight
    return total


def release(history: Sequence[RoundMeasure], budget: int, interim_fraction: float, best_utility: float,
            final: bool, per_round: int | None = None) -> int:
    """P(t): how much of ``budget`` the run has released after the last round of ``history``, at most
    ``per_round`` times the rounds so far when given."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    cap = budget if per_round is None else min(budget, per_round * len(history))
    if final:
        return cap
    if not history:
        return 0
    headroom = Fraction(best_utility) - Fraction(history[0].start_utility)
    gained = sum((Fraction(m.gain) for m in history if m.significant and m.gain > 0), Fraction(0))
    if headroom <= 0 or gained <= 0:
        return 0
    share = min(Fraction(1), gained / headroom)
    return min(int(Fraction(interim_fraction) * budget * share), cap)


def waterfill(paid: Mapping[str, int], weights: Mapping[str, Fraction], target: int) -> dict[str, int]:
    """New cumulative amounts: each max(paid_i, ⌊λ·w_i⌋) (+1 wei for some), summing to ``target`` exactly.

    Institutions with weight ≤ 0 keep what they have. When ``target`` is below what is already paid, or no
    weight is positive, nothing changes.
    """
    names = sorted(set(paid) | set(weights))
    current = {n: int(paid.get(n, 0)) for n in names}
    w = {n: max(Fraction(weights.get(n, 0)), Fraction(0)) for n in names}
    extra = target - sum(current.values())
    positive = [n for n in names if w[n] > 0]
    if extra <= 0 or not positive:
        return current
    # λ: start with everyone raised, drop (keep at paid) those whose proportional amount is below what they have.
    active = set(positive)
    while True:
        fixed = sum(current[n] for n in names if n not in active)
        lam = (Fraction(target) - fixed) / sum(w[n] for n in active)
        below = {n for n in active if lam * w[n] < current[n]}
        if not below:
            break
        active -= below
    out = dict(current)
    for n in active:
        out[n] = int(lam * w[n])  # floor: ≥ current[n], since lam·w ≥ current and current is an integer
    remainder = target - sum(out.values())
    # Fewer wei than active institutions remain: one each to the largest fractions of a wei cut off by the floor
    # (so nobody ends a wei short of its share while another is above it), then the largest contributors, by name.
    for n in sorted(active, key=lambda n: (-(lam * w[n] - out[n]), -w[n], n))[:remainder]:
        out[n] += 1
    return out


def allocate(history: Sequence[RoundMeasure], paid: Mapping[str, int], budget: int, interim_fraction: float,
             best_utility: float, final: bool, per_round: int | None = None, *, weighting: str) -> Allocation:
    """The allocation after the last round of ``history``, given the cumulative amounts ``paid`` before it;
    ``per_round`` caps the release at that many wei per round so far (see :func:`release`); ``weighting`` is
    ``payout.round_weight`` (see :func:`contributions`)."""
    weights = {name: max(c, Fraction(0)) for name, c in contributions(history, best_utility, weighting).items()}
    for name in paid:
        weights.setdefault(name, Fraction(0))
    already = sum(paid.values())
    if final and not any(v > 0 for v in weights.values()):
        target = already  # nobody contributed anything measurable: what is unpaid goes back to the funder
    else:
        target = max(release(history, budget, interim_fraction, best_utility, final, per_round), already)
    cumulative = waterfill(paid, weights, target)  # target ≤ budget unless more was paid already: then nothing
    released = sum(cumulative.values())
    unreleased = max(budget - released, 0)
    return Allocation(cumulative, released, 0 if final else unreleased, unreleased if final else 0)
