"""The slashing policy: which institutions have earned a slash, how much it takes, and its evidence. Pure.

Rule. A round is *bad* for an institution that took part in it when its update was rejected (by the reply
checks or the robust aggregator) or its contribution score was below −threshold. An institution is flagged
when at least k of its last m rounds (the rounds it took part in, not the federation's) were bad. k ≥ 2, so
one unlucky round never slashes anyone, whatever the threshold.

Offence window. A slash settles the evidence it rests on: the institution's window starts empty after the
round it was flagged in, so the same bad rounds never slash twice, and a steadily harmful institution is
flagged again only after k new bad rounds. The whole history is replayed from its start every time, so the
answer depends on the history alone (no state to lose or duplicate between runs).
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from fedlearn.errors import ConfigError

EVIDENCE_DOMAIN = b"fedlearn/slash-evidence/v1"
"""Prefixed to every evidence preimage so its hash cannot collide with another fedlearn hash."""


@dataclass(frozen=True)
class RoundFlags:
    """What one round says about each institution that took part: its score, or that it was rejected.

    ``scores`` covers the scored institutions (rejected ones may appear too, with 0); the participants are
    ``scores``' keys together with ``rejected``.
    """

    round: int
    scores: Mapping[str, float] = field(default_factory=dict)
    rejected: frozenset[str] = frozenset()

    def participants(self) -> set[str]:
        return set(self.scores) | set(self.rejected)


@dataclass(frozen=True)
class Offence:
    """An institution flagged at ``round`` on the evidence of its ``bad_rounds`` (k of them or more)."""

    institution: str
    round: int
    bad_rounds: tuple[int, ...]


@dataclass(frozen=True)
class SlashingPolicy:
    """Slash ``fraction`` of the stake of an institution with ≥ k bad rounds among its last m (see module)."""

    threshold: float
    k: int
    m: int
    fraction: float

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not math.isfinite(self.threshold) or self.threshold < 0:
            raise ConfigError(f"slashing threshold = {self.threshold!r} must be a finite number >= 0 "
                              "(a score below -threshold counts as harmful)")
        for name in ("k", "m"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"slashing {name} = {value!r} must be an integer")
        if self.k < 2:
            raise ConfigError(f"slashing k = {self.k} would slash on a single bad round; one unlucky round "
                              "must not slash an institution (use k >= 2)")
        if self.m < self.k:
            raise ConfigError(f"slashing k = {self.k} bad rounds cannot fit in a window of m = {self.m} rounds "
                              "(need k <= m)")
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) \
                or not math.isfinite(self.fraction):
            raise ConfigError(f"slashing fraction = {self.fraction!r} must be a number in (0, 1]")
        if self.fraction > 1:
            raise ConfigError(f"slashing fraction = {self.fraction} would slash more than the stake "
                              "(at most 1, the whole stake)")
        if self.fraction <= 0:
            raise ConfigError(f"slashing fraction = {self.fraction} must be > 0 (to slash nobody, leave slashing off)")

    @classmethod
    def of(cls, integrity: Any) -> SlashingPolicy:
        """The policy a run's ``integrity`` section sets."""
        return cls(integrity.slash_threshold, integrity.slash_k, integrity.slash_m, integrity.slash_fraction)

    def is_bad(self, record: RoundFlags, institution: str) -> bool:
        """Whether ``record`` is a bad round for ``institution`` (rejected, or scored below −threshold)."""
        if institution in record.rejected:
            return True
        score = record.scores.get(institution)
        return score is not None and score < -self.threshold

    def offences(self, history: Iterable[RoundFlags]) -> list[Offence]:
        """Every offence in ``history`` (rounds in increasing order), in the order they occur."""
        windows: dict[str, deque[tuple[int, bool]]] = {}
        found: list[Offence] = []
        previous: int | None = None
        for record in history:
            if previous is not None and record.round <= previous:
                raise ValueError(f"history rounds must increase, got {record.round} after {previous}")
            previous = record.round
            for name in sorted(record.participants()):
                window = windows.setdefault(name, deque(maxlen=self.m))
                window.append((record.round, self.is_bad(record, name)))
                bad = tuple(r for r, is_bad in window if is_bad)
                if len(bad) >= self.k:
                    found.append(Offence(name, record.round, bad))
                    window.clear()  # the slash settles this evidence: start a new window
        return found

    def flagged(self, history: list[RoundFlags]) -> set[str]:
        """Institutions to slash after the last round of ``history``: those with an offence in that round."""
        if not history:
            return set()
        last = history[-1].round
        return {o.institution for o in self.offences(history) if o.round == last}


def slash_amount(stake: int, policy: SlashingPolicy) -> int:
    """floor(stake × fraction) in exact arithmetic (stakes are token base units, up to 10^27 and beyond).

    The fraction is read as the decimal it is written as (0.1 is one tenth), never more than the stake.
    """
    if isinstance(stake, bool) or not isinstance(stake, int) or stake < 0:
        raise ValueError(f"stake = {stake!r} must be a non-negative integer")
    return min(stake, math.floor(stake * Fraction(repr(float(policy.fraction)))))


def offence_fingerprint(update_hashes: Mapping[str, str], rejected: Mapping[str, str], name: str) -> str:
    """What a slash of ``name`` rests on for a round: its update's hash, or for an update rejected before it was
    hashed, the sha256 of the rejection's reason (hex with 0x)."""
    return update_hashes.get(name) or "0x" + hashlib.sha256(rejected.get(name, "").encode()).hexdigest()


def run_offences(rounds: Iterable[Mapping[str, Any]], policy: SlashingPolicy) -> dict[tuple[int, str], str]:
    """(round, institution) → what its slash rests on (``offence_fingerprint``), for every offence in a run's
    rounds (as ``rounds.json`` records them). A set-aside the free-rider check could not read, or a crash, counts
    neither way: not a bad round, and not a clean one that would push earlier evidence out of the window."""
    history, recorded = [], {}
    for r in rounds:
        scores = r.get("scores")
        if not scores:
            continue
        unread = set(scores.get("inconclusive", ()))
        history.append(RoundFlags(r["server_round"], {k: v for k, v in scores["scores"].items() if k not in unread},
                                  frozenset(scores.get("rejected", {})) - unread))
        recorded[r["server_round"]] = scores
    return {(o.round, o.institution): offence_fingerprint(recorded[o.round].get("update_hashes", {}),
                                                          recorded[o.round].get("rejected", {}), o.institution)
            for o in policy.offences(history)}


def run_evidence(rounds: Iterable[Mapping[str, Any]], offset: int) -> dict[tuple[str, str], tuple[int, str]]:
    """(0x evidence, institution) → (round, institution) for every update a run's rounds (as ``rounds.json``
    records them) scored or rejected: what a slash of that run can rest on, its rounds numbered as the chain
    numbers them (the run's plus ``offset``)."""
    evidence: dict[tuple[str, str], tuple[int, str]] = {}
    for r in rounds:
        scores = r.get("scores") or {}
        hashes, rejected = scores.get("update_hashes", {}), scores.get("rejected", {})
        for name in {*scores.get("scores", {}), *rejected}:
            key = "0x" + evidence_hash(offset + r["server_round"], offence_fingerprint(hashes, rejected, name)).hex()
            evidence[(key, name)] = (r["server_round"], name)
    return evidence


def evidence_hash(round: int, update_hash: str) -> bytes:
    """sha256(domain ‖ round as 32-byte big-endian ‖ the update's 32-byte hash): the 32 bytes a slash records.

    ``round`` is the chain's round number (a run's round plus its offset on the deployment), so that no two runs
    on one deployment share evidence; ``update_hash`` is the hex (with or without 0x) of the offending update's
    32-byte fingerprint.
    """
    if isinstance(round, bool) or not isinstance(round, int) or not 0 <= round < 2**256:
        raise ValueError(f"round = {round!r} must be a non-negative integer below 2**256")
    if not isinstance(update_hash, str):
        raise ValueError(f"update hash {update_hash!r} must be a hex string")
    text = update_hash[2:] if update_hash[:2].lower() == "0x" else update_hash
    try:
        digest = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"update hash {update_hash!r} is not hex") from None
    if len(digest) != 32:
        raise ValueError(f"update hash {update_hash!r} is {len(digest)} bytes, expected 32")
    return hashlib.sha256(EVIDENCE_DOMAIN + round.to_bytes(32, "big") + digest).digest()
