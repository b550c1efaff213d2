"""Real run directories for tests: small federations run by the project itself, and read-only views of what they
left behind (the run's files, its ledger, its embedded chain).

The runs use the in-process engine (the real ServerApp and ClientApp, one client at a time, no Ray) and, unless a
test turns it off, pay on the embedded eth-tester chain kept in the run directory: a few seconds each.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedlearn.chain import Deployment, connect
from fedlearn.chain.deployment import distributor_contract, token_contract
from fedlearn.chain.session import ETH_TESTER
from fedlearn.config import RunConfig
from fedlearn.payout.ledger import LEDGER_FILE, Ledger, RoundEntry
from fedlearn.payout.settlement import CHAIN_DIR, DEPLOYMENT_FILE, STATE_FILE
from fedlearn.records.rundir import ROUNDS_FILE, SUMMARY_FILE, RoundResult

# Small and quick: the digits data, a narrow MLP, the in-process engine.
SMALL = ("simulation.engine='local'", "model.hidden_units=16")


def real_run(run_dir: Path, *overrides: str,
             observer: Callable[[RoundResult, int], None] | None = None) -> dict[str, Any]:
    """Run a federation into ``run_dir`` (``SMALL`` settings, then ``overrides``); returns the run's summary."""
    from fedlearn.federation.simulation import run_federation

    config = RunConfig.load(overrides=[*SMALL, f"run.output_dir='{run_dir.parent}'", *overrides])
    return run_federation(config, run_dir=run_dir, progress=False, observer=observer)


def rounds_json(run_dir: Path) -> list[dict[str, Any]]:
    return json.loads((run_dir / ROUNDS_FILE).read_text())


def summary_json(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / SUMMARY_FILE).read_text())


def ledger_of(run_dir: Path) -> tuple[list[RoundEntry], dict[str, int], dict[str, str]]:
    """The run's ledger: (journaled rounds, wei claimed per institution, meta)."""
    ledger = Ledger.open(run_dir / LEDGER_FILE)
    try:
        return ledger.rounds(), ledger.claimed(), ledger.meta()
    finally:
        ledger.close()


def returns_of(run_dir: Path) -> list[tuple[int, str, int, str | None]]:
    """The run's returns of unspent budget to the funder, as its ledger recorded them."""
    ledger = Ledger.open(run_dir / LEDGER_FILE)
    try:
        return ledger.returns()
    finally:
        ledger.close()


def deployment_json(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / CHAIN_DIR / DEPLOYMENT_FILE).read_text())


def on_chain(run_dir: Path, addresses: list[str]) -> dict[str, tuple[int, int]]:
    """address → (wei the distributor records as claimed, the address's token balance), read from the run's
    embedded chain. Reads the saved chain state only; writes nothing back."""
    session = connect(ETH_TESTER, state_file=run_dir / CHAIN_DIR / STATE_FILE)
    deployment = Deployment.load(run_dir / CHAIN_DIR / DEPLOYMENT_FILE, chain_id=session.chain_id)
    dist, token = distributor_contract(session, deployment), token_contract(session, deployment)
    return {a: (int(dist.functions.claimed(a).call()), int(token.functions.balanceOf(a).call())) for a in addresses}


def fingerprint(directory: Path, skip: str | None = None) -> dict[str, str]:
    """Relative path → SHA-256 of every file under ``directory`` (but those under its subdirectory ``skip``)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and (skip is None or p.relative_to(directory).parts[0] != skip)
    }
