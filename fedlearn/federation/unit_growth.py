"""Backdoor detection: hidden units that two institutions grow together, round after round, from a few inputs.

A backdoor trigger is a few input features set to one pattern, relabelled to one class. To learn it a model grows
some hidden unit's incoming weights from those features, and an institution training on triggered rows grows it
again every round, in the same direction; institutions planting the same trigger grow the same unit. Honest
institutions holding the same few classes also grow one unit alike every round, but from a class's many inputs
rather than a few (below, "Why the fourth power"). Nothing here knows the trigger,
its place or its class: the validation split cannot show a backdoor (its rows carry no trigger), the weights can.

The score, each round t, reads rounds 2..t (round 1 starts from the random initial model). For an institution i
and a hidden unit h, the residual r_i,h is the row of i's first-layer update for h minus the cohort's median row
(elementwise, over the round's institutions; an all-zero row counts as a cosine of 0 below). The unit scores

    U_i,h = consistency × concentration^4 × magnitude,

consistency the mean pairwise cosine of its residual rows over i's rounds (negative: 0), concentration the share
of the energy of their sum S_i,h in its :data:`TOP_INPUTS` largest inputs (to the power
:data:`CONCENTRATION_POWER`), and magnitude ‖S_i,h‖ over the median of ‖S_i,·‖ over i's own units (an institution
with little data moves every unit less: each is measured against itself, so neither small institutions nor a
sybil split shift anyone else's scale). A pair scores max_h min(U_i,h, U_j,h) × max(cos(S_i,h, S_j,h), 0); an
institution scores its best pair, and is flagged when that exceeds :data:`THRESHOLD`
(``integrity.backdoor_threshold``). One institution alone is never flagged: it takes two planting one trigger.
A unit score alone does not tell a planter: over seeds 42-50 (every round, 10 institutions;
``benchmarks/backdoor_check.py --planters hospital-05``), honest institutions' best units reach 4.28 at α = 0.1
(seed 42: 0.91 of the growth in 4 inputs, 6.7 times the median unit) and 1.84 at α = 0.5, where one planter alone
scores 0.99-8.19 from round 3 on (1.49 at most at seed 43); the pair's cosine is what separates.
The median stands for the honest cohort while fewer than half of a round's institutions plant one trigger; with
half or more, the honest residuals mirror the trigger and are flagged with the planters. Among 3 institutions
nobody is: no two residuals share a sign on any element.

Why the fourth power. Honest institutions on very skewed data (Dirichlet α = 0.05: one or two classes each) grow
one unit per dominant class every round, alike, and large: 6-23 times their median unit, against 3-6 for a
planter. What such a unit is grown from differs: a class's strokes spread over many pixels (0.29-0.47 of the
energy in the top 4), a trigger's 4 pixels hold 0.84-0.97. The first version, concentration to the first power
and a threshold of 2, flagged honest pairs at α = 0.05 (2.37 at seed 43, 3.21 at seed 47) and was an option; the
few honest units that are concentrated (0.83, seed 51) are small (1.7 times the median).

Measured online, the module as shipped (each round's flags from rounds 2..t; every pair counted for the honest
maxima), on the integrity benchmark's digits federation: 10 institutions, 3 of them (02, 05, 08) planting one
4-pixel trigger in 30 % of their rows, 8 rounds. :data:`TOP_INPUTS` was chosen on seeds 42-44; the power and
the threshold on seeds 42-56, after the first choice (the cube, threshold 1), made on 42-50, flagged an honest
institution at α = 0.05 on held-out seed 52 (1.29: a unit 23 times its median). Held out since, seeds 57-62:
honest institutions at most 0.33 (α = 0.05, 0.1 and 0.5), planters (α = 0.5) 15 of 18 flagged, all from round 3;
over seeds 42-62, 56 of 63, scoring 1.24 and more when first flagged. Honest institutions over seeds 42-56, with
or without planters beside them: α = 0.5 at most 0.22, α = 0.1 0.37, α = 0.05 0.72; 20 institutions (seeds 42,
43; α = 0.5 and 0.05) 0.35. Planters on skewed data are caught less: α = 0.1, 6 of 12; α = 0.05, 5 of 15. A
trigger spread over more inputs than :data:`TOP_INPUTS` concentrates less (about TOP_INPUTS / its size): a 3×3
trigger (9 pixels, seeds 42-44) scores at most 0.14 and is not caught (nor was it by the first version, 1.28
against its threshold of 2). A set-aside is never evidence against a stake: the check reads how weights grow,
not harm done.

The sums are saved with every round's checkpoint (``ScoredStrategy.check_state``): a resumed run checks as the
uninterrupted one.
A model without a hidden layer (logistic regression) has no unit to read, and one reading fewer than
:data:`MIN_INPUTS` features is not measured to tell a trigger from a class: the check is then off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

THRESHOLD = 1.0
"""A pair score above this flags both institutions (the module's measurements: honest institutions at most 0.72,
planters at α = 0.5 1.24 and more when first flagged)."""
TOP_INPUTS = 4
"""The inputs a unit's growth is concentrated in: a trigger of a few features."""
CONCENTRATION_POWER = 4
"""Concentration counts this many times over in a unit's score: it is what tells a trigger from a class learned on
skewed data (the module's docstring, "Why the fourth power")."""
MIN_INPUTS = 32
"""A first layer reading fewer input features is not checked. An even spread over d inputs already puts
TOP_INPUTS / d of a unit's growth in its top TOP_INPUTS, and on few features an honest class's unit concentrates by
itself: on wine (13 features; α = 0.5, seeds 42-44, and α = 0.1, seed 43) honest institutions scored 1.07-2.30,
over the threshold; on breast cancer (30 features, α = 0.5, seeds 42-44) 0.47-1.12, over it at seed 44; the
measurements above are on digits' 64."""
REASON = "its first-layer update grows a hidden unit with another institution's"
"""How the reason recorded for a set-aside begins (``rounds.json``'s ``rejected``), for whoever counts them."""
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
            scores[name] = (np.clip(consistency, 0.0, None) * concentration ** CONCENTRATION_POWER
                            * magnitude / scale)
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
        if len(candidates) < 2:
            return best
        # One unit at a time, every candidate pair at once: (candidates × candidates) per unit, not per pair in
        # Python (a thousand institutions make half a million pairs).
        summed = np.stack([self.sums[n] for n in candidates])  # (candidates, units, inputs)
        norms = np.linalg.norm(summed, axis=2, keepdims=True)
        directions = np.divide(summed, norms, out=np.zeros_like(summed), where=norms > 0)
        unit = np.stack([units[n] for n in candidates])  # (candidates, units)
        pair = np.zeros((len(candidates), len(candidates)))
        for h in range(unit.shape[1]):
            cosine = np.clip(directions[:, h] @ directions[:, h].T, 0.0, 1.0)
            pair = np.maximum(pair, np.minimum.outer(unit[:, h], unit[:, h]) * cosine)
        np.fill_diagonal(pair, 0.0)  # an institution does not pair with itself
        best.update(zip(candidates, (float(v) for v in pair.max(axis=1))))
        return best

    def flagged(self, among: Sequence[str]) -> dict[str, float]:
        """The institutions of ``among`` whose score exceeds the threshold → that score."""
        scores = self.scores()
        return {name: scores[name] for name in among if scores.get(name, 0.0) > self.threshold}
