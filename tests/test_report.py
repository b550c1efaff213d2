"""The report of real run directories: plots, HTML page, CSV/JSON exports, and one-line errors on bad input.

Every run directory here is written by the project: a small federation (tests.runs.real_run: the in-process engine,
no Ray) paying on the embedded eth-tester chain, run once per module. The report is checked against what the run
wrote itself (rounds.json, summary.json, the ledger) and against the chain, never against numbers made up here.
Bad input is a real run directory's copy, then spoiled.
"""

from __future__ import annotations

import base64
import csv
import json
import shutil
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from fedlearn.cli.main import main
from fedlearn.errors import FedlearnError
from fedlearn.payout.ledger import LEDGER_FILE
from fedlearn.records.rundir import RoundResult
from fedlearn.report import ReportError, build_report
from fedlearn.report.plots import MAX_SERIES, _series, palette
from fedlearn.report.text import fmt_tokens
from tests.runs import deployment_json, fingerprint, ledger_of, on_chain, real_run, rounds_json, summary_json

WEI = 10**18
ROUNDS = 3
NAMES = ["hospital-01", "hospital-02", "hospital-03"]
FREE_RIDER = "hospital-03"  # returns the global model untouched: set aside every round, paid nothing
CLAIMANT = "hospital-01"  # claims after the run; hospital-02 leaves what it earned unclaimed
BUDGET_TOKENS = Decimal(100)  # chain.reward_per_round's default
REPORT_FILES = {"index.html", "accuracy.png", "rewards.png", "cumulative.png", "rounds.csv", "institutions.csv",
                "report.json"}


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

    real_run(run, f"run.rounds={ROUNDS}", f"data.institutions={len(NAMES)}", "scoring.method='shapley'",
             "chain.claim_at_end=false", f"integrity.behaviours='{FREE_RIDER}=free_rider:free_rider_noise=0'",
             observer=observe)
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


# ---- reading what the run and the report wrote ------------------------------------------------------------------


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
    for name in ("accuracy.png", "rewards.png", "cumulative.png"):
        width, height = png_size(paid.html.parent / name)
        assert 600 <= width <= 2000 and 250 <= height <= 1200, (name, width, height)
        assert ink(paid.html.parent / name) > 0.02, f"{name} looks empty"


def test_rounds_csv_is_what_the_run_measured_and_the_ledger_paid(paid: Reported) -> None:
    rows = read_csv(paid.html.parent / "rounds.csv")
    assert list(rows[0]) == ["round", "institution", "score", "reward_tokens", "cumulative_tokens", "rejected"]
    measured = {r["server_round"]: r["scores"] for r in rounds_json(paid.run) if r["scores"] is not None}
    journaled, _, _ = ledger_of(paid.run)
    assert [r.round for r in journaled] == sorted(measured) == list(range(1, ROUNDS + 1))
    assert [(int(r["round"]), r["institution"]) for r in rows] == [(n, i) for n in measured for i in NAMES]
    for record in journaled:
        entries = {e.institution: e for e in record.entries}
        for row in (r for r in rows if int(r["round"]) == record.round):
            name = row["institution"]
            assert float(row["score"]) == measured[record.round]["scores"][name] == entries[name].score
            assert Decimal(row["reward_tokens"]) == tokens(entries[name].reward)
            assert Decimal(row["cumulative_tokens"]) == tokens(entries[name].cumulative)
            assert row["rejected"] == measured[record.round]["rejected"].get(name, "")
        paid_now = sum(Decimal(r["reward_tokens"]) for r in rows if int(r["round"]) == record.round)
        assert paid_now == tokens(record.round_total)
        assert paid_now + tokens(record.rollover) == tokens(record.budget)  # the budget, less rounding, is paid
    assert tokens(journaled[0].budget) == BUDGET_TOKENS
    # The free rider was set aside every round and earned nothing; the others earned every round.
    assert {r["rejected"] for r in rows if r["institution"] == FREE_RIDER} == {
        "update is identical to the global model (no local training)"}
    assert all(Decimal(r["reward_tokens"]) == 0 for r in rows if r["institution"] == FREE_RIDER)
    assert all(Decimal(r["reward_tokens"]) > 0 for r in rows if r["institution"] != FREE_RIDER)


def test_institutions_csv_is_what_the_ledger_paid_and_the_chain_holds(paid: Reported) -> None:
    rows = {r["institution"]: r for r in read_csv(paid.html.parent / "institutions.csv")}
    summary = summary_json(paid.run)
    journaled, claimed, _ = ledger_of(paid.run)
    last = {e.institution: e for e in journaled[-1].entries}
    assert list(rows) == [i["name"] for i in summary["institutions"]] == NAMES
    chain = on_chain(paid.run, [e.address for e in last.values()])
    for i in summary["institutions"]:
        row, entry = rows[i["name"]], last[i["name"]]
        assert row["address"] == entry.address == i["address"]
        assert int(row["examples"]) == i["examples"]
        assert float(row["cumulative_score"]) == pytest.approx(
            sum(r["scores"]["scores"][i["name"]] for r in rounds_json(paid.run) if r["scores"]))
        assert float(row["share"]) == pytest.approx(i["share"])
        # Earned: the last settled round's cumulative amount, as the run's own summary also says.
        assert journaled[-1].status == "settled"
        assert Decimal(row["tokens_earned"]) == tokens(entry.cumulative) == tokens(int(i["tokens_earned"]))
        # Claimed: what the ledger recorded, the distributor holds as claimed, and the address holds as tokens.
        on_chain_claimed, balance = chain[entry.address]
        assert Decimal(row["tokens_claimed"]) == tokens(claimed.get(i["name"], 0)) == tokens(on_chain_claimed)
        assert balance == on_chain_claimed
    assert Decimal(rows[CLAIMANT]["tokens_claimed"]) == Decimal(rows[CLAIMANT]["tokens_earned"]) > 0
    assert Decimal(rows["hospital-02"]["tokens_claimed"]) == 0 < Decimal(rows["hospital-02"]["tokens_earned"])
    assert Decimal(rows[FREE_RIDER]["tokens_earned"]) == 0
    # The run ended before the claim: its summary says nothing was claimed; the report follows the ledger.
    assert all(i["tokens_claimed"] == "0" for i in summary["institutions"])


def test_report_json_is_the_run_the_ledger_and_the_deployment(paid: Reported) -> None:
    data = json.loads((paid.html.parent / "report.json").read_text())
    measured = rounds_json(paid.run)
    journaled, _, meta = ledger_of(paid.run)
    deployment = deployment_json(paid.run)
    assert [r["round"] for r in data["rounds"]] == [r["server_round"] for r in measured] == list(range(ROUNDS + 1))
    for shown, run in zip(data["rounds"], measured):
        assert (shown["test_accuracy"], shown["test_loss"]) == (run["test_accuracy"], run["test_loss"])
    for shown, record in zip(data["rounds"][1:], journaled):
        assert (shown["status"], shown["tx_hash"], shown["block"], shown["gas_used"]) == (
            "settled", record.tx_hash, record.block, record.gas_used)
        assert int(shown["wei_paid"]) == record.round_total
    assert data["final_test_accuracy"] == summary_json(paid.run)["final_test_accuracy"] == measured[-1]["test_accuracy"]
    assert data["chain"]["distributor"] == meta["distributor"] == deployment["distributor"]
    assert data["chain"]["token"] == deployment["token"]
    assert int(data["chain"]["chain_id"]) == deployment["chain_id"]
    assert {p["file"] for p in data["plots"]} == {"accuracy.png", "rewards.png", "cumulative.png"}
    assert sum(int(i["wei_earned"]) for i in data["institutions"]) == sum(r.round_total for r in journaled)


def test_html_shows_every_institution_round_and_transaction(paid: Reported) -> None:
    page = paid.html.read_text()
    journaled, _, _ = ledger_of(paid.run)
    for name in NAMES:
        assert page.count(f'data-institution="{name}"') == 1
    for r in rounds_json(paid.run):
        assert page.count(f'id="round-{r["server_round"]}"') == 1
    # The plots are embedded, byte for byte the PNG files; nothing is fetched and nothing runs.
    for name in ("accuracy.png", "rewards.png", "cumulative.png"):
        assert "data:image/png;base64," + base64.b64encode((paid.html.parent / name).read_bytes()).decode() in page
    assert page.count("data:image/png;base64,") == 3
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


def test_a_run_stopped_after_round_2_reports_as_unfinished(paid: Reported, tmp_path: Path) -> None:
    assert paid.partial is not None
    html = build_report(paid.partial, tmp_path / "out")
    assert html == tmp_path / "out" / "index.html"
    assert not (paid.partial / "report").exists()
    page = html.read_text()
    assert "unfinished (no summary.json)" in page and f"2 of {ROUNDS}" in page
    assert 'id="round-2"' in page and 'id="round-3"' not in page
    journaled, _, _ = ledger_of(paid.partial)
    assert [r.round for r in journaled] == [1, 2]
    rows = read_csv(html.parent / "institutions.csv")
    assert [r["institution"] for r in rows] == NAMES
    assert {r["institution"]: Decimal(r["tokens_earned"]) for r in rows} == {
        e.institution: tokens(e.cumulative) for e in journaled[-1].entries}
    assert all(r["examples"] == "" for r in rows)  # only summary.json knows the example counts


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


def test_many_institutions_keep_legends_short(tmp_path: Path) -> None:
    n = MAX_SERIES + 2
    names = [f"hospital-{i:02d}" for i in range(1, n + 1)]
    run = tmp_path / "run"
    real_run(run, "run.rounds=2", f"data.institutions={n}", "data.partition='iid'", "scoring.method='loo'")
    html = build_report(run)
    page = html.read_text()
    assert all(page.count(f'data-institution="{name}"') == 1 for name in names)
    assert [r["institution"] for r in read_csv(html.parent / "institutions.csv")] == names
    for name in ("rewards.png", "cumulative.png"):
        assert ink(html.parent / name) > 0.02
    # Past MAX_SERIES, the largest keep their colours and the rest share one grey series; nothing is dropped.
    assert len(set(palette(MAX_SERIES))) == MAX_SERIES
    data = {name: [float(i), 1.0] for i, name in enumerate(names)}
    series = _series(names, data, rank={k: v[0] for k, v in data.items()}, stacked=True)
    assert len(series) == MAX_SERIES and series[-1].label == f"{n - MAX_SERIES + 1} others"
    assert sum(s.values[1] for s in series) == n


def test_token_format() -> None:
    assert fmt_tokens(0) == "0.00"
    assert fmt_tokens(1234 * WEI + WEI // 2) == "1,234.50"
    assert fmt_tokens(WEI // 8) == "0.125"
    assert fmt_tokens(123456 * 10**12) == "0.1235"
    assert fmt_tokens(82_381_355_510_541_554_397) == "82.38"
    assert fmt_tokens(10**12) == "<0.0001"
    assert fmt_tokens(None) == "—"


# ---- a run without a chain --------------------------------------------------------------------------------------


def test_a_run_without_a_ledger_reports_scores(unpaid: Reported) -> None:
    out = unpaid.html.parent
    assert not (unpaid.run / LEDGER_FILE).exists()
    assert {p.name for p in out.glob("*.png")} == {"accuracy.png", "scores.png"}
    for name in ("accuracy.png", "scores.png"):
        assert ink(out / name) > 0.02
    measured = {r["server_round"]: r["scores"]["scores"] for r in rounds_json(unpaid.run) if r["scores"]}
    rows = read_csv(out / "rounds.csv")
    assert [(int(r["round"]), r["institution"], float(r["score"])) for r in rows] == [
        (n, name, scores[name]) for n, scores in measured.items() for name in sorted(scores)]
    assert all(r["reward_tokens"] == r["cumulative_tokens"] == "" for r in rows)
    institutions = read_csv(out / "institutions.csv")
    assert [r["institution"] for r in institutions] == [i["name"] for i in summary_json(unpaid.run)["institutions"]]
    assert all(r["tokens_earned"] == r["tokens_claimed"] == "" for r in institutions)
    page = unpaid.html.read_text()
    assert all(f'data-institution="{r["institution"]}"' in page for r in institutions)
    assert all(f'id="round-{r["server_round"]}"' in page for r in rounds_json(unpaid.run))
    assert "Tokens earned" not in page and "none in this run" in page


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
    "config not TOML": (_write("config.toml", b"[run\nname ="), "not valid TOML"),
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
