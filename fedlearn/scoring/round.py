"""What one round's scoring found, per institution: the record the run directory, ledger and slashing read."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RoundScores:
    """What one round's scoring found; rejected institutions score 0, and everyone in a skipped round."""

    server_round: int
    scores: dict[str, float]
    num_examples: dict[str, int]
    rejected: dict[str, str]
    evaluations: int
    scoring_seconds: float
    truncated: bool
    method: str
    update_hashes: dict[str, str] = field(default_factory=dict)
    disagreeing_voters: list[str] = field(default_factory=list)
    # Why the round produced no model ("" when it did): every score is then 0 and nothing is paid.
    skipped: str = ""
