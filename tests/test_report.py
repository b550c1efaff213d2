"""The report of real run directories: plots, HTML page, CSV/JSON exports, and one-line errors on bad input.

Every run directory here is written by the project: a small federation (tests.runs.real_run: the in-process engine,
no Ray) paying on the embedded eth-tester chain, run once per module. The report is checked against what the run
wrote itself (rounds.json, summary.json, the ledger) and against the chain, never against numbers made up here.
Bad input is a real run directory's copy, then spoiled.

The payout rule the report explains: one budget for the run; only rounds whose validated gain is significant count
as contribution and release tokens as the run goes; the last round trues everyone up to their contribution share;
what nobody earned goes back to the funder. Every journaled round accounts for the whole budget:
released + carried + returned.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import shutil
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from fedlearn.chain import ETH_TESTER, Deployment
from fedlearn.chain.operations import stake_of
from fedlearn.chain.session import connect
from fedlearn.cli.main import main
from fedlearn.config import RunConfig
from fedlearn.errors import FedlearnError
from fedlearn.payout.ledger import LEDGER_FILE, Ledger
from fedlearn.payout.settlement import CHAIN_DIR, DEPLOYMENT_FILE, STATE_FILE
from fedlearn.payout.slashing import evidence_hash
from fedlearn.records.rundir import RoundResult
from fedlearn.report import ReportError, build_report
from fedlearn.report.load import load_run
from fedlearn.report.plots import MAX_SERIES, _series, palette
from fedlearn.report.text import fmt_interval, fmt_pct, fmt_signed, fmt_tokens, short_hash
from tests.runs import (
    deployment_json,
    fingerprint,
    ledger_of,
    on_chain,
    real_run,
    returns_of,
    rounds_json,
    summary_json,
)

WEI = 10**18
ROUNDS = 3
NAMES = ["hospital-01", "hospital-02", "hospital-03"]
FREE_RIDER = "hospital-03"  # returns the global model untouched: set aside every round, paid nothing
STAKE = 10.0  # each institution stakes this; the free rider, set aside in 3 rounds of 3, is slashed in round 3
CLAIMANT = "hospital-01"  # claims after the run; hospital-02 leaves what it earned unclaimed
REWARD_PER_ROUND = Decimal(100)  # chain.reward_per_round's default; the run's budget is this × its rounds
# A learning rate this high makes the first round overshoot: its gain is negative, not significant, and counts for
# nothing; the next rounds recover with significant gains. So the paid run has rounds that count and one that does not.
# (Leaving harmful updates out would keep the overshooting round's model from moving at all: that check is off.) Plain
# SGD, one epoch: momentum would carry the overshoot on into the next rounds.
UNSTABLE = ("train.learning_rate=1.8", "train.momentum=0", "train.local_epochs=1", "integrity.exclude_harmful=false")
PAID_PLOTS = {"accuracy.png", "gains.png", "rewards.png", "cumulative.png", "shares.png"}
REPORT_FILES = PAID_PLOTS | {"index.html", "rounds.csv", "institutions.csv", "report.json"}
FLAG = {True: "true", False: "false"}
CARRIED = "tokens carried to the final true-up"
NOTHING = "gain not significant: contributes nothing"


@dataclass(frozen=True)
class Reported:
    run: Path
    html: Path
    partial: Path | None = None  # the run directory as it stood when round 2 had ended (no report built in it)
    untouched: bool = True  # building the report changed no file of the run directory outside report/


@pytest.fixture(scope="module")
def paid(tmp_path_factory: pytest.TempPathFactory) -> Reported:
    """A finished paying run, one institution's tokens claimed after it, and its report."""
    base = tmp_path_factory.mktemp("paid")
    run, partial = base / "run", base / "after-round-2"

    def observe(result: RoundResult, total: int) -> None:
        if result.server_round == 2:
            shutil.copytree(run, partial)

    real_run(run, f"run.rounds={ROUNDS}", f"data.institutions={len(NAMES)}", "scoring.method='shapley'", *UNSTABLE,
             "chain.claim_at_end=false", f"integrity.behaviours='{FREE_RIDER}=free_rider:free_rider_noise=0'",
             f"integrity.min_stake={STAKE}", observer=observe)
    assert main(["claim", str(run), "--institution", CLAIMANT]) == 0
    before = fingerprint(run)
    html = build_report(run)
    return Reported(run, html, partial, fingerprint(run, skip="report") == before)


@pytest.fixture(scope="module")
def unpaid(tmp_path_factory: pytest.TempPathFactory) -> Reported:
    """A run without a chain: scores, no ledger."""
    run = tmp_path_factory.mktemp("unpaid") / "run"
    real_run(run, "run.rounds=2", "data.institutions=3", "scoring.method='loo'", "chain.enabled=false")
    return Reported(run, build_report(run))


@pytest.fixture(scope="module")
def unearned(tmp_path_factory: pytest.TempPathFactory) -> Reported:
    """A paying run where every institution is a free rider: every round is skipped, nobody contributes, and the
    whole budget goes back to the funder after the last round."""
    run = tmp_path_factory.mktemp("unearned") / "run"
    riders = ", ".join(f"{name}=free_rider:free_rider_noise=0" for name in NAMES)
    real_run(run, "run.rounds=2", f"data.institutions={len(NAMES)}", "scoring.method='loo'",
             f"integrity.behaviours='{riders}'")
    return Reported(run, build_report(run))


# ---- reading what the run and the report wrote ------------------------------------------------------------------


class _Tables(HTMLParser):
    """The text of every table cell, row by row (a line break inside a cell becomes a newline)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_tables(page: str) -> tuple[dict[str, dict[str, str]], dict[int, dict[str, str]]]:
    """The page's institutions table (by name) and rounds table (by round number), each row header → cell text."""
    parser = _Tables()
    parser.feed(page)
    institutions, rounds = ([dict(zip(t[0], row)) for row in t[1:]] for t in parser.tables)
    return ({r["Institution"]: r for r in institutions if r["Institution"] != "Total"},
            {int(r["Round"]): r for r in rounds})



def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def tokens(wei: int) -> Decimal:
    return Decimal(wei) / WEI


def two_places(wei: int) -> str:
    return f"{tokens(wei).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def ink(path: Path) -> float:
    """Fraction of pixels that are not (near) white: an empty plot is mostly white."""
    from matplotlib.image import imread

    pixels = imread(path)[..., :3]
    assert pixels.shape[:2] == png_size(path)[::-1], f"{path.name} does not decode to its declared size"
    return float((pixels.min(axis=2) < 0.9).mean())


def copy_run(source: Path, tmp_path: Path) -> Path:
    """A copy of a real run directory, without its report."""
    return Path(shutil.copytree(source, tmp_path / "run", ignore=shutil.ignore_patterns("report")))


# ---- a paying run -----------------------------------------------------------------------------------------------


def test_the_report_is_written_in_report_and_nothing_else_changes(paid: Reported) -> None:
    assert paid.html == paid.run / "report" / "index.html"
    assert {p.name for p in paid.html.parent.iterdir()} == REPORT_FILES
    assert paid.untouched, "building the report changed a file of the run directory"


def test_plots_are_real_pngs(paid: Reported) -> None:
    for name in sorted(PAID_PLOTS):
        width, height = png_size(paid.html.parent / name)
        assert 600 <= width <= 2000 and 250 <= height <= 1200, (name, width, height)
        assert ink(paid.html.parent / name) > 0.02, f"{name} looks empty"


def test_the_paid_run_has_rounds_that_count_and_a_round_that_does_not(paid: Reported) -> None:
    # What the rest of this module relies on: without both kinds of round, the checks below prove much less.
    verdicts = [r["scores"]["significant"] for r in rounds_json(paid.run) if r["scores"]]
    assert len(verdicts) == ROUNDS and False in verdicts[:-1] and True in verdicts, (
        f"significance per round {verdicts}: the fixture needs a round before the last whose gain is not "
        f"significant, and one whose gain is ({UNSTABLE[0]} should overshoot in round 1)")


def test_rounds_csv_is_what_the_run_measured_and_the_ledger_paid(paid: Reported) -> None:
    rows = read_csv(paid.html.parent / "rounds.csv")
    assert list(rows[0]) == ["round", "institution", "score", "score_error_95", "utility", "gain", "gain_low",
                             "gain_high", "significant", "final", "reward_tokens", "cumulative_tokens", "rejected",
                             "left_out", "clipped", "slashed_tokens"]
    measured = {r["server_round"]: r["scores"] for r in rounds_json(paid.run) if r["scores"] is not None}
    journaled, _, _ = ledger_of(paid.run)
    assert [r.round for r in journaled] == sorted(measured) == list(range(1, ROUNDS + 1))
    assert [(int(r["round"]), r["institution"]) for r in rows] == [(n, i) for n in measured for i in NAMES]
    for record in journaled:
        m = measured[record.round]
        entries = {e.institution: e for e in record.entries}
        mine = [r for r in rows if int(r["round"]) == record.round]
        for row in mine:
            name = row["institution"]
            assert float(row["score"]) == m["scores"][name] == entries[name].score
            # The score's 95 % half-width where the run recorded one (0: exact Banzhaf at this size).
            assert row["score_error_95"] == ("" if name not in m["score_errors"] else repr(m["score_errors"][name]))
            assert Decimal(row["reward_tokens"]) == tokens(entries[name].reward)
            assert Decimal(row["cumulative_tokens"]) == tokens(entries[name].cumulative)
            assert row["rejected"] == m["rejected"].get(name, "")
            assert row["left_out"] == (m.get("excluded") or {}).get(name, "")
            # Slashed in the round its offence completed (the third set-aside round of three).
            assert Decimal(row["slashed_tokens"]) == (STAKE / 2 if (record.round, name) == (ROUNDS, FREE_RIDER) else 0)
            # The round's gain: as the run measured it (rounds.json) and as the payout read it (the ledger).
            assert row["utility"] == m["utility"] == "brier"
            assert (float(row["gain"]), float(row["gain_low"]), float(row["gain_high"])) == (
                m["gain"], m["gain_low"], m["gain_high"]) == (record.gain, record.gain_low, record.gain_high)
            assert row["significant"] == FLAG[m["significant"]] == FLAG[record.significant]
            assert row["final"] == FLAG[record.final] == FLAG[record.round == ROUNDS]
        paid_now = sum(Decimal(r["reward_tokens"]) for r in mine)
        assert paid_now == tokens(record.round_total)
        if not record.significant and not record.final:
            assert paid_now == 0, f"round {record.round} does not count, yet paid {paid_now}"
    # The free rider was set aside every round and earned nothing; the others end with tokens.
    assert {r["rejected"] for r in rows if r["institution"] == FREE_RIDER} == {
        "update is identical to the global model (no local training)"}
    assert all(Decimal(r["reward_tokens"]) == 0 for r in rows if r["institution"] == FREE_RIDER)
    assert all(Decimal(r["cumulative_tokens"]) > 0 for r in rows
               if int(r["round"]) == ROUNDS and r["institution"] != FREE_RIDER)


def test_institutions_csv_is_what_the_run_scored_the_ledger_paid_and_the_chain_holds(paid: Reported) -> None:
    rows = {r["institution"]: r for r in read_csv(paid.html.parent / "institutions.csv")}
    assert list(next(iter(rows.values()))) == [
        "institution", "address", "examples", "cumulative_score", "contribution", "contribution_share",
        "token_share", "tokens_earned", "tokens_claimed", "rounds_set_aside", "rounds_left_out", "rounds_clipped",
        "stake_slashed_tokens"]
    summary = summary_json(paid.run)
    journaled, claimed, _ = ledger_of(paid.run)
    last = {e.institution: e for e in journaled[-1].entries}
    assert journaled[-1].status == "settled"
    assert list(rows) == [i["name"] for i in summary["institutions"]] == NAMES
    measured = [r["scores"] for r in rounds_json(paid.run) if r["scores"]]
    counted = {name: sum(s["scores"][name] for s in measured if s["significant"]) for name in NAMES}
    positive = sum(max(v, 0.0) for v in counted.values())
    paid_out = sum(e.cumulative for e in last.values())
    chain = on_chain(paid.run, [e.address for e in last.values()])
    for i in summary["institutions"]:
        name = i["name"]
        row, entry = rows[name], last[name]
        assert row["address"] == entry.address == i["address"]
        assert int(row["examples"]) == i["examples"]
        assert int(row["rounds_left_out"]) == sum(1 for s in measured if name in (s.get("excluded") or {}))
        assert float(row["cumulative_score"]) == pytest.approx(sum(s["scores"][name] for s in measured))
        # Contribution: the scores of the significant rounds only; its share of the positive total.
        assert float(row["contribution"]) == pytest.approx(counted[name]) == i["contribution"]
        assert float(row["contribution_share"]) == pytest.approx(max(counted[name], 0.0) / positive)
        assert float(row["contribution_share"]) == pytest.approx(i["contribution_share"])
        # Token share: what the ledger paid, as a share of everything it paid.
        assert float(row["token_share"]) == pytest.approx(entry.cumulative / paid_out) == i["token_share"]
        # Earned: the last settled round's cumulative amount, as the run's own summary also says.
        assert Decimal(row["tokens_earned"]) == tokens(entry.cumulative) == tokens(int(i["tokens_earned"]))
        # Claimed: what the ledger recorded, the distributor holds as claimed, and the address holds as tokens.
        on_chain_claimed, balance = chain[entry.address]
        assert Decimal(row["tokens_claimed"]) == tokens(claimed.get(name, 0)) == tokens(on_chain_claimed)
        assert balance == on_chain_claimed
    # The round that did not count is left out of the contribution, not of the score over all rounds.
    assert any(float(r["contribution"]) != pytest.approx(float(r["cumulative_score"])) for r in rows.values())
    assert Decimal(rows[CLAIMANT]["tokens_claimed"]) == Decimal(rows[CLAIMANT]["tokens_earned"]) > 0
    assert Decimal(rows["hospital-02"]["tokens_claimed"]) == 0 < Decimal(rows["hospital-02"]["tokens_earned"])
    assert Decimal(rows[FREE_RIDER]["tokens_earned"]) == 0
    assert float(rows[FREE_RIDER]["contribution_share"]) == float(rows[FREE_RIDER]["token_share"]) == 0
    # The claim after the run updated its summary: the summary, the report and the chain agree.
    assert {i["name"]: Decimal(i["tokens_claimed"]) / WEI for i in summary["institutions"]} == {
        name: Decimal(row["tokens_claimed"]) for name, row in rows.items()}


def test_every_view_shows_the_rounds_set_aside_and_the_stake_slashed_as_the_chain_holds_it(paid: Reported) -> None:
    out = paid.html.parent
    ledger = Ledger.open(paid.run / LEDGER_FILE)
    slashes = ledger.slashes()
    ledger.close()
    # The chain: the free rider's stake lost what the ledger says was slashed, nobody else's moved.
    session = connect(ETH_TESTER, state_file=paid.run / CHAIN_DIR / STATE_FILE)
    deployment = Deployment.load(paid.run / CHAIN_DIR / DEPLOYMENT_FILE, chain_id=session.chain_id)
    summary = {i["name"]: i for i in summary_json(paid.run)["institutions"]}
    staked = {name: stake_of(session, deployment, summary[name]["address"])["active"] for name in NAMES}
    assert [(r, name) for r, name, _, _ in slashes] == [(ROUNDS, FREE_RIDER)]
    # The evidence rests on the update the free rider sent (hashed though it was set aside), not on the reason.
    sent = rounds_json(paid.run)[ROUNDS]["scores"]["update_hashes"][FREE_RIDER]
    assert slashes[0][3].removeprefix("0x") == evidence_hash(ROUNDS, sent).hex()
    slashed = slashes[0][2]
    assert staked == {name: int(STAKE * WEI) - (slashed if name == FREE_RIDER else 0) for name in NAMES}
    set_aside = {name: sum(1 for r in rounds_json(paid.run) if name in ((r["scores"] or {}).get("rejected") or {}))
                 for name in NAMES}
    assert set_aside == {name: ROUNDS if name == FREE_RIDER else 0 for name in NAMES}
    # institutions.csv, report.json and the page say the same.
    rows = {r["institution"]: r for r in read_csv(out / "institutions.csv")}
    data = json.loads((out / "report.json").read_text())
    listed = {i["name"]: i for i in data["institutions"]}
    table, by_round = html_tables(paid.html.read_text())
    for name in NAMES:
        mine = slashed if name == FREE_RIDER else 0
        assert int(rows[name]["rounds_set_aside"]) == listed[name]["rounds_set_aside"] == set_aside[name]
        assert Decimal(rows[name]["stake_slashed_tokens"]) == tokens(mine) == tokens(int(listed[name]["wei_slashed"]))
        assert table[name]["Stake slashed"] == fmt_tokens(mine)
        assert table[name]["Set aside"] == ("3 rounds" if name == FREE_RIDER else "")
    assert data["slashes"] == [{"round": ROUNDS, "institution": FREE_RIDER, "tokens": str(tokens(slashed)),
                                "wei": str(slashed), "evidence": slashes[0][3]}]
    assert f"{FREE_RIDER} slashed {fmt_tokens(slashed)} tokens of stake" in by_round[ROUNDS]["Notes"].split("\n")
    payouts = {f["label"]: f["value"] for f in data["facts"]["Payouts"]}
    assert payouts["Stake slashed"] == f"{fmt_tokens(slashed)} tokens: {FREE_RIDER} (round {ROUNDS})"
    # The ledger's opening amounts read as words on the page and as an object in the JSON, not as a JSON string.
    assert data["chain"]["opening"] == {} and payouts["Earned before this run"] == "nothing: the deployment's first run"


def test_report_json_accounts_for_the_whole_budget_every_round(paid: Reported) -> None:
    data = json.loads((paid.html.parent / "report.json").read_text())
    measured = rounds_json(paid.run)
    journaled, _, meta = ledger_of(paid.run)
    deployment = deployment_json(paid.run)
    assert [r["round"] for r in data["rounds"]] == [r["server_round"] for r in measured] == list(range(ROUNDS + 1))
    for shown, run in zip(data["rounds"], measured):
        assert (shown["test_accuracy"], shown["test_loss"]) == (run["test_accuracy"], run["test_loss"])
    assert data["rounds"][0]["gain"] is data["rounds"][0]["significant"] is data["rounds"][0]["final"] is None
    for shown, record in zip(data["rounds"][1:], journaled):
        run = measured[record.round]["scores"]
        assert (shown["status"], shown["tx_hash"], shown["block"], shown["gas_used"]) == (
            "settled", record.tx_hash, record.block, record.gas_used)
        assert int(shown["wei_paid"]) == record.round_total
        wei = {k: int(shown[f"wei_{k}"]) for k in ("budget", "released", "carried", "returned")}
        assert wei == {"budget": record.budget, "released": record.released, "carried": record.carried,
                       "returned": record.returned}
        assert wei["released"] + wei["carried"] + wei["returned"] == wei["budget"]
        assert Decimal(shown["tokens_budget"]) == REWARD_PER_ROUND * ROUNDS
        # Released is what the institutions hold so far: the sum of their cumulative amounts.
        assert wei["released"] == sum(e.cumulative for e in record.entries)
        assert shown["final"] is record.final is (record.round == ROUNDS)
        assert (shown["utility"], shown["gain"], shown["gain_low"], shown["gain_high"], shown["significant"]) == (
            run["utility"], run["gain"], run["gain_low"], run["gain_high"], run["significant"])
    # The true-up paid the whole budget out (two institutions contributed): nothing carried, nothing returned.
    last = data["rounds"][-1]
    assert int(last["wei_released"]) == journaled[-1].budget and last["wei_carried"] == last["wei_returned"] == "0"
    assert last["return_tx_hash"] is None and returns_of(paid.run) == []
    assert all(int(r["wei_carried"]) > 0 for r in data["rounds"][1:-1])
    assert data["final_test_accuracy"] == summary_json(paid.run)["final_test_accuracy"] == measured[-1]["test_accuracy"]
    assert data["chain"]["distributor"] == meta["distributor"] == deployment["distributor"]
    assert data["chain"]["token"] == deployment["token"]
    assert int(data["chain"]["chain_id"]) == deployment["chain_id"]
    assert {p["file"] for p in data["plots"]} == PAID_PLOTS
    assert sum(int(i["wei_earned"]) for i in data["institutions"]) == sum(r.round_total for r in journaled)
    summary = {i["name"]: i for i in summary_json(paid.run)["institutions"]}
    for i in data["institutions"]:
        for key in ("contribution", "contribution_share", "token_share"):
            assert i[key] == pytest.approx(summary[i["name"]][key]), (i["name"], key)


def test_html_shows_every_institution_round_and_transaction(paid: Reported) -> None:
    page = paid.html.read_text()
    journaled, _, _ = ledger_of(paid.run)
    for name in NAMES:
        assert page.count(f'data-institution="{name}"') == 1
    for r in rounds_json(paid.run):
        assert page.count(f'id="round-{r["server_round"]}"') == 1
    # The plots are embedded, byte for byte the PNG files; nothing is fetched and nothing runs.
    for name in PAID_PLOTS:
        assert "data:image/png;base64," + base64.b64encode((paid.html.parent / name).read_bytes()).decode() in page
    assert page.count("data:image/png;base64,") == len(PAID_PLOTS)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for record in journaled:
        assert f'title="{record.tx_hash}"' in page  # shortened in the table, the whole hash on hover
    assert page.count('class="status-settled">settled<') == len(journaled) == ROUNDS
    assert 'class="status-pending"' not in page
    assert deployment_json(paid.run)["distributor"] in page and "eth-tester" in page
    # Tokens as tokens, never wei.
    earned = {e.institution: e.cumulative for e in journaled[-1].entries}
    assert two_places(earned[CLAIMANT]) in page and two_places(earned["hospital-02"]) in page
    assert all(str(wei) not in page for wei in earned.values() if wei)
    assert f"{FREE_RIDER} rejected: update is identical to the global model (no local training)" in page
    # The old rule's words are gone: budgets are not rolled over from round to round any more.
    assert "rollover" not in page.lower() and "next round" not in page and "carried over" not in page


def test_html_rounds_show_the_gain_its_verdict_and_where_the_budget_stands(paid: Reported) -> None:
    page = paid.html.read_text()
    _, rows = html_tables(page)
    measured = {r["server_round"]: r["scores"] for r in rounds_json(paid.run) if r["scores"]}
    journaled, _, _ = ledger_of(paid.run)
    assert rows[0]["Gain (brier)"] == rows[0]["Significant"] == "—" and rows[0]["Notes"] == "initial model"
    for record in journaled:
        row, m = rows[record.round], measured[record.round]
        # As the run printed it: the gain with its interval, and whether it counts.
        assert row["Gain (brier)"] == f"{fmt_signed(m['gain'])} {fmt_interval(m['gain_low'], m['gain_high'])}"
        assert row["Significant"] == ("yes" if m["significant"] else "no")
        verdict = "significant" if m["significant"] else "not significant: contributes nothing"
        assert f'title="gain {m["gain"]:+.4f} (brier, lower bound {m["gain_low"]:+.4f}: {verdict})"' in page
        assert (NOTHING in row["Notes"]) is (not m["significant"])
        assert row["Paid (tokens)"] == fmt_tokens(record.round_total)
        assert row["Released (tokens)"] == fmt_tokens(record.released)
        notes = row["Notes"].split("\n")
        if record.final:
            assert "final true-up: everyone paid up to their contribution share" in notes
            assert not any(CARRIED in n for n in notes)
        else:
            assert f"{fmt_tokens(record.carried)} {CARRIED}" in notes
            assert not any("true-up:" in n for n in notes)
    assert sum("final true-up:" in r["Notes"] for r in rows.values()) == 1


def test_a_round_paying_gains_the_per_round_rate_held_back_says_so(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # One institution: round 1 gains most of the headroom and, with half the budget advanced as the run goes, earns
    # more than the chain lets one round release (100 tokens a round), so later rounds pay it out, significant or not.
    run = tmp_path / "run"
    real_run(run, "data.institutions=1", "run.rounds=5", "model.hidden_units=64", "train.local_epochs=2",
             "train.momentum=0.9", "train.learning_rate=0.05", "payout.interim_fraction=0.5")
    printed = {int(line.split()[1].split("/")[0]): line for line in capsys.readouterr().out.splitlines()
               if line.startswith("round ")}
    journaled, _, _ = ledger_of(run)
    held = [r.round for r in journaled if not r.significant and not r.final and r.round_total > 0]
    assert held, [(r.round, r.significant, r.round_total) for r in journaled]  # the case this test is about
    _, rows = html_tables(build_report(run).read_text())
    for record in journaled:
        says = record.round in held
        assert ("held back by the per-round rate" in printed[record.round]) is says
        assert (f"pays {fmt_tokens(record.round_total)} tokens earned in earlier rounds, held back by the per-round "
                "rate" in rows[record.round]["Notes"]) is says


def test_html_institutions_show_contribution_share_beside_token_share(paid: Reported) -> None:
    rows, _ = html_tables(paid.html.read_text())
    summary = {i["name"]: i for i in summary_json(paid.run)["institutions"]}
    journaled, _, _ = ledger_of(paid.run)
    last = {e.institution: e.cumulative for e in journaled[-1].entries}
    assert list(rows) == NAMES
    assert list(rows[NAMES[0]])[3:7] == ["Score, all rounds", "Contribution", "Contribution share", "Token share"]
    for name, row in rows.items():
        assert row["Contribution"] == f"{summary[name]['contribution']:.4f}"
        assert row["Contribution share"] == fmt_pct(summary[name]["contribution_share"])
        assert row["Token share"] == fmt_pct(last[name] / sum(last.values()))
        assert row["Tokens earned"] == fmt_tokens(last[name])


def test_html_contribution_carries_the_interval_of_sampled_scores(paid: Reported, tmp_path: Path) -> None:
    """Exact scores record a zero half-width and show none; sampled ones (as Banzhaf and GTG record them) show the
    contribution's ± √Σ half-width² over the rounds that count, and no round that does not count adds to it."""
    run = copy_run(paid.run, tmp_path)
    records = json.loads((run / "rounds.json").read_text())
    scored = [r for r in records if r.get("scores")]
    for r in scored:  # exact Shapley: every scored update has a zero half-width; a set-aside one none
        s = r["scores"]
        assert set(s["score_errors"]) == set(s["scores"]) - set(s["rejected"]), r["server_round"]
        assert not any(s["score_errors"].values())
    counted = [r for r in scored if r["scores"]["significant"] and not r["scores"].get("skipped")]
    assert counted and len(counted) < len(scored), "the fixture needs rounds that count and one that does not"
    for r in scored:  # as a sampling method records them: every scored update, none for a set-aside one
        s = r["scores"]
        s["score_errors"] = {name: 0.001 * r["server_round"] for name in s["scores"] if name not in s["rejected"]}
    (run / "rounds.json").write_text(json.dumps(records))
    rows, _ = html_tables(build_report(run).read_text())
    summary = {i["name"]: i for i in summary_json(run)["institutions"]}
    assert rows[FREE_RIDER]["Contribution"] == f"{summary[FREE_RIDER]['contribution']:.4f}"  # set aside: exact 0
    for name, row in rows.items():
        half = sum((0.001 * r["server_round"]) ** 2 for r in counted if name in r["scores"]["score_errors"]) ** 0.5
        expected = f"{summary[name]['contribution']:.4f}" + (f" ± {half:.4f}" if half else "")
        assert row["Contribution"] == expected


def test_each_round_reports_the_estimator_its_record_names(paid: Reported, tmp_path: Path) -> None:
    # Prepare: the fixture's rounds as Banzhaf records them, round 1 scored exactly and the rest by the surrogate;
    # and the same rounds as a run from before the field existed wrote them (no "estimator" key at all).
    run, older = copy_run(paid.run, tmp_path / "new"), copy_run(paid.run, tmp_path / "old")
    records = json.loads((run / "rounds.json").read_text())
    scored = [r for r in records if r.get("scores")]
    for r in scored:
        r["scores"].update(method="banzhaf", estimator="exact" if r["server_round"] == 1 else "surrogate")
    (run / "rounds.json").write_text(json.dumps(records))
    for r in scored:
        del r["scores"]["estimator"]
    (older / "rounds.json").write_text(json.dumps(records))
    # Execute
    report, before = load_run(run), load_run(older)
    html = build_report(run, tmp_path / "out")
    exported = json.loads((html.parent / "report.json").read_text())
    # Assert: each round keeps its own estimator beside the plain method, in the data and the export; the summary
    # names every estimator used; an older record loads with none.
    expected = {r["server_round"]: "exact" if r["server_round"] == 1 else "surrogate" for r in scored}
    assert {r.round: (r.method, r.estimator) for r in report.rounds if r.method} == {
        n: ("banzhaf", e) for n, e in expected.items()}
    assert {r["round"]: r["scoring_estimator"] for r in exported["rounds"] if r["scoring_method"]} == expected
    scoring = {f["label"]: f["value"] for f in exported["facts"]["Training"]}["Scoring"]
    assert scoring.startswith("banzhaf (exact, surrogate; utility: "), scoring
    assert {r.estimator for r in before.rounds} == {None} and {r.method for r in before.rounds if r.method} == {
        "banzhaf"}


def test_a_run_stopped_after_round_2_reports_as_unfinished(paid: Reported, tmp_path: Path) -> None:
    assert paid.partial is not None
    html = build_report(paid.partial, tmp_path / "out")
    assert html == tmp_path / "out" / "index.html"
    assert not (paid.partial / "report").exists()
    page = html.read_text()
    assert "unfinished (no summary.json)" in page and f"2 of {ROUNDS}" in page
    assert 'id="round-2"' in page and 'id="round-3"' not in page
    journaled, _, _ = ledger_of(paid.partial)
    assert [r.round for r in journaled] == [1, 2] and not journaled[-1].final
    # No summary.json: contribution from the significant rounds of rounds.json, token share from the ledger.
    measured = [r["scores"] for r in rounds_json(paid.partial) if r["scores"]]
    counted = {name: sum(s["scores"][name] for s in measured if s["significant"]) for name in NAMES}
    positive = sum(max(v, 0.0) for v in counted.values())
    cumulative = {e.institution: e.cumulative for e in journaled[-1].entries}
    rows = read_csv(html.parent / "institutions.csv")
    assert [r["institution"] for r in rows] == NAMES
    for row in rows:
        name = row["institution"]
        assert float(row["contribution"]) == pytest.approx(counted[name])
        assert float(row["contribution_share"]) == pytest.approx(max(counted[name], 0.0) / positive)
        assert float(row["token_share"]) == pytest.approx(cumulative[name] / sum(cumulative.values()))
        assert Decimal(row["tokens_earned"]) == tokens(cumulative[name])
    assert all(r["examples"] == "" for r in rows)  # only summary.json knows the example counts
    # Nothing trued up yet: the budget not released waits for the final round.
    _, table = html_tables(page)
    assert f"{fmt_tokens(journaled[-1].carried)} {CARRIED}" in table[2]["Notes"].split("\n")
    assert "true-up:" not in page and "Carried to the final true-up" in page


def test_a_round_still_pending_in_the_ledger_shows_as_pending(paid: Reported, tmp_path: Path) -> None:
    run = copy_run(paid.run, tmp_path)
    db = sqlite3.connect(run / LEDGER_FILE)  # as a chain outage leaves it: journaled, not yet sent
    db.execute(f"UPDATE rounds SET status = 'pending', tx_hash = NULL, block = NULL, gas_used = NULL "
               f"WHERE round = {ROUNDS}")
    db.commit()
    db.close()
    html = build_report(run)
    data = json.loads((html.parent / "report.json").read_text())
    assert [r["status"] for r in data["rounds"][1:]] == ["settled"] * (ROUNDS - 1) + ["pending"]
    assert data["rounds"][-1]["tx_hash"] is None
    assert 'class="status-pending">pending<' in html.read_text()
    # Earned, and the token share, are what the chain lets institutions claim: the last settled round's amounts.
    journaled, _, _ = ledger_of(run)
    settled = {e.institution: e.cumulative for e in journaled[ROUNDS - 2].entries}
    assert journaled[ROUNDS - 2].status == "settled" and settled != {
        e.institution: e.cumulative for e in journaled[-1].entries}
    summary = {i["name"]: i for i in summary_json(run)["institutions"]}
    for row in read_csv(html.parent / "institutions.csv"):
        assert Decimal(row["tokens_earned"]) == tokens(settled[row["institution"]])
        assert float(row["token_share"]) == pytest.approx(settled[row["institution"]] / sum(settled.values()))
    # Here the two shares differ (the true-up is not on chain yet), so neither can stand in for the other.
    rows, _ = html_tables(html.read_text())
    for name, row in rows.items():
        assert row["Token share"] == fmt_pct(settled[name] / sum(settled.values()))
        assert row["Contribution share"] == fmt_pct(summary[name]["contribution_share"])
    assert any(row["Token share"] != row["Contribution share"] for row in rows.values())


def test_a_run_nobody_contributed_to_returns_its_budget(unearned: Reported) -> None:
    run, out = unearned.run, unearned.html.parent
    measured = [r["scores"] for r in rounds_json(run) if r["scores"]]
    journaled, _, _ = ledger_of(run)
    data = json.loads((out / "report.json").read_text())
    assert all(s["skipped"] == "every update was rejected" and not s["significant"] for s in measured)
    assert [r["skipped"] for r in data["rounds"][1:]] == [s["skipped"] for s in measured]
    assert [r["significant"] for r in data["rounds"][1:]] == [False] * len(measured)
    for shown, record in zip(data["rounds"][1:], journaled):
        assert int(shown["wei_released"]) + int(shown["wei_carried"]) + int(shown["wei_returned"]) == record.budget
    last, record = data["rounds"][-1], journaled[-1]
    assert last["final"] is record.final is True
    assert (int(last["wei_released"]), int(last["wei_carried"]), int(last["wei_returned"])) == (0, 0, record.budget)
    assert Decimal(last["tokens_returned"]) == REWARD_PER_ROUND * len(measured)
    # The ledger recorded the return on chain; the report names its funder and transaction.
    [(round_, funder, amount, tx)] = returns_of(run)
    assert (round_, amount) == (record.round, record.budget) and tx
    assert (last["returned_to"], last["return_tx_hash"]) == (funder, tx)
    # On chain: the distributor was funded with the budget and gave all of it back to the funder; it holds the
    # institutions' stakes (the default's; two rounds are too few to slash anyone) and nothing else.
    distributor = deployment_json(run)["distributor"]
    held = on_chain(run, [distributor, funder])
    stakes = len(NAMES) * round(RunConfig().integrity.min_stake * 10**18)
    assert stakes > 0 and held[distributor][1] == stakes and held[funder][1] >= amount
    for row in read_csv(out / "institutions.csv"):
        assert float(row["contribution"]) == float(row["contribution_share"]) == float(row["token_share"]) == 0
        assert Decimal(row["tokens_earned"]) == 0
    _, rows = html_tables(unearned.html.read_text())
    notes = rows[record.round]["Notes"].split("\n")
    assert "skipped (every update was rejected): contributes nothing" in notes
    assert (f"final true-up: no positive contribution, {fmt_tokens(amount)} tokens unearned, returned to the "
            f"funder (tx {short_hash(tx)})") in notes
    assert funder in unearned.html.read_text()


def test_many_institutions_keep_legends_short(tmp_path: Path) -> None:
    n = MAX_SERIES + 2
    names = [f"hospital-{i:02d}" for i in range(1, n + 1)]
    run = tmp_path / "run"
    real_run(run, "run.rounds=2", f"data.institutions={n}", "data.partition='iid'", "scoring.method='loo'")
    html = build_report(run)
    page = html.read_text()
    assert all(page.count(f'data-institution="{name}"') == 1 for name in names)
    assert [r["institution"] for r in read_csv(html.parent / "institutions.csv")] == names
    for name in ("rewards.png", "cumulative.png", "shares.png"):
        assert ink(html.parent / name) > 0.02
    # Past MAX_SERIES, the largest keep their colours and the rest share one grey series; nothing is dropped.
    assert len(set(palette(MAX_SERIES))) == MAX_SERIES
    data = {name: [float(i), 1.0] for i, name in enumerate(names)}
    series = _series(names, data, rank={k: v[0] for k, v in data.items()}, stacked=True)
    assert len(series) == MAX_SERIES and series[-1].label == f"{n - MAX_SERIES + 1} others"
    assert sum(s.values[1] for s in series) == n


def test_number_formats() -> None:
    assert fmt_tokens(0) == "0.00"
    assert fmt_tokens(1234 * WEI + WEI // 2) == "1,234.50"
    assert fmt_tokens(WEI // 8) == "0.125"
    assert fmt_tokens(123456 * 10**12) == "0.1235"
    assert fmt_tokens(82_381_355_510_541_554_397) == "82.38"
    assert fmt_tokens(10**12) == "<0.0001"
    assert fmt_tokens(None) == "—"
    assert fmt_signed(0.00384) == "+0.0038" and fmt_signed(-0.012) == "-0.0120"
    assert fmt_interval(0.0009, 0.0071) == "[+0.0009, +0.0071]" and fmt_interval(None, 0.1) == "—"


# ---- a run without a chain --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("behaviour", "settings", "key", "column", "field", "note", "reason"), [
    # The boosted-update clip on, the step sent ×5: clipped and unpaid.
    ("boosted:scale=5", ["integrity.scaled_update_limit=3"], "clipped", "Clipped, unpaid", "clipped",
     "clipped, unpaid", "update moves the model"),
    # The step sent reversed and ×4: it lowers what the others' aggregate reaches, and is left out of the model.
    ("sign_flip:scale=4", [], "excluded", "Left out", "left_out", "left out as harmful", "lowers the utility"),
], ids=["clipped", "left_out"])
def test_every_view_shows_the_rounds_an_update_was_clipped_or_left_out(
        tmp_path: Path, behaviour: str, settings: list[str], key: str, column: str, field: str, note: str,
        reason: str) -> None:
    # Prepare: one of four institutions behaves so; the run records each round's such updates in rounds.json (no
    # chain: this is about scores and the model).
    odd = "hospital-02"
    run = tmp_path / "run"
    real_run(run, "run.rounds=2", "data.institutions=4", "scoring.method='loo'", "chain.enabled=false", *settings,
             f"integrity.behaviours='{odd}={behaviour}'")
    recorded = {name: [r["server_round"] for r in rounds_json(run) if name in ((r["scores"] or {}).get(key) or {})]
                for name in [f"hospital-0{i}" for i in range(1, 5)]}
    assert recorded[odd] == [1, 2]
    # Execute
    html = build_report(run)
    # Assert: institutions.csv, report.json, rounds.csv and the page say what rounds.json says.
    out = html.parent
    rows = {r["institution"]: r for r in read_csv(out / "institutions.csv")}
    listed = {i["name"]: i for i in json.loads((out / "report.json").read_text())["institutions"]}
    table, by_round = html_tables(html.read_text())
    for name, rounds in recorded.items():
        assert int(rows[name][f"rounds_{field}"]) == listed[name][f"rounds_{field}"] == len(rounds)
        assert table[name][column] == {0: "", 1: "1 round", 2: "2 rounds"}[len(rounds)]
    reasons = {(int(r["round"]), r["institution"]): r[field] for r in read_csv(out / "rounds.csv")}
    assert {k for k, why in reasons.items() if why} == {(n, name) for name, rounds in recorded.items() for n in rounds}
    assert all(reason in reasons[(n, odd)] for n in (1, 2))
    assert f"{odd} {note}" in by_round[1]["Notes"].split("\n")


def test_a_run_without_a_ledger_reports_scores(unpaid: Reported) -> None:
    out = unpaid.html.parent
    assert not (unpaid.run / LEDGER_FILE).exists()
    assert {p.name for p in out.glob("*.png")} == {"accuracy.png", "gains.png", "scores.png", "shares.png"}
    for name in ("accuracy.png", "gains.png", "scores.png", "shares.png"):
        assert ink(out / name) > 0.02
    measured = {r["server_round"]: r["scores"] for r in rounds_json(unpaid.run) if r["scores"]}
    rows = read_csv(out / "rounds.csv")
    assert [(int(r["round"]), r["institution"], float(r["score"])) for r in rows] == [
        (n, name, s["scores"][name]) for n, s in measured.items() for name in sorted(s["scores"])]
    for row in rows:
        m = measured[int(row["round"])]
        assert (float(row["gain"]), float(row["gain_low"]), float(row["gain_high"])) == (
            m["gain"], m["gain_low"], m["gain_high"])
        assert row["significant"] == FLAG[m["significant"]]
    assert all(r["reward_tokens"] == r["cumulative_tokens"] == r["final"] == "" for r in rows)
    institutions = read_csv(out / "institutions.csv")
    summary = summary_json(unpaid.run)["institutions"]
    assert [r["institution"] for r in institutions] == [i["name"] for i in summary]
    for row, i in zip(institutions, summary):
        assert float(row["contribution"]) == pytest.approx(i["contribution"])
        assert float(row["contribution_share"]) == pytest.approx(i["contribution_share"])
    assert all(r["token_share"] == r["tokens_earned"] == r["tokens_claimed"] == "" for r in institutions)
    page = unpaid.html.read_text()
    assert all(f'data-institution="{r["institution"]}"' in page for r in institutions)
    assert all(f'id="round-{r["server_round"]}"' in page for r in rounds_json(unpaid.run))
    assert "Tokens earned" not in page and "Token share" not in page and "none in this run" in page
    assert "Contribution share" in page and "true-up" not in page
    # The run scored by leave-one-out, weaker than the default: the report says so, as summary.json does.
    (weaker,) = summary_json(unpaid.run)["weaker_options"]
    assert weaker.startswith("scoring.method = 'loo': ")
    assert "Weaker than the default" in page and html.escape(weaker) in page


# ---- command line -----------------------------------------------------------------------------------------------


def test_subcommand_prints_the_html_path(paid: Reported, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(paid.run), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "index.html")
    assert {p.name for p in (tmp_path / "out").iterdir()} == REPORT_FILES


def test_subcommand_error_is_one_line_with_exit_code_8(
    paid: Reported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(paid.run, tmp_path)
    (run / "rounds.json").write_text("[")
    assert main(["report", str(run)]) == 8
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("fedlearn: error: ") and captured.err.count("\n") == 1
    assert not (run / "report").exists()


# ---- bad input --------------------------------------------------------------------------------------------------


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        (run / name).write_bytes(content)
    return apply


def _sql(statement: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        db = sqlite3.connect(run / LEDGER_FILE)
        db.execute(statement)
        db.commit()
        db.close()
    return apply


def _edit_json(name: str, change: Callable[[Any], Any]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        (run / name).write_text(json.dumps(change(json.loads((run / name).read_text()))))
    return apply


def _truncate_ledger(run: Path) -> None:
    (run / LEDGER_FILE).write_bytes((run / LEDGER_FILE).read_bytes()[:1024])


def _earned_as_tokens(summary: dict[str, Any]) -> dict[str, Any]:
    summary["institutions"][0]["tokens_earned"] = "1.5"  # tokens, where wei are expected
    return summary


BAD: dict[str, tuple[Callable[[Path], object], str]] = {
    "missing directory": (shutil.rmtree, "does not exist"),
    "no rounds.json": (lambda run: (run / "rounds.json").unlink(), "not a run directory (no rounds.json)"),
    "no config.toml": (lambda run: (run / "config.toml").unlink(), "not a run directory (no config.toml)"),
    "rounds not JSON": (_write("rounds.json", b'[{"server_round": 0,'), "not valid JSON"),
    "rounds wrong shape": (_edit_json("rounds.json", lambda rounds: rounds[0]), "not a list of rounds"),
    "round without number": (_edit_json("rounds.json", lambda rounds: [{**r, "server_round": str(r["server_round"])}
                                                                        for r in rounds]), "no integer server_round"),
    "summary not JSON": (_write("summary.json", b"\xff\xfe"), "not valid JSON"),
    "summary wei": (_edit_json("summary.json", _earned_as_tokens), "not an amount in wei"),
    "summary weaker options": (_edit_json("summary.json", lambda summary: {**summary, "weaker_options": "loo"}),
                               "weaker_options is not a list of lines"),
    "config not TOML": (_write("config.toml", b"[run\nname ="), "not valid TOML"),
    # A weighting a later version may add: this one cannot recompute contributions with it.
    "config round weight": (lambda run: (run / "config.toml").write_text((run / "config.toml").read_text().replace(
        'round_weight = "equal"', 'round_weight = "log"')), "payout.round_weight = 'log' is not one this version"),
    "ledger garbage": (_write(LEDGER_FILE, b"this is not a database" * 50), "not a SQLite file"),
    "ledger empty": (_write(LEDGER_FILE, b""), "not a SQLite file"),
    "ledger truncated": (_truncate_ledger, "is corrupt"),
    "ledger bad amount": (_sql("UPDATE entries SET reward = 'lots' WHERE round = 1"), "is corrupt"),
    "ledger foreign": (_sql("DROP TABLE claims"), "not a fedlearn ledger"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line(paid: Reported, tmp_path: Path, case: str) -> None:
    run = copy_run(paid.run, tmp_path)
    spoil, message = BAD[case]
    spoil(run)
    with pytest.raises(FedlearnError) as info:
        build_report(run)
    text = str(info.value)
    assert isinstance(info.value, ReportError) and info.value.exit_code == 8
    assert "\n" not in text and message in text, text
    assert not (run / "report").exists(), "a bad run directory must leave no half report"


def test_foreign_sqlite_is_refused_untouched(unpaid: Reported, tmp_path: Path) -> None:
    run = copy_run(unpaid.run, tmp_path)
    _sql("CREATE TABLE other (x INTEGER)")(run)
    before = (run / LEDGER_FILE).read_bytes()
    with pytest.raises(ReportError, match="not a fedlearn ledger"):
        build_report(run)
    assert (run / LEDGER_FILE).read_bytes() == before
    assert not (run / "report").exists()


def test_out_dir_is_a_file(paid: Reported, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReportError, match="is a file"):
        build_report(paid.run, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x"
