"""Token units: decimal token amounts become wei exactly."""

from __future__ import annotations

from fedlearn.payout.rewards import WEI_PER_TOKEN, tokens_to_wei


def test_tokens_to_wei_is_exact_for_decimal_amounts() -> None:
    assert tokens_to_wei(100.1) == 100_100_000_000_000_000_000
    assert tokens_to_wei(0.000000000000000001) == 1
    assert tokens_to_wei(3) == 3 * WEI_PER_TOKEN
