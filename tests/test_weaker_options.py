"""A run that gives up a protection of the default configuration says which, and the README's table agrees."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fedlearn.config import RunConfig
from fedlearn.federation.simulation import run_federation
from fedlearn.weaker_options import WEAKER_OPTIONS, weaker_options

ROOT = Path(__file__).resolve().parents[1]
SETTING = re.compile(r"`([a-z_]+\.[a-z_]+) = ([^`]+)`")
ALTERNATIVE = re.compile(r"or `(\"[a-z_]+\")`")


def readme_settings() -> set[tuple[str, str]]:
    """(key, TOML literal) for every setting the README's table of options warns about."""
    text = (ROOT / "README.md").read_text()
    table = text.split("| option | warning |", 1)[1].split("\n\n", 1)[0]
    found: set[tuple[str, str]] = set()
    for row in table.splitlines()[2:]:
        option = row.split("|")[1]
        settings = SETTING.findall(option)
        found.update(settings)
        found.update((settings[-1][0], value) for value in ALTERNATIVE.findall(option))
    return found


def test_the_readme_table_and_the_code_name_the_same_settings() -> None:
    code = {(option.key, value) for option in WEAKER_OPTIONS for value in option.values}
    assert readme_settings() == code


def test_the_default_and_the_demo_give_up_nothing() -> None:
    assert weaker_options(RunConfig()) == []
    assert weaker_options(RunConfig.load(ROOT / "configs" / "demo.toml")) == []


@pytest.mark.parametrize(("overrides", "expected"), [
    (["scoring.method='gtg'"], ["scoring.method = 'gtg': an institution split"]),
    (["scoring.method='shapley'", "integrity.free_rider_kappa=0"],
     ["scoring.method = 'shapley': an institution split", "integrity.free_rider_kappa = 0.0: free riders are paid"]),
    (["strategy.weighting='claimed'"], ["strategy.weighting = 'claimed': trusts every reply's example count"]),
    # The refit's own settings say nothing while the refit is off: only the refit being off is named.
    (["integrity.refit_output_layer=false", "integrity.refit_noise=0", "integrity.refit_check_folds=0"],
     ["integrity.refit_output_layer = False: the published model keeps a planted backdoor"]),
    (["integrity.refit_noise=0"], ["integrity.refit_noise = 0.0: the output layer is refitted on clean rows alone"]),
    (["integrity.min_stake=0"], ["integrity.min_stake = 0.0: nothing is staked"]),
    (["payout.round_weight='headroom'"], ["payout.round_weight = 'headroom': late rounds outweigh early ones"]),
    (["integrity.slash=false"], ["integrity.slash = False: an institution flagged round after round keeps"]),
    # Other values of a protection's setting keep it on.
    (["integrity.free_rider_kappa=3", "integrity.backdoor_threshold=2", "strategy.weighting='equal'"], []),
])
def test_each_weaker_setting_is_named_with_what_it_gives_up(overrides: list[str], expected: list[str]) -> None:
    lines = weaker_options(RunConfig.load(overrides=overrides))
    assert len(lines) == len(expected)
    for line, start in zip(lines, expected):
        assert line.startswith(start), line


def test_a_run_with_a_weaker_setting_warns_as_it_starts_and_records_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = RunConfig.load(overrides=[
        "run.rounds=1", "data.institutions=3", "simulation.engine='local'", "scoring.method='loo'",
        "chain.enabled=false", f"run.output_dir='{tmp_path}'"])
    summary = run_federation(config, quiet=True, progress=False)
    prefix = "fedlearn: WARNING: weaker than the default: "
    warned = [line.removeprefix(prefix) for line in capsys.readouterr().err.splitlines() if line.startswith(prefix)]
    assert warned == ["scoring.method = 'loo': blind to redundancy: institutions holding the same data each earn "
                      "about nothing"]
    written = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert written["weaker_options"] == warned
