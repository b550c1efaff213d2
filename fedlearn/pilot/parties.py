"""Starting a pilot's parties from their kits: the coordinator's SuperLink and an institution's SuperNode.

Each start checks first what can be checked before any process runs, and says it in one line: a kit whose files
do not belong together, a data file that breaks the federation's schema, a SuperLink that does not present the
federation's certificate (a kit of another federation), a run config that does not load. Then it runs Flower's
own processes (``flower-superlink`` with TLS and ``--enable-supernode-auth``, ``flower-supernode`` with the kit's
key), registers the institutions' keys with ``flwr supernode register`` and records the node id Flower gave
each one (``state/nodes.toml``), which is what binds an institution to its authenticated node.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import tomli_w

from fedlearn.config import RunConfig, read_toml
from fedlearn.data.schema import load_local
from fedlearn.errors import ChainError, ConfigError, FedlearnError
from fedlearn.federation.submit import printed_json
from fedlearn.logs import log
from fedlearn.pilot import credentials as cred
from fedlearn.pilot.kits import NODES_FILE, RUN_FILE, STATE_DIR, Kit

# Run-config keys that name files: relative ones are read from the coordinator's kit directory.
PATH_KEYS = ("run.output_dir", "data.validation_path", "data.test_path", "data.node_registry", "chain.deployment",
             "chain.addresses")


class PartyFailed(FedlearnError):
    """A pilot party's process could not start or stopped early."""

    exit_code = 12


def flower_tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise PartyFailed(f"{name} is not installed beside this Python nor on PATH (pip install flwr)")
    return found


# ---- an institution ---------------------------------------------------------------------------------------


def check_node(kit: Kit, data_path: str | None) -> tuple[Path, int]:
    """The node's data file (absolute) and its row count, after checking the kit and the file."""
    if kit.is_coordinator:
        raise ConfigError(f"{kit.path} is the coordinator's kit; a SuperNode starts from an institution's kit")
    key = cred.read_node_key(kit.path / "node.key")
    if not cred.same_key(key.public_key(), cred.read_node_public_key(kit.path / "node.pub")):
        raise ConfigError(f"{kit.path}/node.key and node.pub are not one key pair")
    # A path typed on the command line is the shell's, from where it was typed; kit.toml's is the kit's.
    path, base = (data_path, Path.cwd()) if data_path else (str(kit.table.get("node", {}).get("data_path", "")),
                                                            kit.path)
    if not path:
        raise ConfigError(f"{kit.party}: no data file: set data_path in {kit.path}/kit.toml or pass --data-path")
    file = (base / path).resolve() if not Path(path).is_absolute() else Path(path)
    rows = len(load_local(file, kit.schema(), kit.party))
    registered = kit.table["kit"].get("examples")  # kits provisioned before it was written lack it
    if isinstance(registered, int) and rows > registered:
        # Its replies would claim more than the coordinator registered: every one set aside, the node unpaid.
        raise ConfigError(f"{kit.party}: {file} has {rows} rows, more than the {registered} examples registered for "
                          f"it at provisioning, and the coordinator sets aside every update that claims more; use "
                          f"at most {registered} rows, or provision the federation again with examples = {rows}")
    return file, rows


def check_superlink(kit: Kit, address: str, timeout: float = 5.0) -> bool:
    """Whether the SuperLink at ``address`` presents a certificate of the kit's federation (False: not reachable
    yet); ConfigError when it presents another's."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(kit.path / "ca.crt"))
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host.strip("[]")):
            return True
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(f"the SuperLink at {address} does not present a certificate of federation "
                          f"{kit.federation} ({exc.verify_message}): is this a kit of another federation?") from None
    except OSError:
        return False


def node_command(kit: Kit, data_file: Path, superlink: str, port: int | None = None) -> list[str]:
    config = f"institution='{kit.party}' data-path='{data_file}' federation='{kit.federation_id}'"
    command = [flower_tool("flower-supernode"), "--root-certificates", str(kit.path / "ca.crt"),
               "--auth-supernode-private-key", str(kit.path / "node.key"), "--superlink", superlink,
               "--node-config", config]
    return command + (["--port", str(port)] if port else [])


def run_node(kit: Kit, command: list[str]) -> int:
    """Run the SuperNode in the foreground, its output passed through; a node the SuperLink refuses (its key
    not registered) ends in one line saying so. The SuperNode and its helpers run in their own process group:
    stopping this command (SIGTERM, SIGINT) stops all of them, and so does a refusal (the helpers would keep the
    output open and retry after the node itself gave up)."""
    refused = False
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=flower_environment(kit.path / STATE_DIR / "flwr-home"), start_new_session=True) as node:

        def stop(signum: int, _frame: object) -> None:
            _stop_group(node)
            raise SystemExit(128 + signum)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            assert node.stdout is not None
            for line in node.stdout:
                sys.stdout.write(line)
                if "Failed to activate SuperNode" in line:
                    refused = True
                    _stop_group(node)
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if refused:
        raise PartyFailed(f"the SuperLink refused {kit.party}'s node: its key ({kit.path / 'node.pub'}) is not "
                          "registered there; the coordinator registers it at start (fedlearn pilot coordinator)")
    if node.returncode != 0:
        raise PartyFailed(f"{kit.party}'s SuperNode exited with status {node.returncode}; its output is above")
    return 0


def _stop_group(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """``process`` and every helper in its process group: asked first, killed after ``grace`` seconds."""
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(process, signal.SIGKILL)  # helpers that outlive the node (Flower's SuperExec) go too
    process.wait()


# ---- the coordinator --------------------------------------------------------------------------------------


def check_coordinator(kit: Kit) -> None:
    if not kit.is_coordinator:
        raise ConfigError(f"{kit.path} is {kit.party}'s kit; the SuperLink starts from the coordinator's kit")
    if not cred.issued_by(cred.read_certificate(kit.path / "server.crt"), cred.read_certificate(kit.path / "ca.crt")):
        raise ConfigError(f"{kit.path}/server.crt was not issued by federation {kit.federation}'s CA")


def institution_keys(kit: Kit) -> dict[str, Path]:
    """Institution → its SuperNode's public key in the coordinator's kit."""
    names = [n for n in str(_run_table(kit)["data"]["institution_names"]).split(",") if n]
    keys = {name: kit.path / "nodes" / f"{name}.pub" for name in names}
    for path in keys.values():
        cred.read_node_public_key(path)
    return keys


def _run_table(kit: Kit) -> dict[str, Any]:
    return read_toml(kit.path / RUN_FILE, "the coordinator's run config")


def resolved_run_config(kit: Kit, overrides: Mapping[str, Any] | None = None) -> Path:
    """The kit's run config with relative paths made absolute and ``overrides`` applied, checked whole (config,
    the coordinator's own data files, the addresses) and written to ``state/run.toml``; returns that path. A config
    refused leaves ``state/run.toml`` as it was: the checks read a draft, put in place only once they all pass."""
    table = _run_table(kit)
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"override {key!r} is not of the form section.key=value")
        table.setdefault(section, {})[name] = value
    for key in PATH_KEYS:
        section, _, name = key.partition(".")
        value = table.get(section, {}).get(name)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            table[section][name] = str((kit.path / value).resolve())
    if table.get("data", {}).get("federation_id") != kit.federation_id:
        raise ConfigError(f"{kit.path}/{RUN_FILE} names another federation than its kit ({kit.federation})")
    state = kit.path / STATE_DIR
    state.mkdir(exist_ok=True)
    path, draft = state / RUN_FILE, state / f".{RUN_FILE}.draft"
    draft.write_text(tomli_w.dumps(table))
    try:
        _check_run_config(kit, RunConfig.load(draft))
    except BaseException:
        draft.unlink(missing_ok=True)
        raise
    draft.replace(path)
    return path


def _check_run_config(kit: Kit, config: RunConfig) -> None:
    """The coordinator's own data files, the addresses, the deployment file and the chain node, before anything
    starts."""
    schema = kit.schema()
    load_local(config.data.validation_path, schema, "the coordinator's validation file")
    load_local(config.data.test_path, schema, "the coordinator's test file")
    from fedlearn.payout.settlement import institution_addresses  # web3: only once the cheap checks passed

    institution_addresses(config, [n for n in config.data.institution_names.split(",") if n])
    if not Path(config.chain.deployment).is_file():
        raise ConfigError(f"chain.deployment {config.chain.deployment} does not exist: deploy the federation's "
                          "contracts first (fedlearn chain deploy --deployment …)")
    if config.chain.enabled and config.chain.backend.startswith(("http://", "https://")):
        from web3 import Web3

        # Before the SuperLink starts: the run settles every round there, and would fail at its first.
        if not Web3(Web3.HTTPProvider(config.chain.backend, request_kwargs={"timeout": 10})).is_connected():
            raise ChainError(f"cannot reach the chain node at {config.chain.backend} (chain.backend): start it, "
                             "or point the run config at one that runs, before the coordinator")


def superlink_command(kit: Kit, bind: str, port: int) -> list[str]:
    state = kit.path / STATE_DIR
    return [flower_tool("flower-superlink"), "--ssl-ca-certfile", str(kit.path / "ca.crt"),
            "--ssl-certfile", str(kit.path / "server.crt"), "--ssl-keyfile", str(kit.path / "server.key"),
            "--enable-supernode-auth", "--disable-runtime-dependency-installation", "--host", bind,
            "--port", str(port), "--database", str(state / "superlink.db")]


def flwr_environment(kit: Kit, host: str, port: int) -> dict[str, str]:
    """An environment in which ``flwr`` reaches this SuperLink over TLS as the connection ``kit.federation``."""
    home = kit.path / STATE_DIR / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(tomli_w.dumps({"superlink": {
        "default": kit.federation,
        kit.federation: {"address": f"{host}:{port}", "root-certificates": str(kit.path / "ca.crt")},
    }}))
    return flower_environment(home)


def flower_environment(home: Path) -> dict[str, str]:
    """Flower's processes with this Python's tools first on PATH (they start ``flower-superexec`` and
    ``flwr-serverapp`` by name), apps installed under ``home``, and no dependency installation at run time."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def register_nodes(kit: Kit, env: Mapping[str, str]) -> dict[str, int]:
    """Register every institution's key not registered yet; returns institution → node id (``state/nodes.toml``)."""
    path = kit.path / STATE_DIR / NODES_FILE
    nodes: dict[str, int] = tomllib.loads(path.read_text()) if path.exists() else {}
    flwr = flower_tool("flwr")
    for name, key in institution_keys(kit).items():
        if name in nodes:
            continue
        done = subprocess.run([flwr, "supernode", "register", str(key), kit.federation, "--name", name,
                               "--format", "json"], env=env, capture_output=True, text=True, timeout=120)
        node = printed_json(done.stdout, "flwr supernode register").get("node-id")
        if done.returncode != 0 or not isinstance(node, int):
            said = " ".join((done.stderr or done.stdout).split())
            raise PartyFailed(f"registering {name}'s key failed: {said[-300:]}")
        nodes[name] = node
        path.write_text(tomli_w.dumps(nodes))  # after each: a key registered is never registered twice
        log.info("registered %s as node %d", name, node)
    return nodes


def serve(kit: Kit, group: Processes, bind: str, port: int, coordinator_key: str, key_env: str) -> dict[str, str]:
    """Start the SuperLink (in ``group``) and register the institutions' keys; returns the environment in which
    ``flwr`` reaches it. The ServerApp runs in the SuperLink's environment: the coordinator's key goes there, under
    the name the run config reads it from (``chain.key_env``)."""
    local = "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind
    env = flwr_environment(kit, local, port)
    link = group.start("superlink", superlink_command(kit, bind, port),
                       env={**env, key_env: coordinator_key}, cwd=kit.path / STATE_DIR)
    wait_for_port(local, port, link, "the SuperLink")
    register_nodes(kit, env)
    return env


# ---- processes --------------------------------------------------------------------------------------------


def wait_for_port(host: str, port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PartyFailed(f"{what} exited with status {process.returncode} at start; see its log")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise PartyFailed(f"{what} does not listen on {host}:{port} after {timeout:.0f} s")


class Processes:
    """Processes started for a pilot, each with its log; all stopped, newest first, when the block ends."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, command: list[str], env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{name}.log", "ab")
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(env or os.environ),
                                   cwd=cwd, start_new_session=True)
        self._started.append((process, out))
        return process

    def stop(self) -> None:
        """Each process with the helpers it started (its own process group): asked first, then killed."""
        for process, _ in reversed(self._started):
            _signal_group(process, signal.SIGTERM)
        for process, out in self._started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(process, signal.SIGKILL)  # whatever of its group is still there
            process.wait()
            out.close()
        self._started.clear()


def _signal_group(process: subprocess.Popen[Any], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:  # already gone, helpers and all
        pass


@contextmanager
def processes(logs: Path) -> Iterator[Processes]:
    """The processes a block starts, all stopped when it ends: normally, on an error, on Ctrl-C, and on SIGTERM
    (whose default would end this process at once and leave them running)."""
    group = Processes(logs)
    main = threading.current_thread() is threading.main_thread()

    def terminated(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminated) if main else None
    try:
        yield group
    finally:
        group.stop()
        if main:
            signal.signal(signal.SIGTERM, previous)
