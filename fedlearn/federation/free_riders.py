"""Free-rider detection: updates that carry no training signal of their own.

A free rider does not train. What it can send is the global model, or the global model moved along the
federation's own recent steps (a replay or an extrapolation of them), plus noise so that it is not byte-identical
to anything (Fraboni et al., 2021). What it cannot send is information about data: only training puts that in.

The test. Each update u_i = local_i − global is projected off the span of the last two global steps (what anyone
can replay); what is left, r_i, is the update's own signal. Honest residuals come from gradients of the same task
and share structure: a good part of each one's energy lies in the span of the others' residuals. Noise does not:
a random direction has a share k/d of its energy in a k-dimensional span of d dimensions. The score is that
share divided by k/d; noise scores about 1 (a χ²_k / k variable), honest residuals score in the tens to hundreds.
An update is flagged when its residual is (numerically) zero, an exact replay, or when its score stays below
``kappa``; flagged updates leave the reference span one by one, the most noise-like first, so that noise never
counts as a reference. Copies of one another (colluders) are in each other's span and pass: they are a different
attack, with a different defence.

Measured on digits with the default MLP (d = 4,810), 8 institutions (Dirichlet α = 0.1, quantity skew, IID),
rounds 3 and 5 of an honest run: honest institutions scored at least 11.8 (quantity skew, round 5; 27 to 380
otherwise), replays with noise σ from 1e-4 to 1e-2 and scales 0.5-2 at most 2.1. The default kappa = 5 sits
between; under pure noise with k = 8 references, a score above 5 has a probability of about 1e-5.

The threshold is kappa or the noise line, whichever is lower: the score pure noise exceeds with probability
:data:`NOISE_ALPHA` against k references, F⁻¹_χ²_k(1 − α) / k (4.98 at k = 9, 2.07 at k = 64). With many
references noise scores tightly around 1, and a fixed kappa = 5 only flags honest updates that noise could never
reach: in a 100-institution federation (generated data, ``benchmarks/scale.py``) honest scores fell from a median
of 31 in round 1 to 5.2 in round 6, with 18, 30 and 44 of 100 below 5 in rounds 4 to 6 and none below 2.07.
Up to k = 9 references (10 institutions) kappa stays the threshold, as before.

Evidence against a stake. Setting an update aside costs its sender that round's pay; counting it as a bad round
for slashing (``fedlearn.payout.slashing``) costs its stake, and that needs a round in which the test can tell
training from noise at all. Late in a run honest residuals thin out towards their own minibatch noise and the
whole round's scores sink towards the line: then the update set aside is merely the lowest of many low ones. A
round is *conclusive* when the median of the scores that pass the line is at least :data:`POWER` times the line
(the median of all scores would let enough free riders make their own round inconclusive). Measured (free-rider check
per round, 8 rounds each): digits, 10 institutions, seeds 42-44, with 3 noisy or disguised free riders or none,
the median stayed 17-124 times the line in every round, while free riders scored 0.2-2.4 and honest institutions
at least 16; on the generated data of ``benchmarks/scale.py`` from round 4 on the median was 1.2-2.1 times the
line (n = 10 and 30), and the honest updates set aside there (1 to 13 a round) had slashed 2 of 10 and 5 of 30
honest institutions. An exact replay (no residual at all) is always conclusive.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

DEFAULT_KAPPA = 5.0
NOISE_ALPHA = 1e-6
"""The chance that a pure-noise residual scores above the noise line (see the module)."""
POWER = 6.0
"""A round's set-asides count against a stake only when its median passing score is at least this many times the
line (see the module): between the ~2 of the weakest late rounds measured and the 17 of the weakest digits round."""
# Each residual is measured against the span of at most this many others. The score's ceiling is d/k (a residual
# wholly inside the span): with every other residual as reference, k = n − 1 grows until an honest update cannot
# reach kappa (at d = 2,810 and n = 1,000 the ceiling is 2.8 and half the federation was flagged). A fixed number
# of references, drawn at random among the others, keeps the test's power whatever n is; it is also kept below
# d / 20, so that the ceiling stays at least four times the default kappa.
MAX_REFERENCES = 64
# At least this many other updates are needed for the median to mean anything; below it nothing is flagged.
MIN_PEERS = 3


def flatten(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in arrays.values()])


def residuals(updates: Sequence[np.ndarray], steps: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each update with its least-squares projection on the span of ``steps`` (past global steps) removed."""
    usable = [s for s in steps if np.linalg.norm(s) > 0]
    if not usable:
        return [np.asarray(u, dtype=np.float64) for u in updates]
    basis, _ = np.linalg.qr(np.stack(usable, axis=1))  # orthonormal columns spanning the steps
    return [u - basis @ (basis.T @ u) for u in updates]


def entanglement(residual: Sequence[np.ndarray]) -> list[float]:
    """Per residual: the share of its energy inside the span of the other residuals, over the share a random
    direction would have there (k/d for k independent others in d dimensions). Noise scores about 1 (a χ²_k/k
    variable); a residual that shares the task's structure with the others scores in the tens or hundreds.

    Beyond ``MAX_REFERENCES`` others, each residual is measured against that many of them, drawn at random. Up to
    it, all at once from the Gram matrix G of the unit residuals when they are independent (the usual case): what
    is left of r_i after projecting it on the others is 1 / (G⁻¹)_ii, one n × n inverse instead of n
    decompositions of d × (n − 1) matrices. Dependent residuals (a zero one, exact copies) go one by one."""
    return [score for score, _ in scored(residual)]


def scored(residual: Sequence[np.ndarray]) -> list[tuple[float, int]]:
    """Per residual: (its :func:`entanglement` score, k, the number of independent references it was scored
    against)."""
    if not residual:
        return []
    d = residual[0].size
    n = len(residual)
    references = min(MAX_REFERENCES, max(1, d // 20))
    if n - 1 > references:
        return _entanglement_with_references(residual, references)
    stacked = np.stack([np.asarray(r, dtype=np.float64) for r in residual])
    energy = np.einsum("ij,ij->i", stacked, stacked)
    if n > 1 and (energy > 0).all():  # n - 1 ≤ references < d here
        scale = np.sqrt(energy)
        gram = (stacked / scale[:, None]) @ (stacked / scale[:, None]).T  # unit diagonal: conditioning, not size
        eigen = np.linalg.eigvalsh(gram)
        if eigen.min() > eigen.max() * 1e-12:
            outside = 1.0 / np.diag(np.linalg.inv(gram))  # share of each residual's energy outside the others
            return [(float((1.0 - o) * d / (n - 1)), n - 1) for o in np.clip(outside, 0.0, 1.0)]
    return _entanglement_one_by_one(residual)


@functools.lru_cache(maxsize=256)  # k is nearly always the same few values; a χ² quantile costs ~0.2 ms
def threshold(k: int, kappa: float = DEFAULT_KAPPA) -> float:
    """The score below which a residual scored against k references is flagged: kappa, or the noise line
    F⁻¹_χ²_k(1 − :data:`NOISE_ALPHA`) / k where that is lower."""
    return min(kappa, float(chi2.ppf(1.0 - NOISE_ALPHA, k)) / k) if k > 0 else kappa


def references(residual: Sequence[np.ndarray], k: int) -> list[list[int]]:
    """For each residual, ``k`` other non-zero residuals drawn at random (the same draw for the same federation
    size, so that a round's verdicts can be recomputed)."""
    rng = np.random.default_rng(len(residual))
    usable = [j for j, r in enumerate(residual) if np.any(r)]
    chosen = []
    for i in range(len(residual)):
        others = [j for j in usable if j != i]
        chosen.append([others[c] for c in rng.choice(len(others), size=min(k, len(others)), replace=False)])
    return chosen


def _entanglement_with_references(residual: Sequence[np.ndarray], k: int) -> list[tuple[float, int]]:
    """The score of each residual against the span of ``k`` others (:func:`references`), all from one Gram matrix
    of the unit residuals: the share of r_i inside span(B) is gᵀ G_B⁺ g with G_B the references' Gram matrix and
    g their inner products with r_i (numerically dependent directions dropped, as the SVD path drops them)."""
    d = residual[0].size
    stacked = np.stack([np.asarray(r, dtype=np.float64) for r in residual])
    norms = np.linalg.norm(stacked, axis=1)
    unit = stacked / np.where(norms > 0, norms, 1.0)[:, None]
    gram = unit @ unit.T
    scores: list[tuple[float, int]] = []
    for i, refs in enumerate(references(residual, k)):
        if norms[i] == 0:
            scores.append((0.0, len(refs)))
            continue
        if not refs:
            scores.append((float("inf"), 0))
            continue
        eigen, vectors = np.linalg.eigh(gram[np.ix_(refs, refs)])
        keep = eigen > eigen.max() * 1e-12
        projected = vectors[:, keep].T @ gram[refs, i]
        inside = float(np.sum(projected**2 / eigen[keep]))
        scores.append((min(inside, 1.0) * d / int(keep.sum()), int(keep.sum())))
    return scores


def _entanglement_one_by_one(residual: Sequence[np.ndarray]) -> list[tuple[float, int]]:
    """The same scores, each residual projected on an orthonormal basis of the others' span."""
    d = residual[0].size if residual else 1
    scores: list[tuple[float, int]] = []
    for i, r in enumerate(residual):
        others = [x for j, x in enumerate(residual) if j != i and np.linalg.norm(x) > 0]
        energy = float(r @ r)
        if not others or energy == 0:
            scores.append((0.0 if energy == 0 else float("inf"), len(others)))
            continue
        basis = _orthonormal(np.stack(others, axis=1))
        k = basis.shape[1]
        inside = float(np.sum((basis.T @ r) ** 2))
        scores.append((inside / energy * d / k if k else float("inf"), k))
    return scores


def _orthonormal(columns: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns' span (numerically independent directions only)."""
    u, singular, _ = np.linalg.svd(columns, full_matrices=False)
    return u[:, singular > singular.max() * 1e-10] if singular.size else u


@dataclass(frozen=True)
class Verdict:
    """Why an update was set aside, and whether the round was conclusive enough to hold it against a stake."""

    reason: str
    conclusive: bool


def free_riders(
    updates: Sequence[np.ndarray], steps: Sequence[np.ndarray], kappa: float = DEFAULT_KAPPA
) -> dict[int, Verdict]:
    """Index → verdict for every update that carries no training signal of its own (see the module).

    Flagged updates are taken out a few at a time (one while there are at most 50 updates, then 2 %), the most
    noise-like first, and the rest measured again among themselves: a noise residual is no reference for anyone,
    and several of them would drag an honest institution's score towards the noise line.
    """
    resid = residuals(updates, steps)
    flagged: dict[int, Verdict] = {}
    for i, (u, r) in enumerate(zip(updates, resid)):
        if np.linalg.norm(r) <= 1e-9 * max(float(np.linalg.norm(u)), 1e-300):
            flagged[i] = Verdict("update is a replay of past global steps (no training signal of its own)", True)
    power: tuple[float, float] | None = None  # (median passing score, median line) of the round's first pass
    while True:
        remaining = [i for i in range(len(updates)) if i not in flagged]
        if len(remaining) < MIN_PEERS + 1:
            return flagged
        pairs = scored([resid[i] for i in remaining])
        scores = [score for score, _ in pairs]
        lines = [threshold(k, kappa) for _, k in pairs]
        if power is None:
            # What the test can tell apart this round: the median of the scores that pass their line, on the first
            # pass (free riders below the line must not drag it down: the more of them, the less they would be
            # held to account), against the median line. Nobody passes: nothing conclusive.
            passing = [score for score, line in zip(scores, lines) if score >= line]
            power = float(np.median(passing)) if passing else 0.0, float(np.median(lines))
        conclusive = power[0] >= POWER * power[1]
        below = [int(j) for j in np.argsort(scores, kind="stable") if scores[j] < lines[j]]
        if not below:
            return flagged
        for worst in below[: max(1, len(remaining) // 50)]:
            reason = (f"update carries no training signal of its own (its residual shares no more with the others' "
                      f"than noise does: score {scores[worst]:.2f} < {lines[worst]:.2f})")
            if not conclusive:
                reason += (f"; not held against its stake: the round's median passing score {power[0]:.2f} is under "
                           f"{POWER:g} × the line, too close to tell training from noise")
            flagged[remaining[worst]] = Verdict(reason, conclusive)
