"""The report of a run directory: plots, HTML page, CSV/JSON exports, and one-line errors on bad input.

Run directories here are synthetic (files written as fedlearn.rundir and fedlearn.ledger write them), so the tests
need neither a simulation nor a chain.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import struct
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fedlearn.errors import FedlearnError
from fedlearn.ledger import LEDGER_FILE, Entry, Ledger, RoundEntry
from fedlearn.report import ReportError, build_report, register
from fedlearn.report.plots import MAX_SERIES, palette
from fedlearn.report.text import fmt_tokens

WEI = 10**18
ROUNDS = 4
BUDGET = 100 * WEI


def names(n: int) -> list[str]:
    return [f"hospital-{i:02d}" for i in range(1, n + 1)]


def scores_for(round_: int, institutions: list[str]) -> dict[str, float]:
    # Uneven, with one negative score per round, so rewards differ and the stack has visible layers.
    return {name: ((i + 1) * (round_ + 2) % 7 - 1) / 100 for i, name in enumerate(institutions)}


def split(budget: int, scores: dict[str, float]) -> dict[str, int]:
    """Budget over positive scores in wei; the remainder of integer division goes to the first name."""
    positive = {n: max(s, 0.0) for n, s in scores.items()}
    total = sum(positive.values())
    if total == 0:
        return {n: 0 for n in scores}
    out = {n: int(budget * v / total) for n, v in positive.items()}
    first = next(n for n, v in positive.items() if v > 0)
    out[first] += budget - sum(out.values())
    return out


def make_run(path: Path, n: int = 5, rounds: int = ROUNDS, ledger: bool = True, rejected: str | None = None,
             finished: bool = True) -> Path:
    """A run directory as `fedlearn run` leaves it; ``rejected`` names an institution rejected in round 2."""
    path.mkdir(parents=True)
    institutions = names(n)
    (path / "config.toml").write_text(
        f'[run]\nname = "demo"\nseed = 7\nrounds = {rounds}\n\n[data]\ndataset = "digits"\ninstitutions = {n}\n'
        'partition = "dirichlet"\nalpha = 0.5\n\n[model]\nname = "mlp"\n\n[strategy]\nname = "fedavg"\n\n'
        '[scoring]\nmethod = "gtg"\nutility = "accuracy"\n'
    )
    records: list[dict[str, Any]] = [{"server_round": 0, "test_accuracy": 0.1, "test_loss": 2.3, "scores": None}]
    cumulative_score = {name: 0.0 for name in institutions}
    per_round: list[dict[str, float]] = []
    for r in range(1, rounds + 1):
        scores = scores_for(r, institutions)
        reasons = {}
        if rejected and r == 2:
            scores[rejected] = 0.0
            reasons[rejected] = "non-finite values in update\n  Traceback line two\x1b[36m coloured\x1b[39m"
        per_round.append(scores)
        for k, v in scores.items():
            cumulative_score[k] += v
        records.append({
            "server_round": r, "test_accuracy": 0.1 + 0.8 * r / rounds, "test_loss": 2.3 - 0.4 * r,
            "scores": {"server_round": r, "scores": scores, "num_examples": {k: 100 for k in institutions},
                       "rejected": reasons, "evaluations": 16, "scoring_seconds": 0.01, "truncated": False,
                       "method": "gtg"},
        })
    (path / "rounds.json").write_text(json.dumps(records))
    if finished:
        positive = sum(max(v, 0.0) for v in cumulative_score.values())
        (path / "summary.json").write_text(json.dumps({
            "run_dir": str(path), "rounds": rounds, "final_test_accuracy": records[-1]["test_accuracy"],
            "final_test_loss": records[-1]["test_loss"],
            "institutions": [{"name": k, "examples": 100 + i, "cumulative_score": v,
                              "share": max(v, 0.0) / positive} for i, (k, v) in enumerate(cumulative_score.items())],
        }))
    if ledger:
        fill_ledger(path / LEDGER_FILE, institutions, per_round, rejected)
    return path


def fill_ledger(path: Path, institutions: list[str], per_round: list[dict[str, float]], rejected: str | None) -> None:
    db = Ledger.open(path, create=True)
    db.set_meta(backend="eth-tester", chain_id="131277322940537",
                distributor="0x" + "ab" * 20, token="0x" + "cd" * 20)
    address = {name: "0x" + f"{i + 1:040x}" for i, name in enumerate(institutions)}
    cumulative = {name: 0 for name in institutions}
    for r, scores in enumerate(per_round, start=1):
        rewards = split(BUDGET, scores)
        cumulative = {k: cumulative[k] + rewards[k] for k in institutions}
        db.journal(RoundEntry(
            round=r, model_hash="0x" + f"{r:064x}", root="0x" + f"{r + 100:064x}", round_total=sum(rewards.values()),
            budget=BUDGET, rollover=0,
            entries=tuple(Entry(k, address[k], scores[k], rewards[k], cumulative[k],
                                "non-finite values in update" if (k == rejected and r == 2) else None)
                          for k in institutions),
        ))
        if r < len(per_round):  # the last round stays pending: the report must show it as such
            db.mark_settled(r, "0x" + f"{r:02x}" * 32, 10 + r, 82_000 + r)
    db.record_claim(institutions[0], address[institutions[0]], cumulative[institutions[0]],
                    cumulative[institutions[0]], "0x" + "ee" * 32)
    db.close()


@pytest.fixture(scope="module")
def chain_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    run = make_run(tmp_path_factory.mktemp("chain") / "run", n=5, rejected="hospital-03")
    return run, build_report(run)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    run = make_run(tmp_path_factory.mktemp("plain") / "run", n=4, ledger=False)
    return run, build_report(run)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def ink(path: Path) -> float:
    """Fraction of pixels that are not (near) white: an empty plot is mostly white."""
    from matplotlib.image import imread

    pixels = imread(path)[..., :3]
    return float((pixels.min(axis=2) < 0.9).mean())


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ---- with a ledger ----------------------------------------------------------------------------------------------


def test_report_files_with_ledger(chain_run: tuple[Path, Path]) -> None:
    run, html = chain_run
    assert html == run / "report" / "index.html"
    out = html.parent
    for name in ("accuracy.png", "rewards.png", "cumulative.png"):
        width, height = png_size(out / name)
        assert 600 <= width <= 2000 and 250 <= height <= 1200, (name, width, height)
        assert ink(out / name) > 0.02, f"{name} looks empty"
    assert not (out / "scores.png").exists()
    for name in ("rounds.csv", "institutions.csv", "report.json"):
        assert (out / name).stat().st_size > 0


def test_rounds_csv_adds_up_to_the_ledger(chain_run: tuple[Path, Path]) -> None:
    run, html = chain_run
    rows = read_csv(html.parent / "rounds.csv")
    assert list(rows[0]) == ["round", "institution", "score", "reward_tokens", "cumulative_tokens", "rejected"]
    db = Ledger.open(run / LEDGER_FILE)
    journaled = db.rounds()
    cumulative = db.cumulative()
    db.close()
    assert len(rows) == ROUNDS * 5
    for record in journaled:
        paid = sum(Decimal(r["reward_tokens"]) for r in rows if int(r["round"]) == record.round)
        assert paid == Decimal(record.round_total) / WEI
    last = {r["institution"]: Decimal(r["cumulative_tokens"]) for r in rows if int(r["round"]) == ROUNDS}
    assert last == {k: Decimal(v) / WEI for k, v in cumulative.items()}
    reasons = [r["rejected"] for r in rows if r["rejected"]]
    assert reasons == ["non-finite values in update"]


def test_institutions_csv_and_json(chain_run: tuple[Path, Path]) -> None:
    run, html = chain_run
    rows = read_csv(html.parent / "institutions.csv")
    assert [r["institution"] for r in rows] == names(5)
    assert sum(Decimal(r["tokens_earned"]) for r in rows) == Decimal(ROUNDS * BUDGET) / WEI
    assert Decimal(rows[0]["tokens_claimed"]) == Decimal(rows[0]["tokens_earned"]) > 0
    assert all(Decimal(r["tokens_claimed"]) == 0 for r in rows[1:])
    assert rows[0]["address"] == "0x" + f"{1:040x}"
    data = json.loads((html.parent / "report.json").read_text())
    assert [r["round"] for r in data["rounds"]] == list(range(ROUNDS + 1))
    assert data["chain"]["distributor"] == "0x" + "ab" * 20
    assert [r["status"] for r in data["rounds"][1:]] == ["settled"] * (ROUNDS - 1) + ["pending"]
    assert {p["file"] for p in data["plots"]} == {"accuracy.png", "rewards.png", "cumulative.png"}
    assert sum(int(i["wei_earned"]) for i in data["institutions"]) == ROUNDS * BUDGET


def test_html_shows_every_institution_and_round(chain_run: tuple[Path, Path]) -> None:
    run, html = chain_run
    page = html.read_text()
    for name in names(5):
        assert f'data-institution="{name}"' in page
    for r in range(ROUNDS + 1):
        assert f'id="round-{r}"' in page
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page and "<script" not in page
    tx = "0x" + "01" * 32
    assert f'title="{tx}"' in page and ">0x010101…0101<" in page  # shortened, the full hash on hover
    assert "pending" in page and "eth-tester" in page and "0x" + "ab" * 20 in page
    # Tokens as tokens, never wei: 4 rounds × 100 tokens paid in all.
    assert "400.00" in page and str(BUDGET) not in page
    assert "\x1b" not in page and "hospital-03 rejected: non-finite values in update" in page


def test_token_format() -> None:
    assert fmt_tokens(0) == "0.00"
    assert fmt_tokens(1234 * WEI + WEI // 2) == "1,234.50"
    assert fmt_tokens(WEI // 8) == "0.125"
    assert fmt_tokens(123456 * 10**12) == "0.1235"
    assert fmt_tokens(82_381_355_510_541_554_397) == "82.38"
    assert fmt_tokens(10**12) == "<0.0001"
    assert fmt_tokens(None) == "—"


# ---- without a ledger -------------------------------------------------------------------------------------------


def test_report_without_ledger(plain_run: tuple[Path, Path]) -> None:
    run, html = plain_run
    out = html.parent
    assert {p.name for p in out.glob("*.png")} == {"accuracy.png", "scores.png"}
    for name in ("accuracy.png", "scores.png"):
        assert ink(out / name) > 0.02
    rows = read_csv(out / "rounds.csv")
    assert len(rows) == ROUNDS * 4 and all(r["reward_tokens"] == "" for r in rows)
    page = html.read_text()
    assert all(f'data-institution="{n}"' in page for n in names(4))
    assert all(f'id="round-{r}"' in page for r in range(ROUNDS + 1))
    assert "Tokens earned" not in page and "none in this run" in page
    assert not (run / LEDGER_FILE).exists()


def test_unfinished_run_and_custom_out(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n=3, finished=False)
    html = build_report(run, tmp_path / "elsewhere")
    assert html == tmp_path / "elsewhere" / "index.html"
    assert "unfinished" in html.read_text()
    assert [r["institution"] for r in read_csv(html.parent / "institutions.csv")] == names(3)


def test_many_institutions_keep_legends_short(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n=25, rounds=2)
    html = build_report(run)
    assert all(f'data-institution="{n}"' in html.read_text() for n in names(25))
    colors = palette(MAX_SERIES)
    assert len(set(colors)) == MAX_SERIES
    from fedlearn.report.plots import _series

    data = {n: [float(i), 1.0] for i, n in enumerate(names(25))}
    series = _series(names(25), data, rank={n: v[0] for n, v in data.items()}, stacked=True)
    assert len(series) == MAX_SERIES and series[-1].label == f"{25 - MAX_SERIES + 1} others"
    assert sum(s.values[1] for s in series) == 25.0  # the others' series sums the rest, nothing is dropped


def test_report_does_not_write_the_ledger(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n=3)
    before = (run / LEDGER_FILE).read_bytes()
    build_report(run)
    assert (run / LEDGER_FILE).read_bytes() == before


# ---- command line -----------------------------------------------------------------------------------------------


def test_subcommand_prints_the_html_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "run", n=2, rounds=1)
    parser = argparse.ArgumentParser(prog="fedlearn")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(run), "--out", str(tmp_path / "out")])
    assert args.handler(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "index.html")


# ---- bad input --------------------------------------------------------------------------------------------------


def _corrupt(name: str, content: bytes) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        (run / name).write_bytes(content)
    return apply


def _sql(run: Path, statement: str) -> None:
    import sqlite3

    db = sqlite3.connect(run / LEDGER_FILE)
    db.execute(statement)
    db.commit()
    db.close()


BAD: dict[str, tuple[Callable[[Path], object], str]] = {
    "missing directory": (shutil.rmtree, "does not exist"),
    "not a run directory": (lambda run: (run / "rounds.json").unlink(), "not a run directory"),
    "rounds not JSON": (_corrupt("rounds.json", b'[{"server_round": 0,'), "not valid JSON"),
    "rounds wrong shape": (_corrupt("rounds.json", b'{"server_round": 0}'), "not a list of rounds"),
    "round without number": (_corrupt("rounds.json", b'[{"test_accuracy": 0.5}]'), "no integer server_round"),
    "summary not JSON": (_corrupt("summary.json", b"\xff\xfe"), "not valid JSON"),
    "summary wei": (_corrupt("summary.json", b'{"institutions": [{"name": "a", "tokens_earned": "1.5"}]}'),
                    "not an amount in wei"),
    "config not TOML": (_corrupt("config.toml", b"[run\nname ="), "not valid TOML"),
    "ledger garbage": (_corrupt(LEDGER_FILE, b"this is not a database" * 50), "not a SQLite file"),
    "ledger empty": (_corrupt(LEDGER_FILE, b""), "not a SQLite file"),
    "ledger truncated": (lambda run: (run / LEDGER_FILE).write_bytes((run / LEDGER_FILE).read_bytes()[:1024]),
                         "is corrupt"),
    "ledger bad amount": (lambda run: _sql(run, "UPDATE entries SET reward = 'lots' WHERE round = 1"), "is corrupt"),
    "ledger foreign": (lambda run: _sql(run, "DROP TABLE claims"), "not a fedlearn ledger"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line(tmp_path: Path, case: str) -> None:
    run = make_run(tmp_path / "run", n=2, rounds=2)
    spoil, message = BAD[case]
    spoil(run)
    with pytest.raises(FedlearnError) as info:
        build_report(run)
    text = str(info.value)
    assert isinstance(info.value, ReportError) and info.value.exit_code == 8
    assert "\n" not in text and message in text, text
    assert not (run / "report").exists(), "a bad run directory must leave no half report"


def test_foreign_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n=2, rounds=1, ledger=False)
    _sql(run, "CREATE TABLE other (x INTEGER)")
    before = (run / LEDGER_FILE).read_bytes()
    with pytest.raises(ReportError, match="not a fedlearn ledger"):
        build_report(run)
    assert (run / LEDGER_FILE).read_bytes() == before


def test_out_dir_is_a_file(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n=2, rounds=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReportError, match="is a file"):
        build_report(run, tmp_path / "file")
