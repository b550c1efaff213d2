"""Token units: amounts are integer wei (18 decimals) everywhere money moves; how they are shared out is
``fedlearn.payout.schedule``."""

from __future__ import annotations

from decimal import Decimal

WEI_PER_TOKEN = 10**18


def tokens_to_wei(tokens: float) -> int:
    """Exact for decimal inputs such as 100.1 (no binary float error)."""
    return int(Decimal(str(tokens)) * WEI_PER_TOKEN)
