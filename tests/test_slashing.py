"""The slashing rule: k bad rounds in an institution's last m, never on one unlucky round, window reset, amounts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedlearn.config import RunConfig
from fedlearn.errors import ConfigError
from fedlearn.federation.coordinator import offenders
from fedlearn.payout.slashing import EVIDENCE_DOMAIN, Offence, RoundFlags, SlashingPolicy, evidence_hash, slash_amount
from fedlearn.records.rundir import RoundResult, RunRecorder
from fedlearn.scoring.round import RoundScores

POLICY = SlashingPolicy(threshold=0.01, k=3, m=5, fraction=0.5)
HONEST = ["hospital-01", "hospital-02", "hospital-03"]


def run(rounds: int, bad: dict[str, set[int]] | None = None, rejected: dict[str, set[int]] | None = None,
        honest_score: float = 0.02) -> list[RoundFlags]:
    """A history: every institution scores ``honest_score`` except in its bad rounds (−0.1) or rejected ones."""
    bad, rejected = bad or {}, rejected or {}
    names = sorted(set(HONEST) | set(bad) | set(rejected))
    history = []
    for r in range(1, rounds + 1):
        out = frozenset(n for n in names if r in rejected.get(n, set()))
        scores = {n: (-0.1 if r in bad.get(n, set()) else honest_score) for n in names if n not in out}
        history.append(RoundFlags(r, scores, out))
    return history


def flagged_each_round(policy: SlashingPolicy, history: list[RoundFlags]) -> dict[int, set[str]]:
    return {h.round: policy.flagged(history[: i + 1]) for i, h in enumerate(history)}


def test_an_all_honest_run_slashes_nobody() -> None:
    history = run(50)
    assert POLICY.offences(history) == []
    assert all(not flagged for flagged in flagged_each_round(POLICY, history).values())


def test_honest_noise_above_minus_threshold_is_not_bad() -> None:
    history = run(30, honest_score=-0.009)  # slightly negative every round, but within the threshold
    assert POLICY.offences(history) == []


@pytest.mark.parametrize("round_", [1, 7, 20])
def test_one_unlucky_round_never_slashes(round_: int) -> None:
    history = run(20, bad={"hospital-02": {round_}})
    assert POLICY.offences(history) == []
    history = run(20, rejected={"hospital-02": {round_}})
    assert POLICY.offences(history) == []


@given(st.integers(0, 2**20), st.floats(0, 1), st.integers(2, 6), st.integers(0, 4))
def test_no_policy_slashes_on_one_bad_round(bad_round_seed: int, threshold: float, k: int, extra: int) -> None:
    policy = SlashingPolicy(threshold=threshold, k=k, m=k + extra, fraction=1.0)
    history = run(12, bad={"hospital-01": {bad_round_seed % 12 + 1}})
    assert policy.offences(history) == []


def test_k_is_at_least_two_so_one_round_cannot_slash() -> None:
    with pytest.raises(ConfigError, match="single bad round"):
        SlashingPolicy(threshold=0.0, k=1, m=3, fraction=0.1)


def test_a_steadily_harmful_institution_is_flagged_exactly_at_its_kth_bad_round() -> None:
    history = run(12, bad={"hospital-09": set(range(1, 13))})
    flagged = flagged_each_round(POLICY, history)
    # k = 3: flagged at round 3; the window then starts afresh, so again at 6, 9 and 12 and never in between.
    assert [r for r, names in flagged.items() if names] == [3, 6, 9, 12]
    assert all(names == {"hospital-09"} for names in flagged.values() if names)
    assert POLICY.offences(history)[0] == Offence("hospital-09", 3, (1, 2, 3))


def test_rejections_count_as_bad_rounds() -> None:
    history = run(6, rejected={"hospital-04": {2, 4, 5}})
    assert POLICY.offences(history) == [Offence("hospital-04", 5, (2, 4, 5))]


def recorded(tmp_path: Path, inconclusive: list[bool]) -> RunRecorder:
    """Rounds in which hospital-04's update was set aside as a free rider, as the run records them; in round r
    the set-aside was inconclusive when ``inconclusive[r - 1]``."""
    recorder = RunRecorder(tmp_path, RunConfig.load(), [*HONEST, "hospital-04"], {})
    for r, weak in enumerate(inconclusive, start=1):
        scores = RoundScores(r, {**dict.fromkeys(HONEST, 0.02), "hospital-04": 0.0}, {}, {"hospital-04": "free rider"},
                             1, 0.0, False, "banzhaf", inconclusive=["hospital-04"] if weak else [])
        recorder.rounds.append(RoundResult(r, 0.9, 0.3, scores))
    return recorder


@pytest.mark.parametrize("inconclusive", [False, True])
def test_a_set_aside_the_check_could_not_read_is_not_held_against_the_stake(tmp_path: Path,
                                                                            inconclusive: bool) -> None:
    policy = SlashingPolicy(threshold=0.03, k=3, m=4, fraction=0.5)  # the defaults
    flagged = offenders(recorded(tmp_path, [inconclusive] * 3), policy)
    assert set(flagged) == (set() if inconclusive else {(3, "hospital-04")})


def test_an_inconclusive_round_does_not_push_earlier_evidence_out_of_the_window(tmp_path: Path) -> None:
    """Conclusive set-asides in rounds 1, 3 and 5, inconclusive ones between: three bad rounds of the four the
    institution was judged in, so it is slashed in round 5 (had rounds 2 and 4 counted as clean, never)."""
    policy = SlashingPolicy(threshold=0.03, k=3, m=4, fraction=0.5)
    history = [True, False, True, False, True]
    assert set(offenders(recorded(tmp_path, [not bad for bad in history]), policy)) == {(5, "hospital-04")}


def test_bad_rounds_must_fall_in_the_last_m_of_the_institutions_rounds() -> None:
    # Bad in rounds 1, 2 and 6: rounds 1 and 2 have left the window of five by round 6.
    assert POLICY.offences(run(10, bad={"hospital-05": {1, 2, 6}})) == []
    # Bad in 1, 2 and 5: all three within rounds 1..5.
    assert POLICY.offences(run(10, bad={"hospital-05": {1, 2, 5}})) == [Offence("hospital-05", 5, (1, 2, 5))]


def test_the_window_counts_the_institutions_own_rounds_not_the_federations() -> None:
    # hospital-07 takes part only every third round; its bad rounds 3, 9, 15 are 3 of its last 5 rounds.
    history = []
    for r in range(1, 16):
        scores = {n: 0.02 for n in HONEST}
        if r % 3 == 0:
            scores["hospital-07"] = -0.1 if r in {3, 9, 15} else 0.02
        history.append(RoundFlags(r, scores))
    assert POLICY.offences(history) == [Offence("hospital-07", 15, (3, 9, 15))]


def test_after_a_slash_old_evidence_never_counts_again() -> None:
    # Bad in 1, 2, 3 (slashed at 3), then one more bad round at 4: with the window reset that is one bad round,
    # not four, so no second slash.
    history = run(10, bad={"hospital-06": {1, 2, 3, 4}})
    assert POLICY.offences(history) == [Offence("hospital-06", 3, (1, 2, 3))]
    assert flagged_each_round(POLICY, history)[4] == set()


def test_flagging_is_a_function_of_the_history_alone() -> None:
    history = run(12, bad={"hospital-09": set(range(1, 13))}, rejected={"hospital-01": {2, 3, 4}})
    assert POLICY.flagged(history) == POLICY.flagged(list(history))
    assert POLICY.offences(history) == POLICY.offences(history)
    assert POLICY.flagged([]) == set()
    with pytest.raises(ValueError, match="must increase"):
        POLICY.offences([history[1], history[0]])


# --- amounts and evidence ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("stake", "fraction", "expected"), [
    (1000, 0.5, 500), (1000, 1.0, 1000), (999, 0.1, 99), (0, 0.5, 0), (7, 1e-9, 0),
    (10**27 + 9, 0.1, 10**26),
    (3 * 10**26, 1 / 3, 99_999_999_999_999_990_000_000_000),  # 1/3 is read as 0.3333333333333333
])
def test_slash_amount_is_the_exact_floor_of_the_fraction(stake: int, fraction: float, expected: int) -> None:
    assert slash_amount(stake, SlashingPolicy(0.0, 2, 2, fraction)) == expected


@given(st.integers(0, 10**30), st.floats(1e-12, 1.0))
def test_a_slash_never_exceeds_the_stake(stake: int, fraction: float) -> None:
    amount = slash_amount(stake, SlashingPolicy(0.0, 2, 3, fraction))
    assert 0 <= amount <= stake


def test_slash_amount_refuses_a_negative_stake() -> None:
    with pytest.raises(ValueError):
        slash_amount(-1, POLICY)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fraction": 1.5}, "would slash more than the stake"),
    ({"fraction": 0.0}, "must be > 0"),
    ({"fraction": float("nan")}, "must be a number"),
    ({"k": 4, "m": 3}, "need k <= m"),
    ({"k": 2.5}, "must be an integer"),
    ({"threshold": -0.1}, "threshold = -0.1"),
    ({"threshold": float("inf")}, "threshold = inf"),
])
def test_bad_policies_are_refused_with_one_line(kwargs: dict[str, float], message: str) -> None:
    args = {"threshold": 0.01, "k": 3, "m": 5, "fraction": 0.5} | kwargs
    with pytest.raises(ConfigError, match=message) as caught:
        SlashingPolicy(**args)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_evidence_hash_is_sha256_over_a_fixed_encoding() -> None:
    update = "0x" + "ab" * 32
    digest = evidence_hash(7, update)
    assert len(digest) == 32
    assert digest == hashlib.sha256(EVIDENCE_DOMAIN + (7).to_bytes(32, "big") + bytes([0xAB] * 32)).digest()
    assert evidence_hash(7, "AB" * 32) == digest  # 0x and case do not matter
    assert evidence_hash(8, update) != digest
    assert evidence_hash(7, "0x" + "ab" * 31 + "ac") != digest


@pytest.mark.parametrize(("round_", "update"), [(-1, "00" * 32), (1, "zz" * 32), (1, "00" * 31), (1, "0x")])
def test_evidence_hash_refuses_bad_input(round_: int, update: str) -> None:
    with pytest.raises(ValueError):
        evidence_hash(round_, update)
