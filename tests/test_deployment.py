"""Deployment smoke: a SuperLink and two SuperNodes on 127.0.0.1, the app run with ``flwr run``."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tools import missing_tool

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A SuperLink and two SuperNodes; yields (federation name, environment for flwr)."""
    if shutil.which("flower-superlink", path=str(BIN)) is None:
        missing_tool("flower-superlink beside this Python")
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    (tmp_path / "flwr-home").mkdir()
    link = free_port()
    (tmp_path / "flwr-home" / "config.toml").write_text(
        f'[superlink]\ndefault = "smoke"\n\n[superlink.smoke]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    logs = [open(tmp_path / name, "w") for name in ("superlink.log", "supernode-0.log", "supernode-1.log")]
    procs = [subprocess.Popen(
        [str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
         "--host", "127.0.0.1", "--port", str(link), "--database", ":flwr-in-memory:"],
        cwd=tmp_path, env=env, stdout=logs[0], stderr=subprocess.STDOUT,
    )]
    try:
        wait_for_port(link)
        for i in range(2):
            procs.append(subprocess.Popen(
                [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                 "--host", "127.0.0.1", "--port", str(free_port()),
                 "--node-config", f"partition-id={i} num-partitions=2"],
                cwd=tmp_path, env=env, stdout=logs[i + 1], stderr=subprocess.STDOUT,
            ))
        yield "smoke", env
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()


def test_flwr_run_against_a_superlink_scores_both_institutions(
    tmp_path: Path, federation: tuple[str, dict[str, str]]
) -> None:
    name, env = federation
    out = tmp_path / "runs"
    # `fedlearn submit` starts it with `flwr run`, follows its log and reads how it ended from the SuperLink.
    result = subprocess.run(
        [sys.executable, "-m", "fedlearn.cli", "submit", name, "--app", str(ROOT), "--run-config",
         f"data.institutions=2 run.rounds=2 scoring.method='loo' run.output_dir='{out}'"],
        env=env, capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert result.stdout.strip().endswith("completed")
    (run_dir,) = out.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    rounds = json.loads((run_dir / "rounds.json").read_text())
    assert summary["rounds"] == 2
    assert [i["name"] for i in summary["institutions"]] == ["hospital-01", "hospital-02"]
    for record in rounds[1:]:
        assert sorted(record["scores"]["scores"]) == ["hospital-01", "hospital-02"]
        assert record["scores"]["rejected"] == {}
    assert rounds[-1]["test_accuracy"] > rounds[0]["test_accuracy"]
    # The ServerApp writes the report itself: under `flwr run` no command of this project is there to.
    assert (run_dir / "report" / "index.html").is_file() and (run_dir / "report" / "institutions.csv").is_file()


def test_submit_exits_with_the_serverapps_outcome(tmp_path: Path, federation: tuple[str, dict[str, str]]) -> None:
    """`flwr run` exits 0 whatever the ServerApp does; `fedlearn submit` exits 11 when it fails."""
    name, env = federation
    bad = subprocess.run(
        [sys.executable, "-m", "fedlearn.cli", "submit", name, "--app", str(ROOT), "--no-follow",
         # three institutions on a federation of two nodes: the ServerApp waits 5 s for a third, then fails
         "--run-config", "data.institutions=3 run.rounds=1 strategy.node_wait=5.0"],
        env=env, capture_output=True, text=True, timeout=400,
    )
    assert bad.returncode == 11, (bad.stdout + bad.stderr)[-3000:]
    assert "ended finished:failed; its log: `flwr log" in bad.stderr
    # The run's log says why in fedlearn's one line; Flower's traceback of it stops at the ServerApp's entry, not
    # in the frames that led to the refusal.
    run_id = re.search(r"run (\d+) ended", bad.stderr)
    assert run_id is not None
    shown = subprocess.run([str(Path(sys.executable).parent / "flwr"), "log", run_id.group(1), name, "--show"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert "ServerAppFailed: fedlearn: error: only 2 of the 3 nodes a round needs" in shown.stdout, shown.stdout[-3000:]
    assert "wait_for_quorum" not in shown.stdout
