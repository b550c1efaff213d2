"""The HTML page: one file, plots embedded as base64, no scripts and no network fetches, so it opens from disk,
from an e-mail attachment or an archive alike.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from fedlearn.report.load import InstitutionRow, RoundRow, RunReport
from fedlearn.report.text import (
    DASH,
    DUST_WEI,
    clean_reason,
    facts,
    fmt_float,
    fmt_int,
    fmt_interval,
    fmt_pct,
    fmt_signed,
    fmt_tokens,
    gain_line,
    short_hash,
)

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330; margin: 0;
       background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #e3e6eb; }
.sub { color: #5b6474; margin: 0 0 8px; font-size: 13px; }
.groups { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 8px 40px; }
h3 { font-size: 14px; margin: 0 0 6px; color: #5b6474; text-transform: uppercase; letter-spacing: .04em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 24px; margin: 0; }
dl.facts dt { color: #5b6474; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
figure { margin: 0 0 20px; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-weight: 600; margin-bottom: 4px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13.5px; }
th, td { padding: 5px 10px; border-bottom: 1px solid #eceef2; text-align: left; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; white-space: nowrap; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tfoot td { font-weight: 600; border-top: 2px solid #d5d9e0; }
code { font: 12.5px ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.status-settled { color: #1a7f37; }
.status-pending { color: #9a6700; font-weight: 600; }
.sig-yes { color: #1a7f37; }
.sig-no { color: #8a93a3; }
.trueup { font-weight: 600; }
.note { color: #5b6474; max-width: 360px; }
.muted { color: #8a93a3; }
footer { margin-top: 32px; font-size: 13px; color: #5b6474; }
"""


def render_page(report: RunReport, plots: dict[str, Path], exports: Sequence[Path]) -> str:
    title = f"fedlearn report: {report.run_dir.name}"
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">{escape(str(report.run_dir))} · generated {generated}</p>',
        "<h2>Run</h2>",
        '<div class="groups">' + "".join(_facts(h, items) for h, items in facts(report).items()) + "</div>",
        "<h2>Plots</h2>",
        *(_figure(t, p) for t, p in plots.items()),
        "" if plots else '<p class="muted">No rounds recorded yet: nothing to plot.</p>',
        "<h2>Institutions</h2>",
        _institutions(report),
        "<h2>Rounds</h2>",
        _rounds(report),
        "<footer>Data: " + " · ".join(f'<a href="{escape(p.name)}">{escape(p.name)}</a>' for p in exports)
        + "</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _facts(heading: str, items: Iterable[tuple[str, str]]) -> str:
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{_value(v)}</dd>" for k, v in items)
    return f'<div><h3>{escape(heading)}</h3><dl class="facts">{rows}</dl></div>'


def _value(text: str) -> str:
    # Addresses and hashes in monospace: they are read character by character, if at all.
    return f"<code>{escape(text)}</code>" if text.startswith("0x") else escape(text)


def _figure(title: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><figcaption>{escape(title)}</figcaption>'
            f'<img src="data:image/png;base64,{data}" alt="{escape(title)}"></figure>')


# Column headers with a hover explanation: the two shares in particular must not be taken for one another.
HINTS = {
    "Score, all rounds": "the institution's scores summed over every round",
    "Contribution": "scores summed over the rounds whose gain was significant: what the tokens follow; "
                    "± the 95 % interval's half-width where the scores were estimated by sampling",
    "Contribution share": "max(contribution, 0) over the sum of the positive contributions",
    "Token share": "tokens earned over all tokens earned",
    "Tokens earned": "cumulative amount of the last settled round: what the institution can claim",
    "Gain": "the round's validated utility gain, with its bootstrap interval [lower bound, upper bound]",
    "Significant": "whether the gain's lower bound is above zero; only significant rounds count as contribution",
    "Paid (tokens)": "paid to institutions in this round",
    "Released (tokens)": "paid to institutions so far, of the run's budget",
    "Set aside": "rounds whose update was rejected before scoring (no training signal of its own, a copy, "
                 "a failed check): it earned nothing in them",
    "Left out": "rounds whose update was left out of the model because it lowered the others' utility "
                "(integrity.exclude_harmful): scored, below 0, and not aggregated",
    "Clipped, unpaid": "rounds whose update moved the model far further per local step than the round's others "
                       "(integrity.scaled_update_limit): aggregated at the limit's length, not paid",
    "Stake slashed": "stake taken on chain for updates that harmed the model or carried no work",
}


def _institutions(report: RunReport) -> str:
    rows = report.institutions
    tokens = report.has_ledger or any(i.earned_wei is not None or i.claimed_wei is not None for i in rows)
    addresses = any(i.address for i in rows)
    # Offences get their columns where there were any: most runs have none.
    aside, clipped = any(i.set_aside for i in rows), any(i.clipped for i in rows)
    left_out = any(i.left_out for i in rows)
    slashed = any(i.slashed_wei for i in rows)
    head = ["Institution"] + (["Address"] if addresses else [])
    head += ["Examples", "Score, all rounds", "Contribution", "Contribution share"]
    head += ["Token share", "Tokens earned", "Tokens claimed"] if tokens else []
    head += ["Set aside"] * aside + ["Left out"] * left_out + ["Clipped, unpaid"] * clipped
    head += ["Stake slashed"] * slashed
    body = []
    for i in rows:
        cells = [_td(escape(i.name))]
        cells += [_td(f"<code>{escape(i.address)}</code>" if i.address else DASH)] if addresses else []
        cells += [_num(fmt_int(i.examples)), _num(fmt_float(i.cumulative_score)), _contribution(i),
                  _num(fmt_pct(i.contribution_share))]
        cells += [_num(fmt_pct(i.token_share)), _num(fmt_tokens(i.earned_wei)),
                  _num(fmt_tokens(i.claimed_wei))] if tokens else []
        cells += [_num(_of_rounds(i.set_aside))] * aside + [_num(_of_rounds(i.left_out))] * left_out
        cells += [_num(_of_rounds(i.clipped))] * clipped
        cells += [_num(fmt_tokens(i.slashed_wei))] * slashed
        body.append(f'<tr data-institution="{escape(i.name)}">' + "".join(cells) + "</tr>")
    total = [_td("Total")] + ([_td("")] if addresses else [])
    total += [_num(fmt_int(sum(i.examples or 0 for i in rows))), _num(""), _num(""), _num("")]
    total += [_num(""), _num(fmt_tokens(sum(i.earned_wei or 0 for i in rows))),
              _num(fmt_tokens(sum(i.claimed_wei or 0 for i in rows)))] if tokens else []
    total += [_num("")] * (aside + left_out + clipped)
    total += [_num(fmt_tokens(sum(i.slashed_wei or 0 for i in rows)))] * slashed
    return _table(head, body, "<tr>" + "".join(total) + "</tr>")


def _of_rounds(n: int) -> str:
    return "" if n == 0 else f"{n} round" if n == 1 else f"{n} rounds"


def _contribution(i: InstitutionRow) -> str:
    """The contribution, with its 95 % interval's half-width where the scores it sums were estimated."""
    if not i.contribution_error:
        return _num(fmt_float(i.contribution))
    return (f'<td class="num">{escape(fmt_float(i.contribution))} '
            f'<span class="muted">± {escape(fmt_float(i.contribution_error))}</span></td>')


def _rounds(report: RunReport) -> str:
    chain = report.has_ledger
    utilities = {r.utility for r in report.rounds if r.utility}
    gain = f"Gain ({utilities.pop()})" if len(utilities) == 1 else "Gain"
    head = ["Round", "Test accuracy", "Test loss", gain, "Significant"]
    head += ["Paid (tokens)", "Released (tokens)", "Status", "Transaction", "Gas used"] if chain else ["Scoring"]
    head += ["Notes"]
    body = []
    for r in report.rounds:
        cells = [_num(str(r.round)), _num(fmt_pct(r.test_accuracy, 2)), _num(fmt_float(r.test_loss)),
                 _gain(r), _td(_significant(r))]
        if chain:
            tx = (f'<code title="{escape(r.tx_hash)}">{escape(short_hash(r.tx_hash))}</code>'
                  if r.tx_hash else DASH)
            status = f'<span class="status-{escape(r.status)}">{escape(r.status)}</span>' if r.status else DASH
            cells += [_num(fmt_tokens(r.paid_wei)), _num(fmt_tokens(r.released_wei)), _td(status), _td(tx),
                      _num(fmt_int(r.gas_used))]
        else:
            cells += [_td(escape(" ".join(x for x in (r.method, r.estimator) if x) or DASH))]
        cells.append(_td(_notes(r)))
        body.append(f'<tr id="round-{r.round}">' + "".join(cells) + "</tr>")
    return _table(head, body)


def _gain(r: RoundRow) -> str:
    if r.gain is None:
        return _num(DASH)
    interval = fmt_interval(r.gain_low, r.gain_high)
    # On hover, the line the run printed for the round.
    return (f'<td class="num" title="{escape(gain_line(r))}">{escape(fmt_signed(r.gain))} '
            f'<span class="muted">{escape(interval)}</span></td>')


def _significant(r: RoundRow) -> str:
    if r.significant is None:
        return DASH
    return '<span class="sig-yes">yes</span>' if r.significant else '<span class="sig-no">no</span>'


def _notes(r: RoundRow) -> str:
    notes: list[str] = []
    if r.round == 0:
        notes.append("initial model")
    if r.skipped:
        notes.append(escape(f"skipped ({clean_reason(r.skipped)}): contributes nothing"))
    elif r.significant is False:
        notes.append("gain not significant: contributes nothing")
    if r.significant is False and not r.final and (r.paid_wei or 0) >= DUST_WEI:
        # The per-round rate on chain held back what earlier gains earned; this round pays some of it.
        notes.append(escape(f"pays {fmt_tokens(r.paid_wei)} tokens earned in earlier rounds, held back by the "
                            "per-round rate"))
    if r.final:
        trueup = '<span class="trueup">final true-up</span>'
        if r.returned_wei:
            # The rule returns the budget only when no institution has a positive contribution.
            where = (f"returned to the funder (tx {short_hash(r.return_tx_hash)})" if r.return_tx_hash
                     else "no return to the funder recorded")
            notes.append(trueup + escape(f": no positive contribution, {fmt_tokens(r.returned_wei)} tokens "
                                         f"unearned, {where}"))
        else:
            notes.append(trueup + ": everyone paid up to their contribution share")
    elif (r.carried_wei or 0) >= DUST_WEI:
        # Only a real amount is worth a note, not a few wei of rounding.
        notes.append(escape(f"{fmt_tokens(r.carried_wei)} tokens carried to the final true-up"))
    for c in r.cells:
        if c.rejected:
            reason = clean_reason(c.rejected)
            shown = reason if len(reason) <= 60 else reason[:57] + "…"
            # The whole reason (a client's traceback, say) stays one hover away, not in the table's way.
            notes.append(f'<span title="{escape(reason)}">{escape(c.institution)} rejected: {escape(shown)}</span>')
        if c.left_out:
            notes.append(f'<span title="{escape(clean_reason(c.left_out))}">{escape(c.institution)} left out as '
                         f'harmful</span>')
        if c.clipped:
            notes.append(f'<span title="{escape(clean_reason(c.clipped))}">{escape(c.institution)} clipped, '
                         f'unpaid</span>')
        if c.slashed_wei:
            notes.append(escape(f"{c.institution} slashed {fmt_tokens(c.slashed_wei)} tokens of stake"))
    return f'<div class="note">{"<br>".join(notes)}</div>' if notes else ""


def _table(head: Sequence[str], body: Sequence[str], foot: str = "") -> str:
    numeric = {"Round", "Examples", "Score, all rounds", "Contribution", "Contribution share", "Token share",
               "Tokens earned", "Tokens claimed", "Test accuracy", "Test loss", "Paid (tokens)", "Released (tokens)",
               "Gas used", "Set aside", "Stake slashed"}
    num = ' class="num"'
    ths = "".join(f'<th{num if h in numeric or h.startswith("Gain") else ""}{_hint(h)}>{escape(h)}</th>'
                  for h in head)
    tfoot = f"<tfoot>{foot}</tfoot>" if foot else ""
    return (f'<div class="scroll"><table><thead><tr>{ths}</tr></thead><tbody>{"".join(body)}</tbody>'
            f"{tfoot}</table></div>")


def _hint(header: str) -> str:
    hint = HINTS.get("Gain" if header.startswith("Gain") else header)
    return f' title="{escape(hint)}"' if hint else ""


def _num(text: str) -> str:
    return f'<td class="num">{escape(text)}</td>'


def _td(html: str) -> str:
    return f"<td>{html}</td>"
