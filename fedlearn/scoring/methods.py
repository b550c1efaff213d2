"""Scoring methods by name, as configuration and the CLI spell them."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from fedlearn.config import BANZHAF_ESTIMATORS
from fedlearn.errors import ScoringError
from fedlearn.scoring._validate import check_players
from fedlearn.scoring.banzhaf import DEFAULT_SAMPLES, DEFAULT_TOLERANCE, banzhaf
from fedlearn.scoring.banzhaf_surrogate import MAX_PLAYERS, banzhaf_surrogate
from fedlearn.scoring.gtg import gtg_shapley
from fedlearn.scoring.loo import leave_one_out
from fedlearn.scoring.result import ScoreResult
from fedlearn.scoring.shapley import exact_shapley
from fedlearn.scoring.utility import Utility

SCORING_METHODS: tuple[str, ...] = ("loo", "shapley", "gtg", "banzhaf", "none")

# Keyword options gtg_shapley accepts besides rng; checked for every method so that a misspelt
# option fails even while another method is configured.
GTG_OPTIONS: frozenset[str] = frozenset(
    name
    for name, p in inspect.signature(gtg_shapley).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "rng"
)


def banzhaf_estimator_for(estimator: str, n: int, samples: int, *, weighted_mean: bool) -> str:
    """The Banzhaf estimator that scores n players: "exact" when the budget covers every coalition, else the one
    named; "auto" names the surrogate where it models the game — coalition models that are a function of the
    members' weight shares (``weighted_mean``: FedAvg, FedProx, FedAdam), at most :data:`MAX_PLAYERS` players and a
    budget of at least 2n + 4 and at most half the 2^n coalitions (its greedy design costs the square of its picks
    times the pool: minutes a round near 2^12) — and the regression elsewhere (it takes any n and stops early)."""
    if estimator not in BANZHAF_ESTIMATORS:
        raise ScoringError(f"unknown Banzhaf estimator {estimator!r}; valid: {', '.join(BANZHAF_ESTIMATORS)}")
    if 2**n <= samples:
        return "exact"
    if estimator != "auto":
        return estimator
    fits = weighted_mean and n <= MAX_PLAYERS and 2 * n + 4 <= samples <= 2 ** (n - 1)
    return "surrogate" if fits else "regression"


def score_round(
    method: str, n: int, utility: Utility, *, rng: np.random.Generator, banzhaf_samples: int = DEFAULT_SAMPLES,
    banzhaf_tolerance: float = DEFAULT_TOLERANCE, banzhaf_estimator: str = "regression",
    weights: np.ndarray | None = None, **gtg_options: Any
) -> ScoreResult:
    """Score one round's n players with the named method; ``gtg_options`` only affect "gtg", the ``banzhaf_``
    options only "banzhaf". ``banzhaf_estimator`` is "regression" or "surrogate" ("auto" is resolved by the
    caller, which knows how coalition models are formed: :func:`banzhaf_estimator_for`). ``weights`` (each player's
    aggregation weight) is what the surrogate estimator models coalitions by; without them it weighs every player
    alike."""
    unknown = sorted(set(gtg_options) - GTG_OPTIONS)
    if unknown:
        raise ScoringError(f"unknown GTG option(s) {', '.join(unknown)}; valid: {', '.join(sorted(GTG_OPTIONS))}")
    if method == "loo":
        return leave_one_out(n, utility)
    if method == "shapley":
        return exact_shapley(n, utility)
    if method == "gtg":
        return gtg_shapley(n, utility, rng=rng, **gtg_options)
    if banzhaf_estimator not in ("regression", "surrogate"):
        raise ScoringError(f"unknown Banzhaf estimator {banzhaf_estimator!r}; valid here: regression, surrogate "
                           "(resolve \"auto\" with banzhaf_estimator_for)")
    if method == "banzhaf" and banzhaf_estimator == "surrogate":
        return banzhaf_surrogate(n, utility, np.ones(n) if weights is None else weights, rng=rng,
                                 samples=banzhaf_samples)
    if method == "banzhaf":
        return banzhaf(n, utility, rng=rng, samples=banzhaf_samples, tolerance=banzhaf_tolerance)
    if method == "none":
        return ScoreResult(np.zeros(check_players(n)), 0, "none")
    raise ScoringError(f"unknown scoring method {method!r}; valid: {', '.join(SCORING_METHODS)}")
