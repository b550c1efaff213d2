"""Input checks shared by the scoring methods."""

from __future__ import annotations

import operator

from fedlearn.errors import ScoringError


def check_players(n: int) -> int:
    """Return ``n`` as an int, refusing anything that is not a count of players."""
    try:
        count = operator.index(n)
    except TypeError:
        raise ScoringError(f"number of players must be an integer, got {n!r}") from None
    if count < 0:
        raise ScoringError(f"number of players must be >= 0, got {count}")
    return count
