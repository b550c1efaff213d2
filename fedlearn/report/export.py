"""CSV and JSON exports: the report's content as data. Token amounts are exact decimal strings (and wei strings
in JSON), so a spreadsheet's sums match the chain to the last wei.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from fedlearn.report.load import RunReport
from fedlearn.report.text import clean_reason, exact_tokens, facts, opening_amounts

# The round's gain repeats on each of its institutions' rows: one flat table a spreadsheet filters as it likes.
ROUNDS_COLUMNS = ("round", "institution", "score", "score_error_95", "utility", "gain", "gain_low", "gain_high",
                  "significant", "final", "reward_tokens", "cumulative_tokens", "rejected", "left_out", "clipped",
                  "slashed_tokens")
# contribution_share is of the positive contribution, token_share of the tokens earned: two different things.
INSTITUTION_COLUMNS = ("institution", "address", "examples", "cumulative_score", "contribution",
                       "contribution_share", "token_share", "tokens_earned", "tokens_claimed", "rounds_set_aside",
                       "rounds_left_out", "rounds_clipped", "stake_slashed_tokens")


def write_rounds_csv(report: RunReport, path: Path) -> None:
    """One row per training round × institution."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(ROUNDS_COLUMNS)
        for r in report.scored_rounds:
            for c in r.cells:
                writer.writerow((r.round, c.institution, _plain(c.score), _plain(c.score_error), r.utility or "",
                                 _plain(r.gain), _plain(r.gain_low), _plain(r.gain_high), _flag(r.significant),
                                 _flag(r.final if r.budget_wei is not None else None), exact_tokens(c.reward_wei),
                                 exact_tokens(c.cumulative_wei), clean_reason(c.rejected) if c.rejected else "",
                                 clean_reason(c.left_out) if c.left_out else "",
                                 clean_reason(c.clipped) if c.clipped else "",
                                 exact_tokens(c.slashed_wei if report.has_ledger else None)))


def write_institutions_csv(report: RunReport, path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(INSTITUTION_COLUMNS)
        for i in report.institutions:
            writer.writerow((i.name, i.address or "", _plain(i.examples), _plain(i.cumulative_score),
                             _plain(i.contribution), _plain(i.contribution_share), _plain(i.token_share),
                             exact_tokens(i.earned_wei), exact_tokens(i.claimed_wei), i.set_aside, i.left_out,
                             i.clipped,
                             exact_tokens(i.slashed_wei)))


def report_data(report: RunReport, plots: dict[str, Path]) -> dict[str, Any]:
    """Everything the HTML page shows, as JSON-ready data."""
    return {
        "run_dir": str(report.run_dir),
        "finished": report.finished,
        "facts": {group: [{"label": k, "value": v} for k, v in items] for group, items in facts(report).items()},
        "config": report.config,
        # The opening amounts as an object (the ledger keeps them as a JSON string).
        "chain": None if report.chain is None else {**report.chain, "opening": opening_amounts(report.chain)},
        "final_test_accuracy": report.final_accuracy,
        "plots": [{"title": title, "file": path.name} for title, path in plots.items()],
        "institutions": [
            {
                "name": i.name, "address": i.address, "examples": i.examples,
                "cumulative_score": i.cumulative_score, "contribution": i.contribution,
                "contribution_share": i.contribution_share, "token_share": i.token_share,
                "tokens_earned": exact_tokens(i.earned_wei) or None, "wei_earned": _wei(i.earned_wei),
                "tokens_claimed": exact_tokens(i.claimed_wei) or None, "wei_claimed": _wei(i.claimed_wei),
                "rounds_set_aside": i.set_aside, "rounds_left_out": i.left_out, "rounds_clipped": i.clipped,
                "tokens_slashed": exact_tokens(i.slashed_wei) or None, "wei_slashed": _wei(i.slashed_wei),
            }
            for i in report.institutions
        ],
        "rounds": [
            {
                "round": r.round, "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
                "scoring_method": r.method, "scoring_estimator": r.estimator, "skipped": r.skipped,
                "utility": r.utility, "start_utility": r.start_utility,
                "gain": r.gain, "gain_low": r.gain_low, "gain_high": r.gain_high, "significant": r.significant,
                "final": r.final if r.budget_wei is not None else None,
                # Where the run's budget stands after the round: released + carried + returned == budget.
                **{f"{unit}_{what}": (exact_tokens(wei) or None) if unit == "tokens" else _wei(wei)
                   for what, wei in (("paid", r.paid_wei), ("budget", r.budget_wei), ("released", r.released_wei),
                                     ("carried", r.carried_wei), ("returned", r.returned_wei))
                   for unit in ("tokens", "wei")},
                "returned_to": r.returned_to, "return_tx_hash": r.return_tx_hash,
                "status": r.status, "tx_hash": r.tx_hash, "block": r.block, "gas_used": r.gas_used,
                "institutions": [
                    {
                        "name": c.institution, "score": c.score,
                        "tokens_reward": exact_tokens(c.reward_wei) or None, "wei_reward": _wei(c.reward_wei),
                        "tokens_cumulative": exact_tokens(c.cumulative_wei) or None,
                        "wei_cumulative": _wei(c.cumulative_wei), "rejected": c.rejected,
                        "tokens_slashed": exact_tokens(c.slashed_wei) if report.has_ledger else None,
                        "wei_slashed": _wei(c.slashed_wei) if report.has_ledger else None,
                    }
                    for c in r.cells
                ],
            }
            for r in report.rounds
        ],
        # Every slash, with the evidence its proposal named on chain (the offending update's hash).
        "slashes": [{"round": x.round, "institution": x.institution, "tokens": exact_tokens(x.wei),
                     "wei": str(x.wei), "evidence": x.evidence} for x in report.slashes],
    }


def write_json(data: dict[str, Any], path: Path) -> None:
    # allow_nan=False: NaN is not JSON (the loader made non-finite numbers null); default=str: TOML dates.
    path.write_text(json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False, default=str) + "\n")


def _plain(value: float | int | None) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _flag(value: bool | None) -> str:
    return "" if value is None else "true" if value else "false"


def _wei(value: int | None) -> str | None:
    # A string: uint256 amounts overflow the doubles most JSON readers use.
    return None if value is None else str(value)
