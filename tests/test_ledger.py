"""The ledger: a round is journaled whole or not at all; re-journaling is a no-op; corruption is one line."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fedlearn.payout.ledger import Entry, Ledger, LedgerError, RoundEntry

BIG = 2**200  # far beyond SQLite's 64-bit integers


def record(server_round: int, reward: int = BIG, root: str = "0x" + "ab" * 32) -> RoundEntry:
    return RoundEntry(
        round=server_round, model_hash="0x" + "11" * 32, root=root, round_total=reward, budget=BIG * 9 + 5,
        final=False, released=reward * server_round, carried=BIG * 9 + 5 - reward * server_round, returned=0,
        gain=0.125, gain_low=0.0625, gain_high=0.25, significant=True, start_utility=-0.75,
        entries=(Entry("hospital-01", "0x" + "22" * 20, 0.25, reward, reward * server_round),
                             Entry("hospital-02", "0x" + "33" * 20, -0.1, 0, 0, "array 'w' holds NaN or Inf")),
    )


def test_journal_settle_and_read_back(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite", create=True)
    assert ledger.journal(record(1))
    assert [r.round for r in ledger.pending()] == [1]
    ledger.mark_settled(1, "0xabc", 12, 81_000)
    again = Ledger.open(tmp_path / "l.sqlite")
    (saved,) = again.rounds()
    assert saved.same_settlement(record(1)) and saved.status == "settled" and saved.gas_used == 81_000
    assert saved.entries[0].reward == BIG and saved.entries[1].rejected == "array 'w' holds NaN or Inf"
    assert again.cumulative() == {"hospital-01": BIG, "hospital-02": 0}
    assert (saved.gain, saved.gain_low, saved.gain_high, saved.significant, saved.start_utility) == (
        0.125, 0.0625, 0.25, True, -0.75)
    assert saved.released + saved.carried + saved.returned == saved.budget == BIG * 9 + 5 and not saved.final


def test_rejournaling_is_idempotent_and_a_different_payout_is_refused(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite", create=True)
    assert ledger.journal(record(1))
    assert not ledger.journal(record(1))
    with pytest.raises(LedgerError, match="already journaled with a different payout"):
        ledger.journal(record(1, root="0x" + "cd" * 32))
    ledger.journal(record(2))
    with pytest.raises(LedgerError, match="comes after journaled round 2"):
        ledger.journal(record(0))


def test_a_failed_journal_leaves_nothing(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite", create=True)
    broken = record(1)
    broken = RoundEntry(**{**broken.__dict__, "entries": broken.entries + broken.entries[:1]})  # duplicate key
    with pytest.raises(LedgerError):
        ledger.journal(broken)
    assert ledger.rounds() == [] and ledger.last_round() is None


def test_corrupt_and_missing_ledgers_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger at"):
        Ledger.open(tmp_path / "absent.sqlite")
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="corrupt or not a ledger") as info:
        Ledger.open(garbage)
    assert "\n" not in str(info.value)
    ledger = Ledger.open(tmp_path / "l.sqlite", create=True)
    ledger.journal(record(1))
    ledger.close()
    db = sqlite3.connect(tmp_path / "l.sqlite")
    db.execute("UPDATE entries SET reward = 'lots' WHERE institution = 'hospital-01'")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="round 1 is corrupt"):
        Ledger.open(tmp_path / "l.sqlite").rounds()


def test_another_sqlite_database_is_not_taken_for_a_ledger(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE patients (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="is not a fedlearn ledger"):
        Ledger.open(other)
    tables = {r[0] for r in sqlite3.connect(other).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"patients"}
