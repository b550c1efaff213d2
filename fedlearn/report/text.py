"""How numbers, hashes and reasons read in the report, shared by the HTML page and report.json."""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal

from fedlearn.report.load import RoundRow, RunReport, tokens

DASH = "—"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Ledger meta keys with a reader's label; other keys are shown under their own name.
META_LABELS = {
    "backend": "Chain backend",
    "chain_id": "Chain id",
    "distributor": "Distributor",
    "token": "Token contract",
    "funded_wei": "Funded by this run (wei)",
    "reward_per_round": "Reward per round (wei)",
    "round_offset": "Deployment rounds before this run",
    "opening": "Earned before this run",
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


def fmt_signed(value: float | None, digits: int = 4) -> str:
    """+0.0038 · -0.0120: a gain reads with its sign."""
    return DASH if value is None else f"{value:+.{digits}f}"


def fmt_interval(low: float | None, high: float | None, digits: int = 4) -> str:
    return DASH if low is None or high is None else f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def gain_line(r: RoundRow) -> str:
    """The round's gain as the run printed it: gain +0.0038 (brier, lower bound +0.0009: significant)."""
    if r.gain is None:
        return ""
    verdict = {True: "significant", False: "not significant: contributes nothing", None: "significance unknown"}
    utility = f"{r.utility}, " if r.utility else ""
    return f"gain {r.gain:+.4f} ({utility}lower bound {fmt_signed(r.gain_low)}: {verdict[r.significant]})"


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
    utility = next((r.utility for r in reversed(report.rounds) if r.utility), None) or c.get("scoring.utility")
    # e.g. "banzhaf (exact, surrogate; utility: brier)": every estimator a round used, not only the last one's.
    estimators = sorted({r.estimator for r in report.rounds if r.estimator})
    details = [", ".join(estimators)] if estimators else []
    details += [f"utility: {utility}"] if utility else []
    training = [
        ("Run", report.run_dir.name),
        ("Status", "finished" if report.finished else "unfinished (no summary.json)"),
        ("Dataset", f"{c.get('data.dataset', DASH)}, partition {partition}"),
        ("Institutions", str(len(report.institutions))),
        ("Rounds", rounds),
        ("Model", str(c.get("model.name", DASH))),
        ("Strategy", str(c.get("strategy.name", DASH))),
        ("Scoring", f"{method}" + (f" ({'; '.join(details)})" if details else "")),
    ]
    training += [("Weaker than the default", line) for line in report.weaker_options]
    judged = [r for r in report.scored_rounds if r.significant is not None]
    if judged:
        test = c.get("scoring.significance")
        confidence = c.get("scoring.confidence")
        least = c.get("scoring.min_gain", 0.0)  # a run made before the key counted any gain above zero
        floor = f"{least:g}" if isinstance(least, (int, float)) and least > 0 else "zero"
        how = (f"a paired bootstrap's lower bound above {floor}"
               + (f" at {confidence * 100:g}% confidence" if isinstance(confidence, float) else "")
               if test == "bootstrap" else f"any gain above {floor}" if test == "none" else "")
        counted = sum(1 for r in judged if r.significant)
        training.append(("Significant rounds", f"{counted} of {_rounds(len(judged))}, only these count as "
                         "contribution" + (f" ({how})" if how else "")))
    training += [
        ("Seed", str(c.get("run.seed", DASH))),
        ("Final test accuracy", fmt_pct(report.final_accuracy, 2)),
    ]
    if report.chain is None:
        return {"Training": training, "Payouts": [("Ledger", "none in this run: scores only, no token payouts")]}
    settled = sum(1 for r in report.rounds if r.status == "settled")
    journaled = sum(1 for r in report.rounds if r.status is not None)
    payouts: list[tuple[str, str]] = []
    last = report.last_paid
    if last is not None and last.budget_wei is not None:
        payouts.append(("Budget", f"{fmt_tokens(last.budget_wei)} tokens for the whole run"))
        interim = c.get("payout.interim_fraction")
        if isinstance(interim, (int, float)) and not isinstance(interim, bool):
            payouts.append(("Paid as the run goes", f"up to {interim:.0%} of the budget, as significant gains "
                            "come; the last round trues everyone up to their contribution share"))
        payouts.append(("Released to institutions", f"{fmt_tokens(last.released_wei)} tokens after round "
                        f"{last.round}"))
        if last.final:
            payouts.append(("Final true-up", f"round {last.round}: {fmt_tokens(last.paid_wei)} tokens"))
            if last.returned_wei:
                payouts.append(("Unearned", f"{fmt_tokens(last.returned_wei)} tokens, {_returned(report, last)}"))
        else:
            payouts.append(("Carried to the final true-up", f"{fmt_tokens(last.carried_wei)} tokens"))
    payouts += [
        ("Settled on chain", f"{settled} of {_rounds(journaled)}"),
        ("Tokens claimed", fmt_tokens(sum(i.claimed_wei or 0 for i in report.institutions))),
    ]
    if report.slashes:
        offences = ", ".join(f"{x.institution} (round {x.round})" for x in report.slashes)
        payouts.append(("Stake slashed", f"{fmt_tokens(sum(x.wei for x in report.slashes))} tokens: {offences}"))
    payouts += [(META_LABELS.get(k, k.replace("_", " ").capitalize()), _meta_value(k, v))
                for k, v in report.chain.items()]
    return {"Training": training, "Payouts": payouts}


def opening_amounts(meta: dict[str, str]) -> dict[str, int]:
    """The cumulative amounts (address → wei) the deployment had paid before the run began: its true-up counts
    from these (the ledger keeps them as JSON)."""
    try:
        return {str(a): int(v) for a, v in json.loads(meta.get("opening") or "{}").items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def _meta_value(key: str, value: str) -> str:
    if key != "opening":
        return value
    amounts = opening_amounts({key: value})
    if not amounts:
        return "nothing: the deployment's first run"
    return f"{fmt_tokens(sum(amounts.values()))} tokens to {len(amounts)} address(es) in earlier runs"


def _returned(report: RunReport, r: RoundRow) -> str:
    """What became of the budget nobody earned."""
    if r.return_tx_hash or r.returned_to:
        return f"returned to the funder {r.returned_to or DASH} (tx {r.return_tx_hash or DASH})"
    if report.config.get("chain.funding") == "per_round":
        return "never taken from the funder (per-round funding)"
    return "still in the distributor: no return recorded in the ledger"


def _rounds(n: int) -> str:
    return f"{n} round" if n == 1 else f"{n} rounds"
