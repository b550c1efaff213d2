"""``fedlearn submit``: start a run on a SuperLink and exit with the ServerApp's outcome.

``flwr run`` returns as soon as the SuperLink accepted the run (0, even when the ServerApp then fails), so a pilot
lead's script cannot tell a finished federation from a crashed one. This starts the run with ``flwr run``, follows
its log, then asks the SuperLink (``flwr ls``) how the run ended: exit 0 for ``finished:completed``, and
``RunFailed`` (exit 11) with the status and the command that shows the log otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedlearn.config import RunConfig
from fedlearn.errors import ConfigError, FedlearnError

COMPLETED = "finished:completed"


class RunFailed(FedlearnError):
    exit_code = 11


def _flwr() -> str:
    beside = Path(sys.executable).parent / "flwr"
    found = str(beside) if beside.exists() else shutil.which("flwr")
    if found is None:
        raise RunFailed("the flwr command is not installed beside this Python nor on PATH")
    return found


def _one_line(text: str, keep: int = 400) -> str:
    """What flwr said, on one line (its messages span several): its end, from a word's start, when it is long."""
    line = " ".join(text.split())
    return line if len(line) <= keep else "… " + line[-keep:].split(" ", 1)[-1]


def printed_json(output: str, what: str) -> dict[str, Any]:
    """The JSON object a `flwr … --format json` command printed (its last line that parses as one)."""
    for line in reversed(output.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    try:
        data = json.loads(output)
    except ValueError:
        raise RunFailed(f"{what} printed no JSON: {' '.join(output.split())[-300:]}") from None
    return data if isinstance(data, dict) else {}


def run_status(flwr: str, run_id: str, superlink: str, env: Mapping[str, str] | None = None) -> str:
    """The SuperLink's status of ``run_id``, e.g. ``running`` or ``finished:failed``."""
    done = subprocess.run([flwr, "ls", superlink, "--run-id", run_id, "--format", "json"], env=env,
                          capture_output=True, text=True, timeout=60)
    runs = printed_json(done.stdout, "flwr ls").get("runs") or []
    if done.returncode != 0 or not runs:
        raise RunFailed(f"cannot read run {run_id}'s status from {superlink}: {_one_line(done.stderr or done.stdout)}")
    return str(runs[0]["status"])


def check_run_config(app: Path, run_config: str) -> RunConfig:
    """The run config Flower would hand the ServerApp: the app's defaults ([tool.flwr.app.config]) with the
    ``--run-config`` overrides, checked as a run checks it (ConfigError); an override of a key the app does not
    have is refused too (Flower would drop it without a word)."""
    import click
    from flwr.common.config import flatten_dict, get_project_config, parse_config_args

    try:
        defaults = flatten_dict(get_project_config(app)["tool"]["flwr"]["app"].get("config", {}))
        overrides = parse_config_args([run_config] if run_config else None)
    except (click.ClickException, ValueError, OSError, KeyError) as exc:
        said = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        raise ConfigError(f"--run-config {run_config!r} for the app in {app}: {_one_line(said)}") from None
    return RunConfig.from_flat({**defaults, **overrides})


def submit(app: Path, superlink: str, run_config: str = "", *, env: Mapping[str, str] | None = None,
           poll_seconds: float = 2.0, follow: bool = True) -> str:
    """Start the run, follow it to its end, and return its run id; raise RunFailed unless it completed."""
    flwr = _flwr()
    command = [flwr, "run", str(app), superlink, "--format", "json"]
    if run_config:
        command += ["--run-config", run_config]
    started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    payload = printed_json(started.stdout, "flwr run")
    run_id = payload.get("run-id")
    if started.returncode != 0 or not payload.get("success") or not run_id:
        said = payload.get("error-message") or started.stderr or started.stdout
        raise RunFailed(f"the SuperLink did not start the run: {_one_line(str(said))}")
    if follow:  # the run's log, as `flwr run --stream` shows it; returns when the run ends
        subprocess.run([flwr, "log", str(run_id), superlink, "--stream"], env=env)
    while not (status := run_status(flwr, str(run_id), superlink, env)).startswith("finished"):
        time.sleep(poll_seconds)
    if status != COMPLETED:
        raise RunFailed(f"run {run_id} ended {status}; its log: `flwr log {run_id} {superlink}`")
    return str(run_id)
