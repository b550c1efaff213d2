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
    # The round's validated gain: the aggregate's utility over the start model's on the server's validation split,
    # with its bootstrap interval; only a significant gain counts towards contribution and pays.
    utility: str = ""
    start_utility: float = 0.0
    gain: float = 0.0
    gain_low: float = 0.0
    gain_high: float = 0.0
    significant: bool = False
    # Scored, but left out of the aggregate because their contribution was negative (integrity.exclude_harmful):
    # they keep their score, which is what slashing reads.
    excluded: dict[str, str] = field(default_factory=dict)
    # Neither a bad round for slashing nor a clean one: set aside as free riders in a round whose scores sat too
    # close to the noise line to tell training from noise (fedlearn.federation.free_riders.POWER), or, under peer
    # validation, voted below the slashing bar where the server's validation split did not confirm the harm (the
    # reason is in ``excluded``). Not paid either way.
    inconclusive: list[str] = field(default_factory=list)
    # Boosted: an update that moved the model far further per local step than the round's others, clipped to the
    # limit before it was aggregated and scored, and not paid for the round (fedlearn.federation.step_lengths).
    # Its score is recorded as at most 0; not a bad round for slashing unless that score is itself negative.
    clipped: dict[str, str] = field(default_factory=dict)
    # Peer validation: voter → its ballot as committed and opened ({"commitment", "salt", "votes", "weight"}, and
    # "broken" with the reason when it did not open), so that anyone can recheck every commitment.
    ballots: dict[str, dict] = field(default_factory=dict)
    # Where the scores are estimated (Banzhaf beyond exact): each score's 95 % interval half-width; 0 when exact.
    score_errors: dict[str, float] = field(default_factory=dict)
    # Banzhaf only: how the scores were computed — "exact" (every coalition), "regression" or "surrogate"
    # (scoring.banzhaf_estimator, "auto" resolved for this round's count of updates).
    estimator: str = ""

    @property
    def label(self) -> str:
        """The method with its estimator where there is one, as round lines print it: "banzhaf exact"."""
        return f"{self.method} {self.estimator}" if self.estimator else self.method
