"""Pilot kits and the one-command proof of concept: kits made from a project file, checked at start, and a whole
pilot (anvil, TLS SuperLink with node authentication, SuperNodes on their own files, claims) on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.cli.supernode.register import try_load_public_key
from sklearn.datasets import load_digits

from fedlearn.chain.artifacts import contracts_dir
from fedlearn.errors import ConfigError, DataError
from fedlearn.pilot import credentials as cred
from fedlearn.pilot import parties
from fedlearn.pilot.kits import Kit, provision
from fedlearn.pilot.project import Project
from tests.tools import missing_tool

ADDRESSES = ["0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
             "0x90F79bf6EB2c4f870365E785982E1f101E93b906"]
COLUMNS = [f"px{i}" for i in range(64)]


def pilot_table(superlink: str = "127.0.0.1:9092") -> dict:
    return {
        "federation": {"name": "cardio", "superlink": superlink, "rounds": 2},
        "schema": {"features": 64, "classes": ",".join(map(str, range(10))), "label_column": "digit",
                   "feature_columns": ",".join(COLUMNS)},
        "chain": {"rpc": "http://127.0.0.1:8545"},
        "institution": [{"name": f"clinic-{c}", "address": a, "examples": 300} for c, a in zip("abc", ADDRESSES)],
    }


def write_pilot(path: Path, table: dict) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(table))
    return path


@pytest.fixture
def kits(tmp_path: Path) -> Path:
    provision(Project.parse(pilot_table(), "test"), tmp_path / "kits")
    return tmp_path / "kits"


def test_provision_gives_each_party_only_its_own_keys_and_flower_reads_them(kits: Path) -> None:
    coordinator = Kit.read(kits / "coordinator")
    names = ["clinic-a", "clinic-b", "clinic-c"]
    institutions = [Kit.read(kits / name) for name in names]
    assert {k.federation_id for k in [coordinator, *institutions]} == {coordinator.federation_id}
    assert coordinator.federation_id == cred.federation_id(cred.read_certificate(kits / "ca" / "ca.crt"))
    # The CA key stays with whoever provisioned; the server key with the coordinator; a node key with its node.
    secrets = {p.relative_to(kits).as_posix() for p in kits.rglob("*.key")}
    assert secrets == {"ca/ca.key", "coordinator/server.key", *(f"{n}/node.key" for n in names)}
    assert all((kits / s).stat().st_mode & 0o077 == 0 for s in secrets)
    ca = cred.read_certificate(kits / "ca" / "ca.crt")
    assert cred.issued_by(cred.read_certificate(kits / "coordinator" / "server.crt"), ca)
    for name, kit in zip(names, institutions):
        # Flower's own loaders: the SuperNode's private key and `flwr supernode register`'s public key.
        key = serialization.load_ssh_private_key((kit.path / "node.key").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
        registered = try_load_public_key(kits / "coordinator" / "nodes" / f"{name}.pub")
        assert registered == try_load_public_key(kit.path / "node.pub")
        assert kit.table["kit"]["address"] == ADDRESSES[names.index(name)]
    distinct = {(kits / n / "node.pub").read_bytes() for n in names}
    assert len(distinct) == 3
    run = (kits / "coordinator" / "run.toml").read_text()
    assert "clinic-a,clinic-b,clinic-c" in run and coordinator.federation_id in run


@pytest.mark.parametrize(("stake", "min_stake"), [(None, 10.0), (25, 25.0), (0, 0.0)])
def test_the_run_config_asks_the_stake_the_project_names(tmp_path: Path, stake: int | None, min_stake: float) -> None:
    from fedlearn.config import RunConfig

    table = pilot_table()
    if stake is not None:
        table["chain"]["stake"] = stake
    provision(Project.parse(table, "test"), tmp_path / "kits")
    config = RunConfig.load(tmp_path / "kits" / "coordinator" / "run.toml")
    assert config.integrity.min_stake == min_stake


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t["institution"][1].update(address=ADDRESSES[1].lower().replace("c", "C", 1)),
     "EIP-55 checksum is wrong"),
    (lambda t: t["institution"][1].update(name="clinic-a"), "share the name clinic-a"),
    (lambda t: t["institution"][2].update(address=ADDRESSES[0]), "share the address"),
    (lambda t: t["federation"].update(superlink="no-port"), "must be HOST:PORT"),
    (lambda t: t["federation"].update(superlink="10.0.0.5:99999"), "must be HOST:PORT (a port from 1 to 65535)"),
    (lambda t: t["institution"][0].update(name="ca"), "'ca' names the kits' certificate authority"),
    (lambda t: t["schema"].update(classes="1"), "at least 2 distinct labels"),
    (lambda t: t["chain"].update(rpc="eth-tester"), "http(s) JSON-RPC URL"),
    (lambda t: t["institution"][0].update(examples=0), "examples must be at least 1"),
    (lambda t: t["chain"].update(stake=-1), "chain.stake must be a number of tokens >= 0"),
    (lambda t: t["chain"].update(stake="10"), "chain.stake must be a number of tokens >= 0"),
    (lambda t: t["chain"].update(stake=True), "chain.stake must be a number of tokens >= 0"),
    (lambda t: t["institution"][0].update(name="../escape"), "names a kit directory"),
    # A misspelt key is refused, not left to its default.
    (lambda t: t["federation"].update(roundz=5), "unknown key federation.roundz"),
    (lambda t: t["schema"].update(feature_colums="a,b"), "unknown key schema.feature_colums"),
    (lambda t: t["institution"][2].update(extra=1), "unknown key institution.extra"),
    (lambda t: t.update(chian={"rpc": "http://127.0.0.1:8545"}), "unknown section [chian]"),
])
def test_a_bad_project_file_writes_nothing(tmp_path: Path, change, message: str) -> None:
    table = pilot_table()
    change(table)
    pilot = write_pilot(tmp_path / "pilot.toml", table)
    result = subprocess.run([sys.executable, "-m", "fedlearn.cli", "pilot", "provision", str(pilot), "--out",
                             str(tmp_path / "kits")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "kits").exists()


def test_provision_refuses_a_directory_that_holds_kits(kits: Path) -> None:
    with pytest.raises(ConfigError, match="not empty"):
        provision(Project.parse(pilot_table(), "test"), kits)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A TLS listener on 127.0.0.1 presenting the coordinator's certificate (as the SuperLink does)."""
    provision(Project.parse(pilot_table(), "test"), tmp_path / "served")
    kit = tmp_path / "served" / "coordinator"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(kit / "server.crt", kit / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield tmp_path / "served", port
    finally:
        listener.close()


def test_a_kit_of_another_federation_is_told_apart_at_start(kits: Path, tls_server: tuple[Path, int]) -> None:
    served, port = tls_server
    own = Kit.read(served / "clinic-a")
    assert parties.check_superlink(own, f"127.0.0.1:{port}")  # the federation's own SuperLink
    other = Kit.read(kits / "clinic-a")
    with pytest.raises(ConfigError, match="is this a kit of another federation"):
        parties.check_superlink(other, f"127.0.0.1:{port}")
    # A kit whose CA was swapped for another federation's no longer reads as that federation's kit.
    shutil.copy(served / "ca" / "ca.crt", kits / "clinic-b" / "ca.crt")
    with pytest.raises(ConfigError, match="mixes files of another federation"):
        Kit.read(kits / "clinic-b")
    # A key pair mixed from two kits.
    shutil.copy(served / "clinic-c" / "node.pub", kits / "clinic-c" / "node.pub")
    with pytest.raises(ConfigError, match="not one key pair"):
        parties.check_node(Kit.read(kits / "clinic-c"), str(kits / "nothing.csv"))


def test_a_node_whose_file_breaks_the_schema_does_not_start(kits: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = load_digits(return_X_y=True)
    good = tmp_path / "ours.csv"
    frame = pd.DataFrame(X[:50] / 16.0, columns=COLUMNS)
    frame["digit"] = y[:50]
    frame.to_csv(good, index=False)
    data, rows = parties.check_node(Kit.read(kits / "clinic-a"), str(good))
    assert (data, rows) == (good, 50)
    # A relative --data-path is read from where the command runs, as the shell would; kit.toml's from the kit.
    monkeypatch.chdir(tmp_path)
    assert parties.check_node(Kit.read(kits / "clinic-a"), "ours.csv") == (good, 50)
    bad = tmp_path / "theirs.csv"
    frame.rename(columns={"digit": "label"}).to_csv(bad, index=False)
    result = subprocess.run([sys.executable, "-m", "fedlearn.cli", "pilot", "node", str(kits / "clinic-a"),
                             "--data-path", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "SuperNode" not in result.stdout
    assert "digit" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="coordinator's kit"):
        parties.check_node(Kit.read(kits / "coordinator"), str(good))
    # More rows than the 300 registered for it: every reply would claim more than the registered count.
    large = tmp_path / "large.csv"
    big = pd.DataFrame(X[:301] / 16.0, columns=COLUMNS)
    big["digit"] = y[:301]
    big.to_csv(large, index=False)
    with pytest.raises(ConfigError, match="has 301 rows, more than the 300 examples registered for it"):
        parties.check_node(Kit.read(kits / "clinic-a"), str(large))


def test_the_coordinator_refuses_a_run_config_without_its_own_files(kits: Path) -> None:
    coordinator = Kit.read(kits / "coordinator")
    parties.check_coordinator(coordinator)
    with pytest.raises(DataError, match="the coordinator's validation file: data file not found"):
        parties.resolved_run_config(coordinator)
    with pytest.raises(ConfigError, match="names another federation"):
        parties.resolved_run_config(coordinator, {"data.federation_id": "00" * 32})


def test_the_coordinator_refuses_a_chain_node_that_does_not_answer_before_its_superlink_starts(kits: Path) -> None:
    from fedlearn.errors import ChainError

    coordinator = Kit.read(kits / "coordinator")
    X, y = load_digits(return_X_y=True)
    frame = pd.DataFrame(X[:100] / 16.0, columns=COLUMNS)
    frame["digit"] = y[:100]
    (coordinator.path / "data").mkdir(exist_ok=True)
    frame.to_csv(coordinator.path / "data" / "validation.csv", index=False)
    frame.to_csv(coordinator.path / "data" / "test.csv", index=False)
    (coordinator.path / "deployment.json").write_text("{}")
    written = coordinator.path / "state" / "run.toml"
    before = written.read_text() if written.exists() else None
    with pytest.raises(ChainError, match="cannot reach the chain node at http://127.0.0.1:9 .* before the coordinator"):
        parties.resolved_run_config(coordinator, {"chain.backend": "http://127.0.0.1:9"})
    # Refused: the run config the coordinator would start from is as it was (no draft left either).
    assert (written.read_text() if written.exists() else None) == before
    assert not list((coordinator.path / "state").glob(".*draft"))


def test_a_node_of_another_federation_is_set_aside_and_unpaid(kits: Path, tmp_path: Path) -> None:
    """The node config carries the kit's federation; a run of another federation sets its replies aside."""
    from flwr.app import Context, RecordDict

    from fedlearn.config import RunConfig
    from fedlearn.federation.coordinator import RunOptions, build_server_app
    from fedlearn.federation.institution import build_client_app
    from fedlearn.federation.localgrid import LocalGrid
    from tests.runs import ledger_of, rounds_json

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    parts = {name: tmp_path / f"{name}.npz" for name in ("clinic-a", "clinic-b", "clinic-c")}
    for path, rows in zip(parts.values(), np.array_split(np.arange(900), 3)):
        np.savez(path, X=X[rows], y=y[rows])
    coordinator = Kit.read(kits / "coordinator")
    (coordinator.path / "data").mkdir()
    for name, rows in (("validation", slice(900, 1300)), ("test", slice(1300, None))):
        frame = pd.DataFrame(X[rows], columns=COLUMNS)
        frame["digit"] = y[rows]
        frame.to_csv(coordinator.path / "data" / f"{name}.csv", index=False)
    table = _run_table(coordinator)
    table["data"].update(node_registry="", validation_path=str(coordinator.path / "data" / "validation.csv"),
                         test_path=str(coordinator.path / "data" / "test.csv"))
    table["chain"] = {"backend": "eth-tester"}  # simulated addresses, on the embedded chain
    table["run"].update(output_dir=str(tmp_path / "runs"))
    table["model"] = {"hidden_units": 32}
    config = RunConfig.load(write_pilot(tmp_path / "run.toml", table))
    nodes = [{"institution": name, "data-path": str(path),
              "federation": coordinator.federation_id if name != "clinic-c" else "ab" * 32}
             for name, path in parts.items()]
    run_dir = tmp_path / "runs" / "pilot"
    build_server_app(config, RunOptions(run_dir=run_dir))(
        LocalGrid(build_client_app(config), 3, node_configs=nodes),
        Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    for record in rounds_json(run_dir)[1:]:
        scores = record["scores"]
        assert "kit is for federation abab" in scores["rejected"]["node-3"]  # set aside, the reason recorded
        assert "clinic-c" not in scores["scores"] and scores["scores"]["node-3"] == 0
    journaled, _, _ = ledger_of(run_dir)
    paid = {e.institution: e.cumulative for e in journaled[-1].entries}
    assert paid.get("clinic-c", 0) == 0 and paid["clinic-a"] > 0


def _run_table(kit: Kit) -> dict:
    import tomllib

    return tomllib.loads((kit.path / "run.toml").read_text())


@pytest.mark.slow
def test_pilot_up_runs_three_institutions_on_their_own_files_and_each_claims_with_its_own_key(
        tmp_path: Path) -> None:
    if not (contracts_dir() / "node_modules" / ".bin" / "anvil").exists():
        missing_tool("anvil from npm", "run scripts/setup-chain.sh")
    result = subprocess.run([sys.executable, "-m", "fedlearn.cli", "pilot", "up", "--institutions", "3",
                             "--rounds", "1", "--dir", str(tmp_path / "poc"), "--json"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    figures = json.loads(result.stdout)  # --json: the figures alone on stdout, the progress on stderr
    assert "SuperNode started from its kit" in result.stderr
    names = ["clinic-01", "clinic-02", "clinic-03"]
    assert sorted(figures["claimed_wei"]) == names
    assert figures["claimed_wei"] == figures["earned_wei"] and all(v > 0 for v in figures["claimed_wei"].values())
    assert len(figures["round_seconds"]) == 1 and all(b > 1000 for b in figures["bytes_up_per_institution"])
    kits = tmp_path / "poc" / "kits"
    registry = (kits / "coordinator" / "state" / "nodes.toml").read_text()
    assert all(f"{name} = " in registry for name in names)
    run_dir = Path(figures["run_dir"])
    rounds = json.loads((run_dir / "rounds.json").read_text())
    for record in rounds[1:]:
        assert sorted(record["scores"]["scores"]) == names and record["scores"]["rejected"] == {}
    # Each institution trained on its own file: the example count its reply gave is its own file's row count.
    sites = tmp_path / "poc" / "sites"
    rows: dict[str, int] = {}
    for name in names:
        (own,) = [p for p in (sites / name).iterdir() if p.name.startswith("data.")]
        rows[name] = len(np.load(own)["y"]) if own.suffix == ".npz" else len(
            pd.read_csv(own) if own.suffix == ".csv" else pd.read_parquet(own))
    reported = [r["scores"]["num_examples"] for r in rounds[1:]]  # of the updates aggregated
    assert all(counts[name] == rows[name] for counts in reported for name in counts)
    assert {name for counts in reported for name in counts} == set(names)
    # Everything it started is stopped: nothing listens on the SuperLink's port, no process runs from its kits.
    port = int(Kit.read(kits / "coordinator").superlink.rsplit(":", 1)[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert processes_mentioning(tmp_path / "poc") == []


@pytest.mark.slow
def test_pilot_up_stopped_by_sigterm_stops_everything_it_started(tmp_path: Path) -> None:
    if not (contracts_dir() / "node_modules" / ".bin" / "anvil").exists():
        missing_tool("anvil from npm", "run scripts/setup-chain.sh")
    work = tmp_path / "poc"
    process = subprocess.Popen([sys.executable, "-m", "fedlearn.cli", "pilot", "up", "--rounds", "50", "--dir",
                                str(work), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    started = 0
    for line in process.stderr:  # once every SuperNode runs (and anvil, the SuperLink and the run with them)
        started += "SuperNode started" in line
        if started == 3:
            break
    assert started == 3 and processes_mentioning(work)
    process.terminate()
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    assert processes_mentioning(work) == []


def test_pilot_commands_refuse_bad_addresses_ports_and_directories(kits: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    cases = [
        (["pilot", "node", str(kits / "clinic-a"), "--superlink", "nonsense"],
         "--superlink 'nonsense' must be HOST:PORT"),
        (["pilot", "node", str(kits / "clinic-a"), "--superlink", "127.0.0.1:abc"], "must be HOST:PORT"),
        (["pilot", "coordinator", str(kits / "coordinator"), "--port", "99999"], "port 99999 is outside 1..65535"),
        (["pilot", "up", "--dir", str(afile)], f"{afile} is a file: pilot up writes a new directory"),
    ]
    for argv, message in cases:
        result = subprocess.run([sys.executable, "-m", "fedlearn.cli", *argv], capture_output=True, text=True,
                                timeout=120)
        assert message in result.stderr and result.returncode != 0, (argv, result.stderr[-1000:])
        assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith(
            ("fedlearn: error:", "fedlearn pilot")), argv


def processes_mentioning(path: Path) -> list[str]:
    """Command lines of the live processes that name ``path`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and str(path) in command:
            found.append(command)
    return found


@pytest.mark.slow
def test_an_unregistered_node_is_refused_with_one_line(kits: Path, tmp_path: Path) -> None:
    from fedlearn.pilot.poc import free_port

    port = free_port()
    provision(Project.parse(pilot_table(f"127.0.0.1:{port}"), "test"), tmp_path / "live")
    coordinator = Kit.read(tmp_path / "live" / "coordinator")
    (coordinator.path / "state").mkdir()
    X, y = load_digits(return_X_y=True)
    ours = tmp_path / "ours.npz"
    np.savez(ours, X=X[:40] / 16.0, y=y[:40])
    with parties.processes(tmp_path / "logs") as group:  # a SuperLink that registered nobody
        link = group.start("superlink", parties.superlink_command(coordinator, "127.0.0.1", port),
                           env=parties.flwr_environment(coordinator, "127.0.0.1", port), cwd=coordinator.path)
        parties.wait_for_port("127.0.0.1", port, link, "the SuperLink")
        result = subprocess.run([sys.executable, "-m", "fedlearn.cli", "pilot", "node",
                                 str(tmp_path / "live" / "clinic-a"), "--data-path", str(ours), "--port",
                                 str(free_port())], capture_output=True, text=True, timeout=120)
    assert result.returncode == parties.PartyFailed.exit_code, result.stderr[-2000:]
    assert "refused clinic-a's node: its key" in result.stderr and len(result.stderr.strip().splitlines()) == 1
