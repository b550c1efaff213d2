"""``fedlearn run``, ``claim``, ``settle``, ``verify`` and ``config``: a run's life from the command line.

Heavy imports (Flower, torch, web3) happen inside the handlers, after the config is read and checked, so a
bad config is reported in well under a second.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedlearn.config import RunConfig
from fedlearn.errors import ConfigError
from fedlearn.payout.rewards import WEI_PER_TOKEN
from fedlearn.records.rundir import runs_inside


def run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        config = _resume_config(args)
        run_dir = args.resume
    else:
        config = RunConfig.load(args.config, args.set)
        run_dir = None
    if args.stop_after is not None and args.stop_after < 1:
        raise ConfigError(f"--stop-after {args.stop_after} must be at least 1")
    if args.stop_after is not None and run_dir is not None:
        done = _rounds_done(run_dir)
        if args.stop_after <= done and args.stop_after < config.run.rounds:
            raise ConfigError(f"--stop-after {args.stop_after}: {run_dir} has completed {done} round(s) already; "
                              f"stop after a later one, or resume without --stop-after")
    if args.stop_after is not None and args.stop_after >= config.run.rounds:
        print(f"fedlearn: note: --stop-after {args.stop_after} is not before the run's last round "
              f"({config.run.rounds}): it runs to its end", file=sys.stderr)
    finished = run_dir is not None and (run_dir / "summary.json").is_file() \
        and _rounds_done(run_dir) >= config.run.rounds
    from fedlearn.federation.simulation import run_federation  # Flower and torch: after the config is checked

    summary = run_federation(config, run_dir=run_dir, quiet=not args.verbose, progress=not args.no_progress,
                             stop_after=args.stop_after)
    if "stopped_after" in summary:
        print(f"\nstopped after round {summary['stopped_after']}; resume with: "
              f"fedlearn run --resume {summary['run_dir']}")
        return 0
    print()
    if finished:
        print(f"the run had finished all {config.run.rounds} rounds: nothing ran (anything left to settle, slash "
              "or claim was done); its table:")
    print(format_table(summary))
    print(f"\nrun directory: {summary['run_dir']}")
    print(f"report: {_report_path(Path(summary['run_dir']))}")
    return 0


def _rounds_done(run_dir: Path) -> int:
    """The rounds a run has completed: checkpointed, or journaled in its ledger."""
    from fedlearn.payout.ledger import Ledger
    from fedlearn.records.checkpoint import completed_rounds

    done = max(completed_rounds(run_dir), default=0)
    if (run_dir / "ledger.sqlite").is_file():
        ledger = Ledger.open(run_dir / "ledger.sqlite")
        done = max(done, ledger.last_round() or 0)
        ledger.close()
    return done


def _resume_config(args: argparse.Namespace) -> RunConfig:
    """The resumed run's own config; a --config/--set that changes anything but run.rounds is refused.

    Only the keys the file and the --set items name are compared: a key they leave to its default keeps the value
    the run was made with, so that a run started before a default changed still resumes with its own file."""
    run_dir: Path = args.resume
    saved_file = run_dir / "config.toml"
    if not saved_file.is_file():
        raise ConfigError(f"--resume {run_dir}: not a run directory (no config.toml){runs_inside(run_dir)}")
    saved = RunConfig.load_saved(saved_file)  # keys added since keep what the run was made with
    if args.config is None and not args.set:
        return saved
    given = RunConfig.load(args.config, args.set) if args.config else RunConfig.load(saved_file, args.set)
    named = RunConfig.keys_given(args.config, args.set)
    made = saved.anchored().flat()
    differ = sorted(k for k, v in given.anchored().flat().items() if k in named and made[k] != v and k != "run.rounds")
    if differ:
        raise ConfigError(f"--resume {run_dir}: that run was made with another config (differs in {', '.join(differ)})")
    if "run.rounds" not in named or given.run.rounds == saved.run.rounds:
        return saved
    # A run ends with its last round (the true-up, the published model's refit): a count at or below the rounds
    # already done would end it without one.
    done = _rounds_done(run_dir)
    if given.run.rounds <= done:
        raise ConfigError(f"--resume {run_dir}: run.rounds = {given.run.rounds}, but the run has completed {done} "
                          f"round(s) of {saved.run.rounds}: it can be resumed to more rounds than {done} only")
    return saved.replace(run={"rounds": given.run.rounds})


def _report_path(run_dir: Path) -> Path:
    from fedlearn.report import build_report

    return build_report(run_dir)


def claim(args: argparse.Namespace) -> int:
    from fedlearn.payout.settlement import RunChain

    run = RunChain.open(args.run_dir)
    names = run.institutions if args.institution is None else [args.institution]
    unknown = [n for n in names if n not in run.paymaster.addresses]
    if unknown:
        raise ConfigError(f"unknown institution {unknown[0]!r} (this run has {', '.join(run.institutions)})")
    paid = run.paymaster.claim(names)
    if any(paid.values()):  # the run's summary and report say what was claimed: keep them current
        _claimed_into_summary(Path(args.run_dir), run.paymaster.token_summary())
    balances = run.paymaster.balances()
    earned = {e.institution: e.cumulative for e in run.paymaster.latest_tree_entries()}
    width = max(len("institution"), *(len(n) for n in names))
    print(f"{'institution':<{width}}  {'paid now':>14}  {'earned':>14}  {'balance':>14}")
    for name in names:
        print(f"{name:<{width}}  {_tokens(paid[name]):>14}  {_tokens(earned.get(name, 0)):>14}  "
              f"{_tokens(balances[name]):>14}")
    return 0


def _claimed_into_summary(run_dir: Path, tokens: dict[str, dict[str, str]]) -> None:
    """A finished run's summary.json and report, with what the chain now records as claimed."""
    from fedlearn.records.rundir import SUMMARY_FILE, write_json

    path = run_dir / SUMMARY_FILE
    if not path.is_file():  # an unfinished run: its summary, written at its end, reads the chain then
        return
    summary = json.loads(path.read_text())
    for row in summary.get("institutions", []):
        if row.get("name") in tokens:
            row["tokens_claimed"] = tokens[row["name"]]["tokens_claimed"]
    write_json(path, summary)
    if (run_dir / "report").is_dir():
        _report_path(run_dir)


def settle(args: argparse.Namespace) -> int:
    from fedlearn.payout.settlement import RunChain

    run = RunChain.open(args.run_dir)
    before = len(run.paymaster.ledger.pending())
    run.paymaster.drain()
    journaled = run.paymaster.ledger.rounds()
    print(f"{before} queued round(s) settled; {len(journaled)} round(s) on chain")
    found = run.paymaster.record_found_slashes(run.paymaster.run_evidence(Path(args.run_dir)))
    if found:
        print(f"{found} slash(es) on chain recorded in the ledger (their receipts had been lost)")
    waited = run.paymaster.slash_run_offences(Path(args.run_dir))
    if waited:
        print(f"{len(waited)} slash(es) the run flagged and never sent, sent now: "
              + ", ".join(f"{name} (round {r})" for r, name in waited))
    if journaled and journaled[-1].final and not (Path(args.run_dir) / "summary.json").exists() \
            and run.paymaster.resumable:
        # The run stopped at its end waiting for the node: its summary, model and report are still to write.
        print(f"the run's summary, model and report are not written yet: `fedlearn run --resume {args.run_dir}` "
              "writes them")
    return 0


def submit(args: argparse.Namespace) -> int:
    from fedlearn.federation.submit import check_run_config
    from fedlearn.federation.submit import submit as submit_run

    check_run_config(args.app, args.run_config)  # a bad value is one line here, not a traceback in the run's log
    run_id = submit_run(args.app, args.superlink, args.run_config, follow=not args.no_follow)
    print(f"run {run_id} completed")
    return 0


def verify(args: argparse.Namespace) -> int:
    from fedlearn.payout.verify import verify_run

    problems, checked = verify_run(args.run_dir)
    for problem in problems:
        print(f"MISMATCH {problem}")
    if problems:
        print(f"fedlearn: verify: {len(problems)} mismatch(es) in {args.run_dir}", file=sys.stderr)
        return 10
    print(f"verified {checked} round(s): ledger, model weights and chain agree")
    return 0


def _tokens(wei: int | str) -> str:
    return f"{int(wei) / WEI_PER_TOKEN:,.4f}"


def format_table(summary: dict[str, Any]) -> str:
    """Per institution: examples, contribution (scores over the significant rounds) and its share, the token
    share beside it, tokens earned and claimed. The two shares are what a reader compares."""
    rows = summary["institutions"]
    tokens = all("tokens_earned" in r for r in rows)
    slashed = tokens and any(int(r.get("tokens_slashed", 0)) for r in rows)
    width = max([len("institution")] + [len(r["name"]) for r in rows])
    header = f"{'institution':<{width}}  {'examples':>8}  {'contribution':>12}  {'contribution share':>18}"
    if tokens:
        header += f"  {'token share':>11}  {'tokens earned':>14}  {'tokens claimed':>14}"
    if slashed:
        header += f"  {'stake slashed':>14}"
    lines = [f"final test accuracy {summary['final_test_accuracy']:.4f} after {summary['rounds']} rounds", header]
    for r in rows:
        line = (f"{r['name']:<{width}}  {r['examples']:>8}  {r['contribution']:>12.4f}  "
                f"{r['contribution_share']:>18.2%}")
        if tokens:
            line += (f"  {r['token_share']:>11.2%}  {_tokens(r['tokens_earned']):>14}  "
                     f"{_tokens(r['tokens_claimed']):>14}")
        if slashed:
            line += f"  {_tokens(r.get('tokens_slashed', 0)):>14}"
        lines.append(line)
    return "\n".join(lines)


def show_config(args: argparse.Namespace) -> int:
    print(RunConfig.load(args.config, args.set).to_toml())
    return 0
