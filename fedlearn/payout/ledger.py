"""The run's local journal (SQLite): rounds, per-institution scores and rewards, roots, model hashes, tx hashes.

A round is journaled — with everything needed to settle it — before its transaction is sent, in one SQLite
transaction, so a crash leaves either nothing or a complete pending round that the next start sends. Token
amounts are decimal strings: a uint256 in wei does not fit SQLite's 64-bit integers.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fedlearn.errors import FedlearnError

LEDGER_FILE = "ledger.sqlite"
SCHEMA_VERSION = "2"  # 2: the contribution payout rule (released, carried, returned; the round's gain)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round        INTEGER PRIMARY KEY,
    model_hash   TEXT NOT NULL,
    root         TEXT NOT NULL,
    round_total  TEXT NOT NULL,
    budget       TEXT NOT NULL,
    final        INTEGER NOT NULL,
    released     TEXT NOT NULL,
    carried      TEXT NOT NULL,
    returned     TEXT NOT NULL,
    start_utility REAL NOT NULL,
    gain         REAL NOT NULL,
    gain_low     REAL NOT NULL,
    gain_high    REAL NOT NULL,
    significant  INTEGER NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'settled')),
    tx_hash      TEXT,
    block        INTEGER,
    gas_used     INTEGER,
    journaled_at TEXT NOT NULL,
    settled_at   TEXT
);
CREATE TABLE IF NOT EXISTS entries (
    round       INTEGER NOT NULL REFERENCES rounds(round),
    institution TEXT NOT NULL,
    address     TEXT NOT NULL,
    score       REAL NOT NULL,
    reward      TEXT NOT NULL,
    cumulative  TEXT NOT NULL,
    rejected    TEXT,
    PRIMARY KEY (round, institution)
);
CREATE TABLE IF NOT EXISTS slashes (
    round       INTEGER NOT NULL,
    institution TEXT NOT NULL,
    address     TEXT NOT NULL,
    amount      TEXT NOT NULL,
    evidence    TEXT NOT NULL,
    tx_hash     TEXT,
    slashed_at  TEXT NOT NULL,
    PRIMARY KEY (round, institution)
);
CREATE TABLE IF NOT EXISTS returns (
    round       INTEGER PRIMARY KEY,
    address     TEXT NOT NULL,
    amount      TEXT NOT NULL,
    tx_hash     TEXT,
    returned_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    institution TEXT NOT NULL,
    address     TEXT NOT NULL,
    paid        TEXT NOT NULL,
    cumulative  TEXT NOT NULL,
    tx_hash     TEXT,
    claimed_at  TEXT NOT NULL
);
"""


class LedgerError(FedlearnError):
    exit_code = 7


@dataclass(frozen=True)
class Entry:
    institution: str
    address: str
    score: float
    reward: int
    cumulative: int
    rejected: str | None = None


@dataclass(frozen=True)
class RoundEntry:
    """One round's payout. ``released`` is paid to institutions so far (the sum of their cumulative amounts),
    ``carried`` the budget still waiting for later rounds or the final true-up, ``returned`` what goes back to
    the funder (the last round only): released + carried + returned is always the run's budget."""

    round: int
    model_hash: str
    root: str
    round_total: int
    budget: int  # the run's budget when the round was journaled (a resumed run may have more rounds)
    final: bool  # the run's last round: the true-up
    released: int
    carried: int
    returned: int
    entries: tuple[Entry, ...]
    start_utility: float = 0.0
    gain: float = 0.0
    gain_low: float = 0.0
    gain_high: float = 0.0
    significant: bool = False
    status: str = "pending"
    tx_hash: str | None = None
    block: int | None = None
    gas_used: int | None = None

    def same_settlement(self, other: RoundEntry) -> bool:
        """Whether two journal records commit to the same payout (status and tx aside)."""
        mine = (self.model_hash, self.root, self.round_total, self.budget, self.final, self.released, self.carried,
                self.returned, self.entries)
        return mine == (other.model_hash, other.root, other.round_total, other.budget, other.final, other.released,
                        other.carried, other.returned, other.entries)


@dataclass
class Ledger:
    path: Path
    _db: sqlite3.Connection = field(repr=False)

    @classmethod
    def open(cls, path: str | Path, *, create: bool = False) -> Ledger:
        path = Path(path)
        if not create and not path.is_file():
            raise LedgerError(f"no ledger at {path}")
        try:
            db = sqlite3.connect(path, isolation_level=None)  # explicit transactions below
            db.execute("PRAGMA foreign_keys = ON")
            if not create:
                # Never turn some other database into an empty ledger: the tables must already be there.
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                missing = {"meta", "rounds", "entries", "claims"} - tables
                if missing:
                    db.close()
                    raise LedgerError(f"{path} is not a fedlearn ledger (no {', '.join(sorted(missing))} table)")
            db.executescript(SCHEMA)
            ledger = cls(path, db)
            version = ledger.meta().get("schema_version")
            if version is None:
                ledger.set_meta(schema_version=SCHEMA_VERSION)
            elif version != SCHEMA_VERSION:
                raise LedgerError(f"ledger {path} has schema version {version}, expected {SCHEMA_VERSION}")
            db.execute("SELECT round, model_hash, root FROM rounds LIMIT 1").fetchall()
            return ledger
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"ledger {path} is corrupt or not a ledger: {exc}") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"ledger {self.path}: {exc}") from None

    # ---- meta -------------------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, **values: str) -> None:
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           [(k, str(v)) for k, v in values.items()])

    # ---- rounds -----------------------------------------------------------------------------------------

    def journal(self, record: RoundEntry) -> bool:
        """Write a round as pending; False when an identical record is already there (nothing written)."""
        existing = self.round(record.round)
        if existing is not None:
            if existing.same_settlement(record):
                return False
            raise LedgerError(f"round {record.round} is already journaled with a different payout")
        last = self.last_round()
        if last is not None and record.round <= last:
            raise LedgerError(f"round {record.round} comes after journaled round {last}")
        with self._transaction() as db:
            db.execute(
                "INSERT INTO rounds (round, model_hash, root, round_total, budget, final, released, carried, returned,"
                " start_utility, gain, gain_low, gain_high, significant, status, journaled_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                (record.round, record.model_hash, record.root, str(record.round_total), str(record.budget),
                 int(record.final), str(record.released),
                 str(record.carried), str(record.returned), record.start_utility, record.gain, record.gain_low,
                 record.gain_high, int(record.significant), _now()),
            )
            db.executemany(
                "INSERT INTO entries (round, institution, address, score, reward, cumulative, rejected)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(record.round, e.institution, e.address, e.score, str(e.reward), str(e.cumulative), e.rejected)
                 for e in record.entries],
            )
        return True

    def mark_settled(self, round_: int, tx_hash: str | None, block: int | None, gas_used: int | None) -> None:
        with self._transaction() as db:
            updated = db.execute(
                "UPDATE rounds SET status = 'settled', tx_hash = ?, block = ?, gas_used = ?, settled_at = ?"
                " WHERE round = ?",
                (tx_hash, block, gas_used, _now(), round_),
            ).rowcount
        if updated != 1:
            raise LedgerError(f"round {round_} is not journaled")

    def round(self, round_: int) -> RoundEntry | None:
        row = self._db.execute(
            "SELECT round, model_hash, root, round_total, released, carried, returned, status, tx_hash, block,"
            " gas_used, start_utility, gain, gain_low, gain_high, significant, budget, final"
            " FROM rounds WHERE round = ?", (round_,),
        ).fetchone()
        return None if row is None else self._record(row)

    def rounds(self) -> list[RoundEntry]:
        rows = self._db.execute(
            "SELECT round, model_hash, root, round_total, released, carried, returned, status, tx_hash, block,"
            " gas_used, start_utility, gain, gain_low, gain_high, significant, budget, final"
            " FROM rounds ORDER BY round"
        ).fetchall()
        return [self._record(row) for row in rows]

    def pending(self) -> list[RoundEntry]:
        return [r for r in self.rounds() if r.status == "pending"]

    def last_round(self) -> int | None:
        (value,) = self._db.execute("SELECT MAX(round) FROM rounds").fetchone()
        return value

    def cumulative(self) -> dict[str, int]:
        """Cumulative wei per institution as of the last journaled round."""
        last = self.last_round()
        if last is None:
            return {}
        rows = self._db.execute("SELECT institution, cumulative FROM entries WHERE round = ?", (last,)).fetchall()
        return {name: int(value) for name, value in rows}

    def _record(self, row: tuple) -> RoundEntry:
        entries = self._db.execute(
            "SELECT institution, address, score, reward, cumulative, rejected FROM entries"
            " WHERE round = ? ORDER BY institution", (row[0],),
        ).fetchall()
        try:
            return RoundEntry(
                round=row[0], model_hash=row[1], root=row[2], round_total=int(row[3]), released=int(row[4]),
                carried=int(row[5]), returned=int(row[6]), status=row[7], tx_hash=row[8], block=row[9],
                gas_used=row[10], start_utility=float(row[11]), gain=float(row[12]), gain_low=float(row[13]),
                gain_high=float(row[14]), significant=bool(row[15]), budget=int(row[16]), final=bool(row[17]),
                entries=tuple(Entry(e[0], e[1], float(e[2]), int(e[3]), int(e[4]), e[5]) for e in entries),
            )
        except (TypeError, ValueError) as exc:
            raise LedgerError(f"ledger {self.path}: round {row[0]} is corrupt: {exc}") from None

    # ---- claims -----------------------------------------------------------------------------------------

    def record_claim(self, institution: str, address: str, paid: int, cumulative: int, tx_hash: str | None) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO claims (institution, address, paid, cumulative, tx_hash, claimed_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (institution, address, str(paid), str(cumulative), tx_hash, _now()),
            )

    def record_slash(self, server_round: int, institution: str, address: str, amount: int, evidence: str,
                     tx_hash: str | None) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO slashes (round, institution, address, amount, evidence, tx_hash, slashed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (server_round, institution, address, str(amount), evidence, tx_hash, _now()),
            )

    def record_return(self, server_round: int, address: str, amount: int, tx_hash: str | None) -> None:
        """The unspent budget of the run, returned to the funder on chain after its last round."""
        with self._transaction() as db:
            db.execute("INSERT INTO returns (round, address, amount, tx_hash, returned_at) VALUES (?, ?, ?, ?, ?)",
                       (server_round, address, str(amount), tx_hash, _now()))

    def returns(self) -> list[tuple[int, str, int, str | None]]:
        """(round, address, wei, tx hash) of every return of unspent budget, in order."""
        rows = self._db.execute("SELECT round, address, amount, tx_hash FROM returns ORDER BY round").fetchall()
        return [(r, address, int(amount), tx) for r, address, amount, tx in rows]

    def slashes(self) -> list[tuple[int, str, int, str]]:
        """(round, institution, wei, evidence) of every slash, in order."""
        rows = self._db.execute("SELECT round, institution, amount, evidence FROM slashes ORDER BY round, institution")
        return [(r, name, int(amount), evidence) for r, name, amount, evidence in rows.fetchall()]

    def claimed(self) -> dict[str, int]:
        """Total wei paid out by claims recorded here, per institution."""
        totals: dict[str, int] = {}
        for name, paid in self._db.execute("SELECT institution, paid FROM claims").fetchall():
            totals[name] = totals.get(name, 0) + int(paid)
        return totals


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
