"""The command line: bad input ends in one line on stderr, a non-zero exit and no run directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def fedlearn(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedlearn.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--set", "data.dataset=mnist"], 3, "mnist"),
        (["--set", "model.name=transformer"], 2, "unknown model.name 'transformer'"),
        (["--set", "strategy.name=fedfoo"], 2, "unknown strategy.name 'fedfoo'"),
        (["--set", "data.alpha=0"], 2, "data.alpha = 0.0 must be > 0"),
        (["--set", "data.institutions=2000"], 3, "2000"),
        (["--set", "run.colour=blue"], 2, "unknown config key 'run.colour'"),
        (["--set", "data.dataset=/nonexistent/data.csv"], 3, "/nonexistent/data.csv"),
        (["--set", "train.device=cuda:7"], 2, "train.device"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path: Path, args: list[str], code: int, fragment: str) -> None:
    if args[-1] == "train.device=cuda:7":
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    result = fedlearn("run", "--set", f"run.output_dir='{tmp_path / 'runs'}'", *args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedlearn: error: ") and fragment in lines[0]
    assert not (tmp_path / "runs").exists()


def test_corrupt_data_file_and_missing_label_column(tmp_path: Path) -> None:
    corrupt = tmp_path / "data.npz"
    corrupt.write_bytes(b"not a zip archive")
    result = fedlearn("run", "--set", f"data.dataset='{corrupt}'", cwd=tmp_path)
    assert result.returncode == 3 and "data.npz" in result.stderr
    table = tmp_path / "table.csv"
    table.write_text("a,b,outcome\n" + "\n".join(f"{i},{i % 3},{i % 2}" for i in range(40)))
    result = fedlearn("run", "--set", f"data.dataset='{table}'", "--set", "data.institutions=2", cwd=tmp_path)
    assert result.returncode == 3 and "'label'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_config_command_prints_the_effective_config(tmp_path: Path) -> None:
    result = fedlearn("config", "--set", "run.rounds=9", cwd=tmp_path)
    assert result.returncode == 0 and "rounds = 9" in result.stdout
    np.testing.assert_equal(result.stderr, "")


def test_the_config_file_may_be_given_as_the_one_positional_argument(tmp_path: Path) -> None:
    # Prepare: a config file that changes one key from the defaults.
    config = tmp_path / "mine.toml"
    config.write_text("[run]\nrounds = 7\n")
    # Execute
    positional = fedlearn("config", str(config), cwd=tmp_path)
    named = fedlearn("config", "--config", str(config), cwd=tmp_path)
    both = fedlearn("run", str(config), "--config", str(tmp_path / "other.toml"), cwd=tmp_path)
    # Assert: the same effective config either way; two different files are refused in one line, before a run.
    assert positional.returncode == 0 and "rounds = 7" in positional.stdout
    assert positional.stdout == named.stdout
    assert both.returncode == 2 and both.stderr.strip().splitlines() == [
        f"fedlearn: error: two config files given: {config} and --config {tmp_path / 'other.toml'}; give one"]
    assert not (tmp_path / "runs").exists()


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    # `fedlearn config | head -1`: the pipe is closed before the command writes; no traceback, SIGPIPE's status.
    # Buffered, as a shell runs it: the write fails only when the buffer is flushed.
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, "-m", "fedlearn.cli", "config"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""


@pytest.mark.parametrize(("run_config", "message"), [
    ("data.institutions=2 run.rounds=0", "run.rounds = 0 must be at least 1"),
    ("run.roundz=2", "unknown config key 'run.roundz' (did you mean run.rounds?)"),
    ("run.rounds==", "--run-config 'run.rounds==' for the app in"),
])
def test_submit_checks_the_run_config_before_flower_sees_it(tmp_path: Path, run_config: str, message: str) -> None:
    import os

    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home")}  # no connection: nothing could be submitted
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "fedlearn.cli", "submit", "nosuch", "--app", str(root),
                             "--run-config", run_config], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


def test_submitting_to_a_superlink_flower_does_not_know_is_one_line(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home")}  # a fresh Flower config: no such connection
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "fedlearn.cli", "submit", "nosuch", "--app", str(root),
                             "--run-config", "data.institutions=2"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 11 and len(lines) == 1, result.stderr
    assert lines[0].startswith("fedlearn: error: the SuperLink did not start the run: ") and "nosuch" in lines[0]


@pytest.mark.parametrize("command", [["verify"], ["claim"], ["report"], ["run", "--resume"]])
def test_the_folder_of_run_directories_is_refused_naming_the_newest_inside(tmp_path: Path, command: list[str]) -> None:
    # Prepare: runs/ holding two run directories (each with its config.toml), the second written later.
    import os

    runs = tmp_path / "runs"
    for i, name in enumerate(("demo-1", "demo-2")):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.toml").write_text("[run]\nrounds = 1\n")
        os.utime(runs / name / "config.toml", (1_000_000 + i, 1_000_000 + i))
        # The older run was written to since (a resume): its directory's time is the later one.
        os.utime(runs / name, (2_000_000 - i, 2_000_000 - i))
    # Execute
    result = fedlearn(*command, "runs", cwd=tmp_path)
    # Assert: one line, non-zero, pointing at the newest run directory; nothing of the kind for a folder holding none.
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1
    assert lines[0].endswith("; it holds 2 run directories, the newest runs/demo-2")
    (tmp_path / "other").mkdir()
    assert "it holds" not in fedlearn(*command, "other", cwd=tmp_path).stderr
