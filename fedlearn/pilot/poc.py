"""``fedlearn pilot up``: a whole pilot on this machine, as NVIDIA FLARE's POC mode runs one.

On 127.0.0.1 it starts anvil, provisions kits for the coordinator and N institutions, gives each institution its
own data file (a Dirichlet split of the bundled digits; the coordinator keeps validation and test rows), deploys
the federation's governed contracts with the coordinator's key (the reward pool and each institution's stake
allowance minted at deployment), has each institution stake with its own key, starts the TLS SuperLink with node
authentication and registers the institutions' keys, starts one authenticated SuperNode per institution on its
own file, runs the federation with ``fedlearn submit`` (paying on anvil every round), then lets every institution
check the published tree and claim with its own key. Everything it started is stopped at the end, whatever happened.

Wallets are anvil's deterministic accounts (index 0: the coordinator; 1..N: the institutions): a proof of
concept, never a pilot's keys.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedlearn.data import federate, load_dataset
from fedlearn.errors import ConfigError
from fedlearn.pilot import parties
from fedlearn.pilot.kits import NODES_FILE, STATE_DIR, Kit, provision
from fedlearn.pilot.project import Project

ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
FORMATS = (".csv", ".parquet", ".npz")
COLUMNS = [f"px{i}" for i in range(64)]
LABEL = "digit"


@dataclass
class PocResult:
    run_dir: Path
    wall_seconds: float
    run_seconds: float
    round_seconds: list[float]
    bytes_down: list[int]
    bytes_up: list[int]
    earned: dict[str, int]
    claimed: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def anvil_keys(count: int) -> list[str]:
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return [Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.hex()
            for i in range(count)]


def anvil_binary() -> Path:
    from fedlearn.chain.artifacts import contracts_dir

    path = contracts_dir() / "node_modules" / ".bin" / "anvil"
    if not path.exists():
        raise ConfigError(f"anvil is not installed at {path}: run scripts/setup-chain.sh")
    return path


def app_dir() -> Path:
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise ConfigError("fedlearn pilot up runs from a source checkout (the Flower app is its pyproject.toml)")
    return root


def _write(path: Path, X: np.ndarray, y: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        np.savez(path, X=X, y=y)
        return
    frame = pd.DataFrame(X, columns=COLUMNS)
    frame[LABEL] = y
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path)


def _fed(command: list[str], env: dict[str, str], what: str) -> str:
    done = subprocess.run([sys.executable, "-m", "fedlearn.cli", *command], env=env, capture_output=True,
                          text=True, timeout=300)
    if done.returncode != 0:
        raise parties.PartyFailed(f"{what} failed (exit {done.returncode}): "
                                  f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return done.stdout


def up(workdir: Path, institutions: int = 3, rounds: int = 3, seed: int = 0,
       say: Callable[[str], None] = print) -> PocResult:
    if institutions < 2:
        raise ConfigError(f"a pilot needs at least 2 institutions, got {institutions}")
    if rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"{workdir} is a file: pilot up writes a new directory")
    if workdir.exists() and any(workdir.iterdir()):
        raise ConfigError(f"{workdir} is not empty: pilot up writes a new directory")
    anvil_path = anvil_binary()  # before anything is written: a refused start leaves no directory behind
    began = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the work directory {workdir}: {exc.strerror}") from None
    split = federate(load_dataset("digits"), num_institutions=institutions, scheme="dirichlet", seed=seed,
                     alpha=1.0, validation_fraction=0.15, test_fraction=0.15, name_prefix="clinic")
    keys = anvil_keys(institutions + 1)
    from eth_account import Account

    from fedlearn.chain.deployment import DEFAULT_REWARD_PER_ROUND

    link_port, chain_port = free_port(), free_port()
    rpc = f"http://127.0.0.1:{chain_port}"
    project = Project.parse({
        "federation": {"name": "poc", "superlink": f"127.0.0.1:{link_port}", "rounds": rounds},
        "schema": {"features": 64, "classes": ",".join(map(str, range(10))), "label_column": LABEL,
                   "feature_columns": ",".join(COLUMNS)},
        "chain": {"rpc": rpc, "deployment": "deployment.json"},
        "institution": [{"name": name, "address": Account.from_key(key).address, "examples": len(part)}
                        for name, part, key in zip(split.institutions, split.partitions, keys[1:])],
    }, "pilot up")
    kits = provision(project, workdir / "kits")
    coordinator = Kit.read(kits[0])
    # Features as the federation agreed to store them: standardised with the training pool's statistics.
    _write(coordinator.path / "data" / "validation.csv", split.validation.X, split.validation.y)
    _write(coordinator.path / "data" / "test.csv", split.test.X, split.test.y)
    files: dict[str, Path] = {}
    for n, (name, part) in enumerate(zip(split.institutions, split.partitions)):
        # Each institution's own file, on "its own machine": nobody else is handed its path.
        files[name] = workdir / "sites" / name / f"data{FORMATS[n % len(FORMATS)]}"
        _write(files[name], part.X, part.y)
    say(f"kits for the coordinator and {institutions} institutions in {workdir / 'kits'}")

    env = {**os.environ, "FEDLEARN_PRIVATE_KEY": keys[0]}
    with parties.processes(workdir / "logs") as group:
        started = time.perf_counter()
        anvil = group.start("anvil", [str(anvil_path), "--host", "127.0.0.1", "--port", str(chain_port),
                                      "--accounts", str(institutions + 1)])
        parties.wait_for_port("127.0.0.1", chain_port, anvil, "anvil")
        deployment = coordinator.path / "deployment.json"
        node = ["--rpc", rpc, "--deployment", str(deployment)]
        # A federation's deployment, as a pilot's is made: the reward pool the runs pay from (the kits' chain.funding
        # = "none") and each institution's stake allocation minted at deployment; the timelock holds every admin
        # and minter role. Roots and slashes take effect at once here (no challenge window): a proof of concept
        # claims at the end.
        stake = round(project.stake * 10**18)
        stakers = list(zip(project.institutions, keys[1:])) if stake else []
        allocations = [a for inst, _ in stakers for a in ("--allocate", f"{inst.address}={stake}")]
        _fed(["chain", "deploy", "--governed", *node, "--root-delay", "0", "--slash-delay", "0", "--reward-pool",
              str(rounds * DEFAULT_REWARD_PER_ROUND), *allocations], env, "deploying the contracts")
        for inst, key in stakers:  # each stakes with its own key before the run (the coordinator checks it)
            _fed(["chain", "stake", *node, "--amount", str(stake), "--key-env", "INSTITUTION_KEY"],
                 {**os.environ, "INSTITUTION_KEY": key}, f"{inst.name}'s stake")
        timings["chain_seconds"] = time.perf_counter() - started
        say(f"anvil on {rpc}; contracts in {deployment}")

        # The parties start as a pilot's do: each from its own kit's start script.
        started = time.perf_counter()
        settings = {"strategy.min_nodes": institutions, "strategy.node_wait": 120.0, "run.seed": seed}
        path = parties.flower_environment(workdir / "flwr-home")["PATH"]
        lead = group.start("coordinator", ["sh", str(coordinator.path / "start.sh"), "--bind", "127.0.0.1",
                                           *[a for k, v in settings.items() for a in ("--set", f"{k}={v}")]],
                           env={**env, "PATH": path})
        _wait_for_registration(coordinator, split.institutions, lead, workdir / "logs" / "coordinator.log")
        for name in split.institutions:
            start = workdir / "kits" / name / "start.sh"
            group.start(f"supernode-{name}", ["sh", str(start), "--data-path", str(files[name]), "--port",
                                              str(free_port())],
                        env=parties.flower_environment(files[name].parent / "flwr-home"))
            say(f"{name}: SuperNode started from its kit on its own {files[name].suffix[1:]} file")
        timings["start_seconds"] = time.perf_counter() - started

        started = time.perf_counter()
        outcome = lead.wait()
        run_seconds = time.perf_counter() - started
        if outcome != 0:
            raise parties.PartyFailed(f"the coordinator exited with status {outcome}: "
                                      f"{_last_line(workdir / 'logs' / 'coordinator.log')} (logs in "
                                      f"{workdir / 'logs'})")
        say(f"the federation ran in {run_seconds:.1f} s; the coordinator exited 0")

        run_dir = _run_dir(coordinator)
        records = json.loads((run_dir / "rounds.json").read_text())[1:]
        summary = json.loads((run_dir / "summary.json").read_text())
        earned = {i["name"]: int(i["tokens_earned"]) for i in summary["institutions"]}
        tree = _claimable_tree(deployment)
        claimed: dict[str, int] = {}
        for name, key in zip(split.institutions, keys[1:]):
            # Each institution on its own: the published tree, the chain and its key; no run directory.
            address = Account.from_key(key).address
            chain_args = ["--rpc", rpc, "--deployment", str(deployment), "--tree", str(tree)]
            _fed(["chain", "verify", *chain_args, "--account", address], dict(os.environ), f"{name}'s verify")
            if not earned.get(name):  # nothing in the tree to claim: a claim would only revert
                claimed[name] = _balance(rpc, deployment, key)
                say(f"{name}: verified the tree; it earned nothing, so it has nothing to claim")
                continue
            _fed(["chain", "claim", *chain_args, "--key-env", "INSTITUTION_KEY"],
                 {**os.environ, "INSTITUTION_KEY": key}, f"{name}'s claim")
            claimed[name] = _balance(rpc, deployment, key)
            say(f"{name}: verified the tree and claimed {claimed[name] / 1e18:.4f} tokens with its own key")
    return PocResult(run_dir, time.perf_counter() - began, run_seconds, [float(r["seconds"]) for r in records],
                     [int(r["bytes_down"]) for r in records], [int(r["bytes_up"]) for r in records], earned,
                     claimed, timings)


def _wait_for_registration(coordinator: Kit, names: list[str], lead: subprocess.Popen[bytes], log: Path,
                           timeout: float = 180) -> None:
    """Until the coordinator has registered every institution's key (a node started before is refused)."""
    registry = coordinator.path / STATE_DIR / NODES_FILE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lead.poll() is not None:
            raise parties.PartyFailed(f"the coordinator exited with status {lead.returncode} at start: "
                                      f"{_last_line(log)}")
        if registry.exists() and set(names) <= set(tomllib.loads(registry.read_text())):
            return
        time.sleep(0.3)
    raise parties.PartyFailed(f"the coordinator registered no nodes within {timeout:.0f} s; see {log}")


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def _run_dir(coordinator: Kit) -> Path:
    runs = sorted((coordinator.path / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise parties.PartyFailed(f"the run wrote nothing under {coordinator.path / 'runs'}")
    return runs[-1]


def _claimable_tree(deployment: Path) -> Path:
    """The tree of the last settled round, from what the coordinator published beside the deployment."""
    trees = deployment.parent / "trees"
    records = sorted(trees.glob("record-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    if not records:
        raise parties.PartyFailed(f"no round was published under {trees}")
    root = json.loads(records[-1].read_text())["root"]
    return trees / f"{root}.json"


def _balance(rpc: str, deployment: Path, key: str) -> int:
    """The token balance of ``key``'s account."""
    from eth_account import Account

    from fedlearn.chain.deployment import Deployment, token_contract
    from fedlearn.chain.session import connect

    session = connect(rpc, account=Account.from_key(key))
    return int(token_contract(session, Deployment.load(deployment)).functions.balanceOf(session.address).call())


def report(result: PocResult) -> dict[str, Any]:
    """The POC's figures as JSON-ready numbers."""
    return {
        "wall_seconds": result.wall_seconds, "run_seconds": result.run_seconds, **result.timings,
        "round_seconds": result.round_seconds, "bytes_down_per_institution": result.bytes_down,
        "bytes_up_per_institution": result.bytes_up, "earned_wei": result.earned, "claimed_wei": result.claimed,
        "run_dir": str(result.run_dir),
    }
