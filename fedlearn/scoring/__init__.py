"""Contribution scoring: one value per player from a round's utility U(S). Pure numpy.

A utility maps a subset of this round's updates (a frozenset of player indices) to the validation
metric of the model aggregated from them; ``U(frozenset())`` is the round's starting global model.
"""

from fedlearn.scoring.banzhaf import banzhaf
from fedlearn.scoring.banzhaf_surrogate import banzhaf_surrogate
from fedlearn.scoring.gtg import gtg_shapley
from fedlearn.scoring.loo import leave_one_out
from fedlearn.scoring.methods import SCORING_METHODS, banzhaf_estimator_for, score_round
from fedlearn.scoring.result import ScoreResult
from fedlearn.scoring.shapley import MAX_EXACT_PLAYERS, exact_shapley
from fedlearn.scoring.utility import CachedUtility, Utility

__all__ = [
    "MAX_EXACT_PLAYERS",
    "SCORING_METHODS",
    "CachedUtility",
    "ScoreResult",
    "Utility",
    "banzhaf",
    "banzhaf_estimator_for",
    "banzhaf_surrogate",
    "exact_shapley",
    "gtg_shapley",
    "leave_one_out",
    "score_round",
]
