"""Boosted updates: an update that moves the model far further per local step than the round's others do.

Boosting (model replacement, Bagdasaryan et al. 2020) multiplies a trained update by a factor so that it outweighs
the others in the average. Its direction is honest; its length is not. How far honest training moves the model
grows with the local steps it takes, ceil(examples / batch size) × local epochs, which the coordinator knows from
the example counts it registered, not from what a reply says. So each update's length is divided by its
institution's steps and compared with the round's reference: the median length per step, taken twice — over every
update, then over those within a factor ``limit`` of that first median — so that updates which barely move (low
effort, near-copies) or which move a lot cannot drag the reference towards themselves.

An update above ``limit`` times the reference is clipped to it (FLAME, Nguyen et al. 2022, clips every update to the
median length for the same reason) and reaches the model at that length, but is not paid for the round: its
length overstated its work. It is not evidence against a stake. An honest institution whose data the model has not
learnt yet can take long steps too (under peer validation an institution voted down for the first rounds stayed
3.3–5.4× the median); clipped, its data still enters the model, its steps shorten as the model learns it, and the
round costs it that round's pay, never its stake.

Measured on honest federations (digits, Dirichlet α = 0.5 and 0.1, pathological 1 and 2 classes, quantity skew,
IID; wine; breast cancer; three seeds, four FedAvg rounds each): the largest honest ratio to the median was 2.21
(breast cancer, and digits at α = 0.1), 1.65 on the integrity benchmark's data; an update boosted 5× there sits at
3.05 or more. A boost below the limit passes, and is met by the scoring and the harmful-update check as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# The fewest updates whose median is a reference at all: with two, each is half of it.
MIN_UPDATES = 3


def local_steps(examples: int, batch_size: int, local_epochs: int) -> int:
    """The optimiser steps an institution with ``examples`` rows takes in a round."""
    return max(1, math.ceil(max(examples, 1) / batch_size)) * local_epochs


def reference_per_step(per_step: np.ndarray, limit: float) -> float:
    """The median length per step over the updates within a factor ``limit`` of the plain median (0 when there is
    no positive median to read)."""
    first = float(np.median(per_step))
    if not math.isfinite(first) or first <= 0:
        return 0.0
    near = per_step[(per_step >= first / limit) & (per_step <= first * limit)]
    # An even count's median can fall between two updates that both lie beyond a small limit of it.
    return float(np.median(near)) if near.size else first


def overlong(lengths: Sequence[float], steps: Sequence[int], limit: float) -> dict[int, float]:
    """Index → its length per step over the reference, for every update above ``limit`` (``limit`` 0: none)."""
    if limit <= 0 or len(lengths) < MIN_UPDATES:
        return {}
    per_step = np.asarray(lengths, dtype=np.float64) / np.asarray(steps, dtype=np.float64)
    reference = reference_per_step(per_step, limit)
    if reference <= 0:
        return {}
    ratios = per_step / reference
    return {i: float(r) for i, r in enumerate(ratios) if r > limit}
