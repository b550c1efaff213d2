"""A 3-institution × 2-round federated run in Flower's simulation engine, through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_three_institutions_two_rounds(tmp_path: Path) -> None:
    # Prepare
    run_dir_parent = tmp_path / "runs"
    args = [
        "run.rounds=2", "data.institutions=3", "scoring.method='shapley'", "data.partition='iid'",
        f"run.output_dir='{run_dir_parent}'", "run.name='sim'", "train.learning_rate=0.1",
    ]
    # Execute
    result = subprocess.run(
        [sys.executable, "-m", "fedlearn.cli", "run", *[a for pair in (("--set", x) for x in args) for a in pair]],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    # Assert
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dir_parent.iterdir()
    rounds = json.loads((run_dir / "rounds.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["server_round"] for r in rounds] == [0, 1, 2]
    assert rounds[2]["test_accuracy"] > rounds[0]["test_accuracy"] + 0.2
    for record in rounds[1:]:
        scores = record["scores"]["scores"]
        assert sorted(scores) == ["hospital-01", "hospital-02", "hospital-03"]
        assert record["scores"]["evaluations"] == 8 and record["scores"]["rejected"] == {}
    names = [i["name"] for i in summary["institutions"]]
    assert names == ["hospital-01", "hospital-02", "hospital-03"]
    assert sum(i["contribution_share"] for i in summary["institutions"]) == pytest.approx(1.0)
    assert sum(i["token_share"] for i in summary["institutions"]) == pytest.approx(1.0)
    weights = np.load(run_dir / "model.npz")
    assert set(weights.files) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert "round 2/2" in result.stdout and "hospital-03" in result.stdout
    assert f"run directory: {run_dir}" in result.stdout
    assert (run_dir / "config.toml").read_text().count("rounds = 2") == 1
