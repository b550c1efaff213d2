"""How numbers, hashes and reasons read in the report, shared by the HTML page and report.json."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

from fedlearn.report.load import RunReport, tokens

DASH = "—"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Ledger meta keys with a reader's label; other keys are shown under their own name.
META_LABELS = {
    "backend": "Chain backend",
    "chain_id": "Chain id",
    "distributor": "Distributor",
    "token": "Token contract",
    "funded_wei": "Funded by this run (wei)",
}


DUST_WEI = 10**14  # below 0.0001 token: rounding remainders, not worth a reader's attention


def fmt_tokens(wei: int | None) -> str:
    """Whole tokens, thousands separated: 2 decimals from 1 token up (columns line up), up to 4 below.

    1,234.50 · 82.38 · 0.125 · 0.1235 · <0.0001
    """
    if wei is None:
        return DASH
    value = tokens(wei)
    if 0 < abs(value) < Decimal("0.0001"):
        return "<0.0001" if value > 0 else "-<0.0001"
    places = Decimal("0.01") if abs(value) >= 1 else Decimal("0.0001")
    text = f"{value.quantize(places, rounding=ROUND_HALF_UP):,f}"
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"


def exact_tokens(wei: int | None) -> str:
    """Exact token amount as a plain decimal string (CSV/JSON: sums must add up to the wei)."""
    if wei is None:
        return ""
    text = f"{tokens(wei):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_float(value: float | None, digits: int = 4) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def fmt_pct(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value:.{digits}%}"


def fmt_int(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def short_hash(value: str | None, keep: int = 6) -> str:
    """0x1234ab…cdef: enough to tell hashes apart at a glance."""
    if not value:
        return DASH
    return value if len(value) <= 2 * keep + 3 else f"{value[:keep + 2]}…{value[-4:]}"


def clean_reason(reason: str) -> str:
    """A rejection reason on one line: tracebacks from a failed client carry colour codes and many lines."""
    return " ".join(_ANSI.sub("", reason).split())


def facts(report: RunReport) -> dict[str, list[tuple[str, str]]]:
    """What a reader wants to know before the plots, as (label, value) under "Training" and "Payouts"."""
    c = report.config
    partition = str(c.get("data.partition", DASH))
    if partition == "dirichlet" and "data.alpha" in c:
        partition += f" (α = {c['data.alpha']})"
    rounds_done = max((r.round for r in report.rounds), default=0)
    planned = c.get("run.rounds")
    rounds = f"{rounds_done}" if report.finished or planned in (None, rounds_done) else f"{rounds_done} of {planned}"
    method = next((r.method for r in reversed(report.rounds) if r.method), None) or c.get("scoring.method", DASH)
    utility = c.get("scoring.utility")
    training = [
        ("Run", report.run_dir.name),
        ("Status", "finished" if report.finished else "unfinished (no summary.json)"),
        ("Dataset", f"{c.get('data.dataset', DASH)}, partition {partition}"),
        ("Institutions", str(len(report.institutions))),
        ("Rounds", rounds),
        ("Model", str(c.get("model.name", DASH))),
        ("Strategy", str(c.get("strategy.name", DASH))),
        ("Scoring", f"{method}" + (f" (utility: {utility})" if utility else "")),
        ("Seed", str(c.get("run.seed", DASH))),
        ("Final test accuracy", fmt_pct(report.final_accuracy, 2)),
    ]
    if report.chain is None:
        return {"Training": training, "Payouts": [("Ledger", "none in this run: scores only, no token payouts")]}
    paid = [r.paid_wei for r in report.rounds if r.paid_wei is not None]
    settled = sum(1 for r in report.rounds if r.status == "settled")
    journaled = sum(1 for r in report.rounds if r.status is not None)
    payouts = [
        ("Tokens paid", f"{fmt_tokens(sum(paid))} over {_rounds(journaled)}"),
        ("Settled on chain", f"{settled} of {_rounds(journaled)}"),
        ("Tokens claimed", fmt_tokens(sum(i.claimed_wei or 0 for i in report.institutions))),
    ]
    payouts += [(META_LABELS.get(k, k.replace("_", " ").capitalize()), v) for k, v in report.chain.items()]
    return {"Training": training, "Payouts": payouts}


def _rounds(n: int) -> str:
    return f"{n} round" if n == 1 else f"{n} rounds"
