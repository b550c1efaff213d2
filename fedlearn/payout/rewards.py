"""Scores become token amounts: a round's budget split over positive scores, in integer wei.

reward_i = floor(budget · max(s_i, 0) / Σ max(s, 0)). What floor division leaves (under one wei per
institution) and a whole budget when no score is positive roll over to the next round, so no token of the
budget is lost or paid twice.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

WEI_PER_TOKEN = 10**18


def tokens_to_wei(tokens: float) -> int:
    """Exact for decimal inputs such as 100.1 (no binary float error)."""
    return int(Decimal(str(tokens)) * WEI_PER_TOKEN)


def split_budget(scores: dict[str, float], budget: int) -> tuple[dict[str, int], int]:
    """(reward per institution, unspent wei to roll over); institutions with score ≤ 0 get 0."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    # Exact rationals: the same scores give the same wei on every machine.
    positive = {name: Fraction(s) for name, s in scores.items() if s > 0}
    total = sum(positive.values(), Fraction(0))
    rewards = {name: 0 for name in scores}
    if total == 0:
        return rewards, budget
    for name, score in positive.items():
        rewards[name] = int(budget * score / total)
    return rewards, budget - sum(rewards.values())
