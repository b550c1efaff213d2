"""Backdoor detection: hidden units that two institutions grow together, round after round, from a few inputs.

A backdoor trigger is a few input features set to one pattern, relabelled to one class. To learn it a model grows
some hidden unit's incoming weights from those features, and an institution training on triggered rows grows it
again every round, in the same direction; institutions planting the same trigger grow the same unit. Honest
training on skewed data also moves units more than the cohort does, but not in one direction every round, drawn
from a few inputs, and not the same unit as another institution the same way. Nothing here knows the trigger,
its place or its class: the validation split cannot show a backdoor (its rows carry no trigger), the weights can.

The score, each round t, reads rounds 2..t (round 1 starts from the random initial model). For an institution i
and a hidden unit h, the residual r_i,h is the row of i's first-layer update for h minus the cohort's median row
(elementwise, over the round's institutions; an all-zero row counts as a cosine of 0 below). The unit scores

    U_i,h = consistency × concentration × magnitude,

consistency the mean pairwise cosine of its residual rows over i's rounds (negative: 0), concentration the share
of the energy of their sum S_i,h in its :data:`TOP_INPUTS` largest inputs, and magnitude ‖S_i,h‖ over the median
of ‖S_i,·‖ over i's own units (an institution with little data moves every unit less: each is measured against
itself, so neither small institutions nor a sybil split shift anyone else's scale). A pair scores
max_h min(U_i,h, U_j,h) × max(cos(S_i,h, S_j,h), 0); an institution scores its best pair, and is flagged when that
exceeds :data:`THRESHOLD` (``integrity.backdoor_threshold``). One institution alone is never flagged: it takes
two planting one trigger.

Measured online (each round's flags from rounds 2..t; the parameters, :data:`TOP_INPUTS` among them, were chosen
on seeds 42-44 of the integrity benchmark's digits federation: 10 institutions, 3 planting one 4-pixel trigger
in 30 % of their rows, Dirichlet α = 0.5, 8 rounds). Held out, seeds 45-50: all 18 planters flagged from round 3
on, scoring 2.43-6.81 by round 8; 20 institutions with 6 planters (seeds 42, 43): all 12 from round 3. Seeds
42-44: 8 of 9 (one scores 1.36). Weaker attacks: a trigger in 10 % of rows, 6 of 9; another target class, 8 of
9; label flips, targeted flips and boosted updates score at most 0.68. Honest institutions, the highest score at
any round with every pair counted: α = 0.5 (seeds 42-50, with or without planters) 1.47; one institution split
into 3 sybils 1.23; 5 or 20 institutions 1.22; α = 0.1 (seeds 42-47) 1.99; α = 0.05 (seeds 42, 43) 2.37, over the
threshold (two institutions at seed 43). Honest institutions whose data is that skewed also grow a unit from a
few pixels every round, alike: the check is an option (``integrity.backdoor_threshold``, off by default), and a
set-aside it makes is never evidence against a stake. A trigger spread over many more inputs than
:data:`TOP_INPUTS` concentrates less (about TOP_INPUTS / its size) and was not measured.

The sums are saved with every round's checkpoint (``ScoredStrategy.check_state``): a resumed run checks as the
uninterrupted one.
A model without a hidden layer (logistic regression) has no unit to read; the check is then off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

THRESHOLD = 2.0
"""A pair score above this flags both institutions (the module's measurements: planters 2.43 and more by the end of
a run; honest institutions at most 1.47 at α = 0.5, 1.99 at α = 0.1, 2.37 at α = 0.05)."""
TOP_INPUTS = 4
"""The inputs a unit's growth is concentrated in: a trigger of a few features."""
FIRST_ROUND = 2
"""Round 1 starts from the random initial model, where every update moves every unit: not read."""
MIN_INSTITUTIONS = 3
"""A median residual needs at least this many updates in the round."""


@dataclass
class UnitGrowth:
    """The running sums the score needs, per institution: Σ residual rows, Σ of their unit-normalised rows (the
    mean pairwise cosine over T rounds is (‖Σ n‖² − T) / (T (T − 1))), and the rounds read."""

    threshold: float = THRESHOLD
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    directions: dict[str, np.ndarray] = field(default_factory=dict)
    rounds: dict[str, int] = field(default_factory=dict)

    def observe(self, server_round: int, updates: Mapping[str, np.ndarray]) -> None:
        """Read one round: institution → its first-layer update (local minus start), shape (units, inputs)."""
        if server_round < FIRST_ROUND or len(updates) < MIN_INSTITUTIONS:
            return
        names = sorted(updates)
        for name in names:
            if name in self.sums and self.sums[name].shape != np.shape(updates[name]):
                raise ValueError(f"{name}'s first layer changed shape from {self.sums[name].shape} to "
                                 f"{np.shape(updates[name])}")
        stacked = np.stack([np.asarray(updates[n], dtype=np.float64) for n in names])
        residuals = stacked - np.median(stacked, axis=0, keepdims=True)
        norms = np.linalg.norm(residuals, axis=2, keepdims=True)
        unit = np.divide(residuals, norms, out=np.zeros_like(residuals), where=norms > 0)
        for name, residual, direction in zip(names, residuals, unit):
            self.sums[name] = self.sums.get(name, 0.0) + residual
            self.directions[name] = self.directions.get(name, 0.0) + direction
            self.rounds[name] = self.rounds.get(name, 0) + 1

    def unit_scores(self) -> dict[str, np.ndarray]:
        """U_i,h for every institution read in at least two rounds (fewer: no consistency to measure)."""
        scores = {}
        for name in sorted(self.sums):
            t = self.rounds[name]
            summed = self.sums[name]
            magnitude = np.linalg.norm(summed, axis=1)
            scale = float(np.median(magnitude))
            if t < 2 or scale <= 0:
                continue
            energy = summed ** 2
            total = energy.sum(axis=1)
            top = np.sort(energy, axis=1)[:, -TOP_INPUTS:].sum(axis=1)
            concentration = np.divide(top, total, out=np.zeros_like(top), where=total > 0)
            consistency = ((self.directions[name] ** 2).sum(axis=1) - t) / (t * (t - 1))
            scores[name] = np.clip(consistency, 0.0, None) * concentration * magnitude / scale
        return scores

    def scores(self, floor: float | None = None) -> dict[str, float]:
        """Each institution's best pair score, over every institution read (a partner need not be in the same
        round). Only institutions with a unit above ``floor`` (default: the threshold) are paired: a pair above
        it needs a unit above it in both, so flags are exact, and any other institution scores 0 (its true score
        is at most the floor). ``floor=-inf`` pairs everyone."""
        units = self.unit_scores()
        floor = self.threshold if floor is None else floor
        best = dict.fromkeys(units, 0.0)
        candidates = [n for n in sorted(units) if units[n].max() > floor]
        for a, first in enumerate(candidates):
            for second in candidates[a + 1:]:
                s1, s2 = self.sums[first], self.sums[second]
                n1, n2 = np.linalg.norm(s1, axis=1), np.linalg.norm(s2, axis=1)
                dots = (s1 * s2).sum(axis=1)
                cosine = np.divide(dots, n1 * n2, out=np.zeros_like(dots), where=(n1 > 0) & (n2 > 0))
                pair = float((np.minimum(units[first], units[second]) * np.clip(cosine, 0.0, 1.0)).max())
                best[first], best[second] = max(best[first], pair), max(best[second], pair)
        return best

    def flagged(self, among: Sequence[str]) -> dict[str, float]:
        """The institutions of ``among`` whose score exceeds the threshold → that score."""
        scores = self.scores()
        return {name: scores[name] for name in among if scores.get(name, 0.0) > self.threshold}
