"""CSV and JSON exports: the report's content as data. Token amounts are exact decimal strings (and wei strings
in JSON), so a spreadsheet's sums match the chain to the last wei.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from fedlearn.report.load import RunReport
from fedlearn.report.text import clean_reason, exact_tokens, facts

ROUNDS_COLUMNS = ("round", "institution", "score", "reward_tokens", "cumulative_tokens", "rejected")
INSTITUTION_COLUMNS = ("institution", "address", "examples", "cumulative_score", "share", "tokens_earned",
                       "tokens_claimed")


def write_rounds_csv(report: RunReport, path: Path) -> None:
    """One row per training round × institution."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(ROUNDS_COLUMNS)
        for r in report.scored_rounds:
            for c in r.cells:
                writer.writerow((r.round, c.institution, _plain(c.score), exact_tokens(c.reward_wei),
                                 exact_tokens(c.cumulative_wei), clean_reason(c.rejected) if c.rejected else ""))


def write_institutions_csv(report: RunReport, path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(INSTITUTION_COLUMNS)
        for i in report.institutions:
            writer.writerow((i.name, i.address or "", _plain(i.examples), _plain(i.cumulative_score),
                             _plain(i.share), exact_tokens(i.earned_wei), exact_tokens(i.claimed_wei)))


def report_data(report: RunReport, plots: dict[str, Path]) -> dict[str, Any]:
    """Everything the HTML page shows, as JSON-ready data."""
    return {
        "run_dir": str(report.run_dir),
        "finished": report.finished,
        "facts": {group: [{"label": k, "value": v} for k, v in items] for group, items in facts(report).items()},
        "config": report.config,
        "chain": report.chain,
        "final_test_accuracy": report.final_accuracy,
        "plots": [{"title": title, "file": path.name} for title, path in plots.items()],
        "institutions": [
            {
                "name": i.name, "address": i.address, "examples": i.examples,
                "cumulative_score": i.cumulative_score, "share": i.share,
                "tokens_earned": exact_tokens(i.earned_wei) or None, "wei_earned": _wei(i.earned_wei),
                "tokens_claimed": exact_tokens(i.claimed_wei) or None, "wei_claimed": _wei(i.claimed_wei),
            }
            for i in report.institutions
        ],
        "rounds": [
            {
                "round": r.round, "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
                "scoring_method": r.method,
                "tokens_paid": exact_tokens(r.paid_wei) or None, "wei_paid": _wei(r.paid_wei),
                "tokens_budget": exact_tokens(r.budget_wei) or None,
                "tokens_rollover": exact_tokens(r.rollover_wei) or None,
                "status": r.status, "tx_hash": r.tx_hash, "block": r.block, "gas_used": r.gas_used,
                "institutions": [
                    {
                        "name": c.institution, "score": c.score,
                        "tokens_reward": exact_tokens(c.reward_wei) or None, "wei_reward": _wei(c.reward_wei),
                        "tokens_cumulative": exact_tokens(c.cumulative_wei) or None,
                        "wei_cumulative": _wei(c.cumulative_wei), "rejected": c.rejected,
                    }
                    for c in r.cells
                ],
            }
            for r in report.rounds
        ],
    }


def write_json(data: dict[str, Any], path: Path) -> None:
    # allow_nan=False: NaN is not JSON (the loader made non-finite numbers null); default=str: TOML dates.
    path.write_text(json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False, default=str) + "\n")


def _plain(value: float | int | None) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _wei(value: int | None) -> str | None:
    # A string: uint256 amounts overflow the doubles most JSON readers use.
    return None if value is None else str(value)
