"""Read a run directory into one immutable picture of the run, checking every file before anything is written.

Sources, in order of authority: the ledger (what was paid), rounds.json (what was measured), summary.json (the
end-of-run digest, absent while a run is unfinished), config.toml (how the run was set up).

The payout rule (``fedlearn.payout.schedule``): a run has one budget; rounds whose validated gain is significant
release part of it as the run goes, and the last round trues everyone up to their share of the contribution (the
scores summed over the significant rounds). Each journaled round says where every wei of the budget stands:
released to institutions, carried to later rounds and the final true-up, or returned to the funder.
"""

from __future__ import annotations

import json
import math
import sqlite3
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from fedlearn.config import LEGACY_VALUES, ROUND_WEIGHTS
from fedlearn.errors import FedlearnError
from fedlearn.payout.ledger import LEDGER_FILE, Ledger, LedgerError, RoundEntry
from fedlearn.payout.rewards import WEI_PER_TOKEN
from fedlearn.records.rundir import CONFIG_FILE, ROUNDS_FILE, SUMMARY_FILE, runs_inside
from fedlearn.scoring.utility import UTILITY_MAX, round_weight

_SQLITE_MAGIC = b"SQLite format 3\x00"


class ReportError(FedlearnError):
    """A run directory cannot be reported on."""

    exit_code = 8


@dataclass(frozen=True)
class Cell:
    """One institution in one round."""

    institution: str
    score: float | None
    reward_wei: int | None
    cumulative_wei: int | None
    rejected: str | None
    score_error: float | None = None  # the 95 % half-width of an estimated score (0: exact; None: not recorded)
    slashed_wei: int = 0  # stake slashed for what the institution sent this round (the ledger's slashes)
    clipped: str | None = None  # why its update was clipped as boosted (integrity.scaled_update_limit): unpaid
    # Why its update was left out of the model as harmful (integrity.exclude_harmful): its negative score counts.
    left_out: str | None = None


@dataclass(frozen=True)
class Slash:
    """Stake taken from an institution for one round's offence, as the ledger recorded it once on chain."""

    round: int
    institution: str
    wei: int
    evidence: str


@dataclass(frozen=True)
class RoundRow:
    """One round: what was measured (rounds.json) and, with a ledger, what was paid and where the budget stands.

    ``gain`` is the round's validated utility gain, [``gain_low``, ``gain_high``] its bootstrap interval; only a
    ``significant`` round (lower bound above ``scoring.min_gain``) counts towards contribution. ``budget_wei`` is
    the run's whole budget; ``released_wei + carried_wei + returned_wei == budget_wei`` on every journaled round.
    """

    round: int
    test_accuracy: float | None
    test_loss: float | None
    cells: tuple[Cell, ...]
    method: str | None = None
    estimator: str | None = None  # how Banzhaf was computed that round; None for other methods and older runs
    utility: str | None = None  # "brier", "neg_loss", "margin" or "accuracy": the unit of the gain
    start_utility: float | None = None
    gain: float | None = None
    gain_low: float | None = None
    gain_high: float | None = None
    significant: bool | None = None  # None: not recorded (round 0, or a run from before significance)
    skipped: str | None = None  # why the round produced no model
    final: bool = False  # the run's last round: the true-up
    paid_wei: int | None = None  # paid to institutions in this round
    budget_wei: int | None = None  # the run's whole budget
    released_wei: int | None = None  # paid to institutions so far
    carried_wei: int | None = None  # waiting for later rounds and the final true-up
    returned_wei: int | None = None  # given back to the funder (the final round only)
    returned_to: str | None = None  # the funder's address, when the return went out on chain
    return_tx_hash: str | None = None
    status: str | None = None
    tx_hash: str | None = None
    block: int | None = None
    gas_used: int | None = None

    @property
    def counts(self) -> bool:
        """Whether the round's scores count towards contribution."""
        return self.significant is True


@dataclass(frozen=True)
class InstitutionRow:
    """One institution over the run. Two shares that must not be mixed up: ``contribution_share`` (of the
    positive contribution, what the payout rule aims at) and ``token_share`` (of the tokens actually earned)."""

    name: str
    address: str | None
    examples: int | None
    cumulative_score: float  # scores summed over every round
    contribution: float | None  # scores summed over the significant rounds only
    contribution_share: float | None  # max(contribution, 0) / Σ positive contributions
    token_share: float | None  # tokens earned / Σ tokens earned (None without a ledger)
    earned_wei: int | None  # the last settled round's cumulative amount: claimable on chain
    claimed_wei: int | None
    # The contribution's 95 % half-width from the estimated scores it sums (rounds estimate independently, so
    # √Σ half-width²); 0 when every score was exact, None when some round did not record its interval.
    contribution_error: float | None = None
    set_aside: int = 0  # rounds whose update was set aside (rejected): it earned nothing in them
    clipped: int = 0  # rounds whose update was clipped as boosted: aggregated at the limit, unpaid
    left_out: int = 0  # rounds whose update was left out of the model as harmful: scored (below 0), not aggregated
    slashed_wei: int | None = None  # stake slashed over the run (None without a ledger)


@dataclass(frozen=True)
class RunReport:
    run_dir: Path
    config: dict[str, Any]  # flat "section.key" → value, as written by the run
    chain: dict[str, str] | None  # ledger meta; None when the run kept no ledger
    finished: bool
    final_accuracy: float | None
    institutions: tuple[InstitutionRow, ...]
    rounds: tuple[RoundRow, ...]
    # Settings that gave up a protection the default has, as summary.json lists them (fedlearn.weaker_options).
    weaker_options: tuple[str, ...] = ()
    slashes: tuple[Slash, ...] = ()

    @property
    def has_ledger(self) -> bool:
        return self.chain is not None

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.institutions]

    @property
    def scored_rounds(self) -> list[RoundRow]:
        """Training rounds (round 0 is the initial model's evaluation)."""
        return [r for r in self.rounds if r.round > 0]

    @property
    def last_paid(self) -> RoundRow | None:
        """The last journaled round: where the budget stands now."""
        return next((r for r in reversed(self.rounds) if r.budget_wei is not None), None)


def tokens(wei: int) -> Decimal:
    """Exact token amount of a wei amount (18 decimals)."""
    return Decimal(wei) / WEI_PER_TOKEN


def load_run(run_dir: Path) -> RunReport:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ReportError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a directory")
    missing = [f for f in (CONFIG_FILE, ROUNDS_FILE) if not (run_dir / f).is_file()]
    if missing:
        raise ReportError(f"{run_dir} is not a run directory (no {' or '.join(missing)}){runs_inside(run_dir)}")

    config = _read_config(run_dir / CONFIG_FILE)
    measured = _read_rounds(run_dir / ROUNDS_FILE)
    summary = _read_summary(run_dir / SUMMARY_FILE) if (run_dir / SUMMARY_FILE).exists() else None
    ledger_path = run_dir / LEDGER_FILE
    books = _read_ledger(ledger_path) if ledger_path.exists() else None

    rounds = _merge_rounds(measured, books)
    weighting = str(config.get("payout.round_weight", LEGACY_VALUES["payout.round_weight"]))
    if weighting not in ROUND_WEIGHTS:  # a newer version's weighting: its contributions cannot be recomputed here
        raise ReportError(f"{run_dir / CONFIG_FILE}: payout.round_weight = {weighting!r} is not one this version "
                          f"knows ({', '.join(ROUND_WEIGHTS)})")
    institutions = _institutions(summary, rounds, books, weighting)
    final = summary.get("final_test_accuracy") if summary else None
    if final is None and rounds:
        final = rounds[-1].test_accuracy
    return RunReport(
        run_dir=run_dir,
        config=config,
        chain=books.meta if books else None,
        finished=summary is not None,
        final_accuracy=_number(final),
        institutions=tuple(institutions),
        rounds=tuple(rounds),
        weaker_options=tuple((summary or {}).get("weaker_options", ())),
        slashes=tuple(books.slashes) if books else (),
    )


# ---- the files ------------------------------------------------------------------------------------------------


def _read_config(path: Path) -> dict[str, Any]:
    # Plain TOML rather than RunConfig.load: a report must still open a run written by an older or newer schema.
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path} is not valid TOML: {_one_line(exc)}") from None
    except OSError as exc:
        raise ReportError(f"{path} cannot be read: {exc.strerror}") from None
    return {f"{section}.{key}": value for section, table in doc.items() if isinstance(table, dict)
            for key, value in table.items()}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path} is not valid JSON: {_one_line(exc)}") from None
    except OSError as exc:
        raise ReportError(f"{path} cannot be read: {exc.strerror}") from None


def _read_rounds(path: Path) -> list[dict[str, Any]]:
    data = _read_json(path)
    if not isinstance(data, list):
        raise ReportError(f"{path} is not a list of rounds")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("server_round"), int):
            raise ReportError(f"{path}: entry {i} has no integer server_round")
        scores = item.get("scores")
        if scores is not None and not (isinstance(scores, dict) and isinstance(scores.get("scores", {}), dict)
                                       and isinstance(scores.get("rejected", {}), dict)):
            raise ReportError(f"{path}: round {item['server_round']} has malformed scores")
        s = scores or {}
        try:
            out.append({
                "round": item["server_round"],
                "accuracy": _number(item.get("test_accuracy")),
                "loss": _number(item.get("test_loss")),
                "scores": {str(k): float(v) for k, v in s.get("scores", {}).items()},
                "score_errors": {str(k): float(v) for k, v in (s.get("score_errors") or {}).items()},
                "rejected": {str(k): str(v) for k, v in s.get("rejected", {}).items()},
                "clipped": {str(k): str(v) for k, v in (s.get("clipped") or {}).items()},
                "excluded": {str(k): str(v) for k, v in (s.get("excluded") or {}).items()},
                "method": s.get("method"),
                "estimator": s.get("estimator") or None,  # Banzhaf's: "exact", "regression" or "surrogate"
                # The round's validated gain (absent from runs that predate it: then unknown, not zero).
                "utility": s.get("utility") or None,
                "start_utility": _number(s.get("start_utility")),
                "gain": _number(s.get("gain")),
                "gain_low": _number(s.get("gain_low")),
                "gain_high": _number(s.get("gain_high")),
                "significant": s.get("significant") if isinstance(s.get("significant"), bool) else None,
                "skipped": str(s.get("skipped") or "") or None,
            })
        except (TypeError, ValueError) as exc:
            raise ReportError(f"{path}: round {item['server_round']} is malformed: {_one_line(exc)}") from None
    # A resumed run may re-record a round; the last record of a round is the one that counts.
    by_round = {r["round"]: r for r in out}
    return [by_round[k] for k in sorted(by_round)]


def _read_summary(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("institutions", []), list):
        raise ReportError(f"{path} is not a run summary")
    for i, row in enumerate(data.get("institutions", [])):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise ReportError(f"{path}: institution {i} has no name")
        for key in ("tokens_earned", "tokens_claimed"):
            if key in row and not _is_wei(row[key]):
                raise ReportError(f"{path}: {row['name']} has {key} {row[key]!r}, not an amount in wei")
    weaker = data.get("weaker_options", [])
    if not isinstance(weaker, list) or not all(isinstance(line, str) for line in weaker):
        raise ReportError(f"{path}: weaker_options is not a list of lines")
    return data


@dataclass(frozen=True)
class _Books:
    """What the ledger holds."""

    meta: dict[str, str]
    rounds: list[RoundEntry]
    claimed: dict[str, int]
    returns: list[tuple[int, str, int, str | None]]  # (round, funder, wei, tx hash)
    slashes: list[Slash]

    @property
    def settled(self) -> RoundEntry | None:
        """The last settled round: its cumulative amounts are what the chain lets institutions claim."""
        return next((r for r in reversed(self.rounds) if r.status == "settled"), None)


def _read_ledger(path: Path) -> _Books:
    _probe_ledger(path)
    try:
        ledger = Ledger.open(path)
        try:
            books = _Books(ledger.meta(), ledger.rounds(), ledger.claimed(), ledger.returns(),
                           [Slash(*row) for row in ledger.slashes()])
        finally:
            ledger.close()
    except LedgerError as exc:
        raise ReportError(_one_line(exc)) from None
    except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
        raise ReportError(f"ledger {path} is corrupt: {_one_line(exc)}") from None
    books.meta.pop("schema_version", None)
    return books


def _probe_ledger(path: Path) -> None:
    """Refuse anything that is not already a ledger, read-only: Ledger.open would write a schema into it."""
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise ReportError(f"ledger {path} cannot be read: {exc.strerror}") from None
    if head != _SQLITE_MAGIC:
        raise ReportError(f"ledger {path} is corrupt or not a SQLite file")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise ReportError(f"ledger {path} is corrupt: {_one_line(exc)}") from None
    if not {"meta", "rounds", "entries", "claims"} <= tables:
        raise ReportError(f"ledger {path} is not a fedlearn ledger (tables: {', '.join(sorted(tables)) or 'none'})")


# ---- merging ----------------------------------------------------------------------------------------------------


def _merge_rounds(measured: list[dict[str, Any]], books: _Books | None) -> list[RoundRow]:
    by_paid = {r.round: r for r in books.rounds} if books else {}
    by_measured = {r["round"]: r for r in measured}
    returns = {r: (address, tx) for r, address, _, tx in books.returns} if books else {}
    slashed: dict[tuple[int, str], int] = {}
    for slash in books.slashes if books else ():
        slashed[slash.round, slash.institution] = slashed.get((slash.round, slash.institution), 0) + slash.wei
    rows: list[RoundRow] = []
    for n in sorted(by_measured.keys() | by_paid.keys()):
        m = by_measured.get(n, {})
        p = by_paid.get(n)
        scores: dict[str, float] = m.get("scores", {})
        rejected: dict[str, str] = m.get("rejected", {})
        clipped: dict[str, str] = m.get("clipped", {})
        excluded: dict[str, str] = m.get("excluded", {})
        entries = {e.institution: e for e in (p.entries if p else ())}
        cells = tuple(
            Cell(
                institution=name,
                score=entries[name].score if name in entries else scores.get(name),
                reward_wei=entries[name].reward if name in entries else None,
                cumulative_wei=entries[name].cumulative if name in entries else None,
                rejected=(entries[name].rejected if name in entries else None) or rejected.get(name),
                score_error=m.get("score_errors", {}).get(name),
                slashed_wei=slashed.get((n, name), 0),
                clipped=clipped.get(name),
                left_out=excluded.get(name),
            )
            for name in sorted(scores.keys() | rejected.keys() | entries.keys())
        )
        # The gain as measured (rounds.json); a round only the ledger knows takes the gain the payout read.
        gain: dict[str, Any] = {k: m.get(k) for k in ("start_utility", "gain", "gain_low", "gain_high", "significant")}
        if p is not None and m.get("significant") is None:
            gain = {"start_utility": p.start_utility, "gain": p.gain, "gain_low": p.gain_low,
                    "gain_high": p.gain_high, "significant": p.significant}
        returned_to, return_tx = returns.get(n, (None, None))
        rows.append(RoundRow(
            round=n, test_accuracy=m.get("accuracy"), test_loss=m.get("loss"), cells=cells, method=m.get("method"),
            estimator=m.get("estimator"),
            utility=m.get("utility"), skipped=m.get("skipped"), **gain,
            final=p.final if p else False,
            paid_wei=p.round_total if p else None, budget_wei=p.budget if p else None,
            released_wei=p.released if p else None, carried_wei=p.carried if p else None,
            returned_wei=p.returned if p else None, returned_to=returned_to, return_tx_hash=return_tx,
            status=p.status if p else None, tx_hash=p.tx_hash if p else None,
            block=p.block if p else None, gas_used=p.gas_used if p else None,
        ))
    return rows


def _weight(r: RoundRow, weighting: str) -> float:
    """What a unit of the round's scores counts for in a contribution (``payout.round_weight``)."""
    best = UTILITY_MAX.get(r.utility or "")
    return 1.0 if best is None else round_weight(r.start_utility, best, weighting)


def _contributions(rounds: list[RoundRow], names: list[str], weighting: str) -> dict[str, float | None]:
    """Scores summed over the significant rounds, each round's weighed by ``weighting`` (what the tokens follow);
    None for everyone when some scored round does not say whether its gain was significant (a run from before
    the payout rule)."""
    scored = [r for r in rounds if r.round > 0 and r.cells]
    if any(r.significant is None for r in scored):
        return {name: None for name in names}
    total = {name: 0.0 for name in names}
    for r in scored:
        if r.counts:
            weight = _weight(r, weighting)
            for c in r.cells:
                total[c.institution] = total.get(c.institution, 0.0) + (c.score or 0.0) * weight
    return dict(total)


def _contribution_errors(rounds: list[RoundRow], names: list[str], weighting: str) -> dict[str, float | None]:
    """Each contribution's 95 % half-width: √Σ (weighed score half-width)² over the rounds that count
    (independent estimates); None where a counting round did not record the institution's interval."""
    squares: dict[str, float | None] = {name: 0.0 for name in names}
    for r in rounds:
        if r.round == 0 or not r.counts:
            continue
        weight = _weight(r, weighting)
        for c in r.cells:
            known = squares.get(c.institution, 0.0)
            error = 0.0 if c.rejected else c.score_error  # a set-aside update scores exactly 0
            squares[c.institution] = None if known is None or error is None else known + (error * weight) ** 2
    return {name: None if v is None else math.sqrt(v) for name, v in squares.items()}


def _institutions(summary: dict[str, Any] | None, rounds: list[RoundRow], books: _Books | None, weighting: str
                  ) -> list[InstitutionRow]:
    listed = {row["name"]: row for row in (summary or {}).get("institutions", [])}
    seen = {c.institution for r in rounds for c in r.cells}
    # The summary's order is the run's order; names only seen in rounds (an unfinished run) follow, sorted.
    names = list(listed) + sorted(seen - listed.keys())
    addresses = {e.institution: e.address for r in (books.rounds if books else []) for e in r.entries}
    score_sum = {name: sum(c.score or 0.0 for r in rounds for c in r.cells if c.institution == name) for name in names}
    contribution = _contributions(rounds, names, weighting)
    errors = _contribution_errors(rounds, names, weighting)
    positive = sum(max(v or 0.0, 0.0) for v in contribution.values())
    # Earned: the last settled round's cumulative amounts, what the chain lets each institution claim. The ledger
    # is what was paid; the summary only repeats it, so it is the fallback.
    settled = books.settled if books else None
    earned = {e.institution: e.cumulative for e in settled.entries} if settled else {}
    paid_out = sum(earned.values())
    rows: list[InstitutionRow] = []
    for name in names:
        s = listed.get(name, {})
        cumulative = _number(s.get("cumulative_score"))
        mine = contribution.get(name)
        computed_share = None if mine is None else (max(mine, 0.0) / positive if positive > 0 else 0.0)
        if books is not None:
            token_share: float | None = earned.get(name, 0) / paid_out if paid_out else 0.0
        else:
            token_share = _number(s.get("token_share"))
        rows.append(InstitutionRow(
            name=name,
            address=addresses.get(name) or s.get("address"),
            examples=s.get("examples") if isinstance(s.get("examples"), int) else None,
            cumulative_score=cumulative if cumulative is not None else score_sum[name],
            contribution=_number(s["contribution"]) if "contribution" in s else mine,
            contribution_share=_number(s["contribution_share"]) if "contribution_share" in s else computed_share,
            token_share=token_share,
            earned_wei=earned.get(name, 0) if books else _wei(s.get("tokens_earned")),
            claimed_wei=books.claimed.get(name, 0) if books else _wei(s.get("tokens_claimed")),
            contribution_error=errors.get(name) if mine is not None else None,
            set_aside=sum(1 for r in rounds for c in r.cells if c.institution == name and c.rejected),
            clipped=sum(1 for r in rounds for c in r.cells if c.institution == name and c.clipped),
            left_out=sum(1 for r in rounds for c in r.cells if c.institution == name and c.left_out),
            slashed_wei=sum(x.wei for x in books.slashes if x.institution == name) if books else None,
        ))
    return rows


# ---- small helpers ----------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _is_wei(value: Any) -> bool:
    return isinstance(value, str) and value.isdigit() or isinstance(value, int) and not isinstance(value, bool)


def _wei(value: Any) -> int | None:
    return int(value) if value is not None and _is_wei(value) else None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
