"""PNG plots of a run, drawn on bare matplotlib Figures (Agg canvas, no pyplot): no global backend switch for
whoever imports this, and safe to call from any thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fedlearn.report.load import ReportError, RunReport, tokens

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

# Beyond this many institutions, legends stop being readable: the largest keep their own colour, the rest turn
# grey under one legend entry (the tables and CSV still list every institution).
MAX_SERIES = 12
OTHERS_COLOR = "#b0b0b0"
NOTHING_PAID = "nothing paid"
DPI = 100
WIDTH_IN = 11.0


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    values: list[float]  # one per training round
    minor: bool = False  # one of the "others", drawn in grey behind the named institutions


def require_matplotlib() -> None:
    # Imported late, so that `fedlearn --help` and the other subcommands do not pay for it.
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError("the report needs matplotlib: pip install matplotlib==3.11.2") from None


def write_plots(report: RunReport, out_dir: Path) -> dict[str, Path]:
    """Draw every plot that the run's data supports; returns title → PNG path in drawing order."""
    require_matplotlib()
    plots: dict[str, Path] = {}
    if any(r.test_accuracy is not None for r in report.rounds):
        plots["Global model on the test set"] = _save(_accuracy(report), out_dir / "accuracy.png")
    if any(r.gain is not None for r in report.scored_rounds):
        plots["Validated gain per round"] = _save(_gains(report), out_dir / "gains.png")
    if report.scored_rounds and report.institutions:
        if report.has_ledger:
            plots["Reward per institution per round"] = _save(_rewards(report), out_dir / "rewards.png")
            plots["Cumulative tokens per institution"] = _save(_cumulative(report), out_dir / "cumulative.png")
        else:
            plots["Contribution score per institution"] = _save(_scores(report), out_dir / "scores.png")
    if any(i.contribution_share is not None for i in report.institutions):
        title = "Contribution share and token share" if report.has_ledger else "Contribution share"
        plots[title] = _save(_shares(report), out_dir / "shares.png")
    return plots


# ---- the plots --------------------------------------------------------------------------------------------------


def _accuracy(report: RunReport) -> Figure:
    fig, (acc, loss) = _figure(2, height=3.6)
    x = [r.round for r in report.rounds]
    marker = "o" if len(x) <= 30 else None
    acc.plot(x, [_nan(r.test_accuracy) for r in report.rounds], marker=marker, color="#1f77b4")
    acc.set_title("Test accuracy")
    acc.set_ylim(0, 1.02)
    acc.yaxis.set_major_formatter(_percent())
    loss.plot(x, [_nan(r.test_loss) for r in report.rounds], marker=marker, color="#d62728")
    loss.set_title("Test loss")
    for ax in (acc, loss):
        _round_axis(ax, x)
    return fig


def _gains(report: RunReport) -> Figure:
    """Each round's gain with its bootstrap interval: filled where significant (it counts), hollow where not."""
    rounds = [r for r in report.scored_rounds if r.gain is not None]
    fig, (ax,) = _figure(1, height=3.6)
    for significant, color, fill, label in ((True, "#1a7f37", "#1a7f37", "significant: counts"),
                                            (False, "#8a93a3", "white", "not significant: contributes nothing")):
        chosen = [r for r in rounds if r.counts is significant]
        if not chosen:
            continue
        gains = [r.gain or 0.0 for r in chosen]
        below = [max(g - (r.gain_low if r.gain_low is not None else g), 0.0) for g, r in zip(gains, chosen)]
        above = [max((r.gain_high if r.gain_high is not None else g) - g, 0.0) for g, r in zip(gains, chosen)]
        ax.errorbar([r.round for r in chosen], gains, yerr=[below, above], fmt="o", capsize=4, markersize=6,
                    linestyle="none", color=color, markerfacecolor=fill, label=label)
    ax.axhline(0, color="#444444", linewidth=0.8)
    utilities = {r.utility for r in rounds if r.utility}
    ax.set_ylabel(f"gain in {utilities.pop()}" if len(utilities) == 1 else "gain")
    ax.set_title("Utility gain of each round on the validation split, with its bootstrap interval")
    _round_axis(ax, [r.round for r in report.scored_rounds])
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize="small", frameon=False)
    return fig


def _shares(report: RunReport) -> Figure:
    """Per institution, side by side: its share of the positive contribution and (with a ledger) of the tokens."""
    rows = report.institutions
    x = list(range(len(rows)))
    bars = [("contribution share", "#1f77b4", [i.contribution_share or 0.0 for i in rows])]
    if report.has_ledger:
        bars.append(("token share", "#ff7f0e", [i.token_share or 0.0 for i in rows]))
    fig, (ax,) = _figure(1, height=4.0)
    width = 0.8 / len(bars)
    for k, (label, color, values) in enumerate(bars):
        offset = (k - (len(bars) - 1) / 2) * width
        ax.bar([xi + offset for xi in x], values, width=width, color=color, label=label)
    ax.set_xticks(x, [i.name for i in rows], rotation=0 if len(rows) <= 8 else 60,
                  ha="center" if len(rows) <= 8 else "right", fontsize="small" if len(rows) > 8 else None)
    ax.yaxis.set_major_formatter(_percent())
    ax.set_title("Share of the contribution" + (" and of the tokens earned" if report.has_ledger else ""))
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize="small", frameon=False)
    return fig


def _rewards(report: RunReport) -> Figure:
    rounds = report.scored_rounds
    x = [r.round for r in rounds]
    per_round = {name: [0.0] * len(rounds) for name in report.names}
    for i, r in enumerate(rounds):
        for c in r.cells:
            if c.reward_wei is not None and c.institution in per_round:
                per_round[c.institution][i] = float(tokens(c.reward_wei))
    series = _series(report.names, per_round, rank=_final_tokens(report), stacked=True)
    fig, (ax,) = _figure(1, height=4.4)
    bottom = [0.0] * len(x)
    width = {1: 0.35, 2: 0.6}.get(len(x), 0.8)  # one or two full-width bars look like blocks, not bars
    for s in series:
        ax.bar(x, s.values, bottom=bottom, color=s.color, label=s.label, width=width, edgecolor="white",
               linewidth=0.4 if len(x) < 60 else 0)
        bottom = [b + v for b, v in zip(bottom, s.values)]
    # An empty slot reads as missing data: say that the round paid nothing (its gain was not significant, say:
    # the budget waits for later rounds and the final true-up).
    empty = [xi for xi, total in zip(x, bottom) if total == 0]
    if empty and len(x) <= 20:
        for xi in empty:
            ax.annotate("nothing\npaid", (xi, 0), xytext=(0, 4), textcoords="offset points", ha="center",
                        va="bottom", fontsize="x-small", color="#666666")
    elif empty:  # too narrow for words: a mark, explained once in the legend
        ax.scatter(empty, [0] * len(empty), marker="x", color="#666666", s=14, zorder=3, clip_on=False,
                   label=NOTHING_PAID)
    ax.set_ylabel("tokens")
    ax.set_title("Tokens paid per round, by institution")
    _round_axis(ax, x)
    if len(x) <= 20 and any(r.final for r in rounds):
        ax.set_xticks(x, [f"{r.round}\ntrue-up" if r.final else str(r.round) for r in rounds])
    _legend(fig, stacked=True)
    return fig


def _cumulative(report: RunReport) -> Figure:
    rounds = report.scored_rounds
    x = [0] + [r.round for r in rounds]
    totals = {name: [0.0] for name in report.names}
    for r in rounds:
        seen = {c.institution: c.cumulative_wei for c in r.cells if c.cumulative_wei is not None}
        for name, values in totals.items():
            # An institution absent from a round's entries keeps what it had.
            values.append(float(tokens(seen[name])) if name in seen else values[-1])
    series = _series(report.names, totals, rank=_final_tokens(report))
    fig, (ax,) = _figure(1, height=4.4)
    _lines(ax, x, series)
    ax.set_ylabel("tokens")
    ax.set_title("Cumulative tokens earned")
    _round_axis(ax, x)
    _legend(fig)
    return fig


def _scores(report: RunReport) -> Figure:
    rounds = report.scored_rounds
    x = [r.round for r in rounds]
    per_round = {name: [0.0] * len(rounds) for name in report.names}
    for i, r in enumerate(rounds):
        for c in r.cells:
            if c.score is not None and c.institution in per_round:
                per_round[c.institution][i] = c.score
    # Contribution: the scores of the significant rounds only (all rounds where significance is not recorded).
    counted = {name: [v if r.significant is not False else 0.0 for v, r in zip(values, rounds)]
               for name, values in per_round.items()}
    cumulative = {name: _running_sum(v) for name, v in counted.items()}
    rank = {i.name: i.contribution if i.contribution is not None else i.cumulative_score for i in report.institutions}
    fig, (each, total) = _figure(2, height=4.0)
    right = ("Cumulative contribution (significant rounds)" if any(r.significant is False for r in rounds)
             else "Cumulative contribution")
    for ax, data, title in ((each, per_round, "Score per round"), (total, cumulative, right)):
        _lines(ax, x, _series(report.names, data, rank=rank))
        ax.axhline(0, color="#444444", linewidth=0.8)
        ax.set_title(title)
        _round_axis(ax, x)
    _legend(fig)
    return fig


def _lines(ax: Axes, x: Sequence[int], series: list[Series]) -> None:
    marker = "o" if len(x) <= 30 else None
    for s in series:
        if s.minor:
            ax.plot(x, s.values, color=s.color, label=s.label, linewidth=0.8, alpha=0.7, zorder=1)
        else:
            ax.plot(x, s.values, marker=marker, markersize=3.5, color=s.color, label=s.label, zorder=2)


# ---- series, colors, legends ------------------------------------------------------------------------------------


def palette(n: int) -> list[str]:
    """n distinct colors; tab20 reordered so neighbours in a stack never get its paired light/dark shades."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if n <= 10:
        return [to_hex(colormaps["tab10"](i)) for i in range(n)]
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return [to_hex(colormaps["tab20"](i)) for i in order[:n]]


def _series(names: Sequence[str], data: dict[str, list[float]], rank: dict[str, float],
            stacked: bool = False) -> list[Series]:
    """One series per institution while legends stay readable; past MAX_SERIES, the MAX_SERIES - 1 largest by
    ``rank`` in colour and the rest in grey: summed into one bar segment when ``stacked``, else one thin grey line
    each under a single legend entry (a summed line would dwarf every other line and flatten the plot).

    Colours follow the institution's position in the run, so a name keeps its colour across plots.
    """
    if len(names) <= MAX_SERIES:
        return [Series(n, c, data[n]) for n, c in zip(names, palette(len(names)))]
    keep = sorted(names, key=lambda n: (-rank.get(n, 0.0), n))[: MAX_SERIES - 1]
    kept = [n for n in names if n in keep]
    rest = [n for n in names if n not in keep]
    out = [Series(n, c, data[n]) for n, c in zip(kept, palette(len(kept)))]
    label = f"{len(rest)} others"
    if stacked:
        return out + [Series(label, OTHERS_COLOR, [sum(v) for v in zip(*(data[n] for n in rest))], minor=True)]
    # Matplotlib leaves labels starting with "_" out of legends: one entry stands for all grey lines.
    return out + [Series(label if i == 0 else f"_{n}", OTHERS_COLOR, data[n], minor=True)
                  for i, n in enumerate(rest)]


def _final_tokens(report: RunReport) -> dict[str, float]:
    return {i.name: float(tokens(i.earned_wei or 0)) for i in report.institutions}


def _legend(fig: Figure, stacked: bool = False) -> None:
    """Outside the axes, so it never covers bars or lines; a stack's legend reads top-down like the stack."""
    pairs = list(zip(*fig.axes[0].get_legend_handles_labels()))
    series = [p for p in pairs if p[1] != NOTHING_PAID]
    if stacked:
        series.reverse()
    handles, labels = zip(*(series + [p for p in pairs if p[1] == NOTHING_PAID]))
    fig.legend(handles, labels, loc="outside right upper", fontsize="small", frameon=False)


def _figure(panels: int, height: float) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax in axes:
        ax.grid(axis="y", color="#e5e5e5")
        ax.set_axisbelow(True)
        ax.spines[["top", "right"]].set_visible(False)
    return fig, list(axes)


def _round_axis(ax: Axes, x: Sequence[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("round")
    if len(x) <= 20:
        ax.set_xticks(list(x))  # every round labelled; an automatic locator skips some of a short run
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if x:
        ax.set_xlim(min(x) - 0.6, max(x) + 0.6)


def _percent() -> PercentFormatter:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _running_sum(values: list[float]) -> list[float]:
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out
