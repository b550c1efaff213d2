"""Bad input through the ``fedlearn`` CLI: one clear line, a non-zero exit, and nothing written on chain or disk.

Every case here was once a traceback or a half-done run (contracts deployed and funded, then a failure). A run
that fails its checks must leave ``run.output_dir`` empty: no run directory, no deployment, no ledger.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SMALL = ["data.institutions=2", "run.rounds=2", "simulation.engine='local'", "model.hidden_units=8"]


def fedlearn(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedlearn.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


def run_args(out: Path, *settings: str) -> list[str]:
    pairs = [*SMALL, f"run.output_dir='{out}'", *settings]
    return ["run", "--no-progress", *[a for s in pairs for a in ("--set", s)]]


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fedlearn: error: "), result.stderr[-2000:]
    return lines[0]


def test_a_config_error_is_reported_before_flower_torch_or_web3_load(tmp_path: Path) -> None:
    # What makes a config error fast: nothing heavy is imported before the config is checked.
    probe = (
        "import sys\n"
        "from fedlearn.cli.main import main\n"
        "code = main(['run', '--set', 'train.learning_rate=inf'])\n"
        "heavy = sorted(m for m in ('torch', 'flwr', 'web3', 'ray') if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "2 []", result.stdout + result.stderr
    assert "train.learning_rate" in result.stderr and "finite" in result.stderr


@pytest.mark.parametrize(("setting", "expected"), [
    ("train.learning_rate=inf", "'train.learning_rate' must be a finite number"),
    ("chain.reward_per_round=nan", "'chain.reward_per_round' must be a finite number"),
    ("integrity.slash_k=1", "integrity.slash_k = 1 would slash on a single bad round"),
    ("integrity.slash_fraction=1.5", "integrity.slash_fraction = 1.5 must be in (0, 1]"),
    ("scoring.confidence=1.0", "scoring.confidence = 1.0 must be in (0.5, 1)"),
    ("scoring.bootstrap_samples=10", "scoring.bootstrap_samples = 10 must be at least 100"),
    ("scoring.significance='t-test'", "unknown scoring.significance 't-test'"),
    ("scoring.utility='f1'", "unknown scoring.utility 'f1'"),
    ("payout.interim_fraction=1.5", "payout.interim_fraction = 1.5 must be in [0, 1]"),
    ("payout.round_weight='linear'", "unknown payout.round_weight 'linear'"),
    ("chain.reward_per_round=-1", "chain.reward_per_round = -1.0 must be >= 0"),
    # Defence settings.
    ("integrity.exclude_harmful=2", "config key 'integrity.exclude_harmful' expects bool, got 2"),
    ("integrity.free_rider_kappa=-1", "integrity.free_rider_kappa"),
    ("integrity.scaled_update_limit=1.2", "integrity.scaled_update_limit = 1.2 must be 0 (off) or in [1.5, 100]"),
    ("integrity.scaled_update_limit=-3", "integrity.scaled_update_limit = -3.0 must be 0 (off) or in [1.5, 100]"),
    ("scoring.method='banzaf'", "unknown scoring.method 'banzaf'"),
    ("scoring.banzhaf_estimator='kernel'", "unknown scoring.banzhaf_estimator 'kernel'"),
    ("strategy.weighting='trusted'", "unknown strategy.weighting 'trusted'"),
    ("integrity.behaviours='hospital-02=backdoor:target=10'", "target = 10 must be < the data's 10 classes"),
    ("integrity.behaviours='hospital-02=low_effort:effort=0'", "behaviour low_effort: effort = 0.0"),
    # The run directory is <output_dir>/<name>-<time>: a name must not lead out of output_dir.
    ("run.name='../escape'", "run.name = '../escape' must be a plain name"),
    ("run.name='a/b'", "run.name = 'a/b' must be a plain name"),
])
def test_config_values_out_of_range_are_one_line(tmp_path: Path, setting: str, expected: str) -> None:
    result = fedlearn(*run_args(tmp_path, setting), cwd=tmp_path)
    assert result.returncode == 2 and expected in one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    result = fedlearn(*run_args(afile), cwd=tmp_path)
    assert result.returncode == 9 and "cannot make a run directory in run.output_dir" in one_line_error(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_strategy_too_robust_for_the_federation_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    result = fedlearn(*run_args(out, "strategy.name='krum'", "strategy.num_malicious=3"), cwd=tmp_path)
    assert result.returncode == 2 and "strategy.num_malicious = 3 is too large" in one_line_error(result)
    assert not out.exists()


def test_more_classes_per_institution_than_the_data_has_names_the_key(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    result = fedlearn(*run_args(out, "data.partition='pathological'", "data.classes_per_institution=20"),
                      cwd=tmp_path)
    assert result.returncode == 2 and "data.classes_per_institution = 20 is more than the 10 classes of dataset " \
        "'digits'" in one_line_error(result)
    assert not out.exists()


def test_multikrum_asked_to_keep_more_updates_than_it_can_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    result = fedlearn(*run_args(out, "data.institutions=5", "strategy.name='multikrum'", "strategy.num_malicious=1",
                                "strategy.multikrum_select=5"), cwd=tmp_path)
    assert result.returncode == 2 and "strategy.multikrum_select = 5 is more than MultiKrum can keep from 5 " \
        "institutions with strategy.num_malicious = 1 (at most n - f = 4" in one_line_error(result)
    assert not out.exists()


def test_a_surrogate_estimator_for_more_institutions_than_it_takes_is_refused_before_anything_is_written(
        tmp_path: Path) -> None:
    out = tmp_path / "runs"
    result = fedlearn(*run_args(out, "data.institutions=13", "scoring.banzhaf_estimator='surrogate'"), cwd=tmp_path)
    assert result.returncode == 2
    assert "scoring.banzhaf_estimator = 'surrogate'" in one_line_error(result) and "at most 12" in result.stderr
    assert not out.exists()


def test_a_single_class_dataset_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = tmp_path / "one-class.csv"
    rng = np.random.default_rng(0)
    rows = ["a,b,label", *(f"{x:.3f},{y:.3f},sick" for x, y in rng.normal(size=(60, 2)))]
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "runs"
    result = fedlearn(*run_args(out, f"data.dataset='{data}'"), cwd=tmp_path)
    assert result.returncode == 3 and "single class ('sick')" in one_line_error(result)
    assert not out.exists()


@pytest.mark.parametrize(("setting", "code", "message"), [
    ("data.institutions=5000", 3, "num_institutions=5000 exceeds the 1257 training examples"),
    ("simulation.client_cpus=4096", 2, "more CPUs than this machine has"),
    ("simulation.client_gpus=4096", 2, "client_gpus = 4096"),
])
def test_a_federation_the_data_or_the_machine_cannot_hold_is_refused_before_anything_starts(
        tmp_path: Path, setting: str, code: int, message: str) -> None:
    out = tmp_path / "runs"
    result = fedlearn(*run_args(out, setting, "simulation.engine='ray'"), cwd=tmp_path)
    assert result.returncode == code and message in one_line_error(result)
    assert not out.exists()


def _addresses(tmp_path: Path, second: str) -> Path:
    path = tmp_path / "addresses.toml"
    path.write_text(f'hospital-01 = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"\nhospital-02 = "{second}"\n')
    return path


def test_an_address_with_a_wrong_checksum_is_refused_before_deploying(tmp_path: Path) -> None:
    # One character's case changed in a checksummed address: a typo EIP-55 exists to catch.
    typo = _addresses(tmp_path, "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cf")
    out = tmp_path / "runs"
    result = fedlearn(*run_args(out, f"chain.addresses='{typo}'"), cwd=tmp_path)
    line = one_line_error(result)
    assert result.returncode == 2 and "EIP-55 checksum is wrong" in line and "hospital-02" in line
    assert line.endswith("0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF")  # the checksummed form, to compare
    assert not out.exists()


@pytest.mark.parametrize(("setting", "message"), [
    ("chain.reward_per_round=1e9", "chain.reward_per_round x run.rounds = 1000000000.0 x 2 tokens plus 2 stakes of "
                                   "10.0, exceeds the token's cap of 1,000,000,000 tokens"),
    ("integrity.min_stake=6e8", "= 100.0 x 2 tokens plus 2 stakes of 600000000.0, exceeds the token's cap"),
    ("run.rounds=100000000000", "= 100.0 x 100000000000 tokens plus 2 stakes of 10.0, exceeds the token's cap"),
])
def test_a_budget_beyond_the_tokens_cap_is_refused_before_deploying(tmp_path: Path, setting: str,
                                                                     message: str) -> None:
    out = tmp_path / "runs"
    result = fedlearn(*run_args(out, setting), cwd=tmp_path)
    assert result.returncode == 2 and message in one_line_error(result)
    assert not out.exists()


def test_a_missing_address_is_refused_before_deploying(tmp_path: Path) -> None:
    partial = tmp_path / "addresses.toml"
    partial.write_text('hospital-01 = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"\n')
    out = tmp_path / "runs"
    result = fedlearn(*run_args(out, f"chain.addresses='{partial}'"), cwd=tmp_path)
    assert result.returncode == 2 and "hospital-02 has no address" in one_line_error(result)
    assert not out.exists()


def test_a_real_node_without_a_key_or_without_a_staked_deployment_is_refused_before_connecting(
        tmp_path: Path) -> None:
    out = tmp_path / "runs"
    # Nothing listens on port 9: the checks must fail before any connection is tried.
    table = tmp_path / "addresses.toml"
    table.write_text("".join(f'hospital-0{i} = "0x{i:040x}"\n' for i in range(1, 4)))
    node = ["chain.backend='http://127.0.0.1:9'", "chain.key_env='FEDLEARN_TEST_NO_SUCH_KEY'",
            f"chain.addresses='{table}'", "integrity.min_stake=0"]
    result = fedlearn(*run_args(out, *node), cwd=tmp_path)
    assert result.returncode == 5 and "FEDLEARN_TEST_NO_SUCH_KEY" in one_line_error(result)
    env = {"PATH": "/usr/bin:/bin", "FEDLEARN_TEST_KEY": "0x" + "11" * 32}
    staked = ["chain.backend='http://127.0.0.1:9'", "chain.key_env='FEDLEARN_TEST_KEY'", "integrity.min_stake=5",
              f"chain.addresses='{table}'"]
    result = fedlearn(*run_args(out, *staked), cwd=tmp_path, env=env)
    assert result.returncode == 2 and "needs chain.deployment" in one_line_error(result)
    # ... which the default stake asks too: fresh contracts hold no stake.
    result = fedlearn(*run_args(out, *staked[:2], staked[3]), cwd=tmp_path, env=env)
    assert result.returncode == 2 and "integrity.min_stake = 10.0 on a real node needs" in one_line_error(result)
    # Derived simulation addresses are refused on a node: their keys come from a public seed.
    result = fedlearn(*run_args(out, *staked[:2], "integrity.min_stake=0"), cwd=tmp_path, env=env)
    assert result.returncode == 2 and "set chain.addresses to the institutions' own" in one_line_error(result)
    assert not out.exists()


def test_own_addresses_on_the_embedded_chain_stake_on_a_deployment_or_not_at_all(tmp_path: Path) -> None:
    # Institutions paid at addresses of their own stake with their own keys, which a fresh deployment never saw.
    out = tmp_path / "runs"
    table = tmp_path / "addresses.toml"
    table.write_text("".join(f'hospital-0{i} = "0x{i:040x}"\n' for i in range(1, 3)))
    result = fedlearn(*run_args(out, f"chain.addresses='{table}'"), cwd=tmp_path)
    line = one_line_error(result)
    assert result.returncode == 2 and "integrity.min_stake = 10.0 with chain.addresses needs chain.deployment" in line
    assert "or set integrity.min_stake = 0" in line and not out.exists()
    paid = fedlearn(*run_args(out, f"chain.addresses='{table}'", "integrity.min_stake=0"), cwd=tmp_path)
    assert paid.returncode == 0, paid.stderr[-2000:]


def test_a_round_where_every_update_is_rejected_is_skipped_and_pays_nothing(tmp_path: Path) -> None:
    from fedlearn.payout.ledger import Ledger

    # Both institutions send the global model back untouched: every update is set aside, every round.
    riders = "integrity.behaviours='hospital-01=free_rider, hospital-02=free_rider'"
    result = fedlearn(*run_args(tmp_path, riders), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    # The quiet default run still tells the user why nothing was paid.
    assert result.stderr.count("set aside: update is identical to the global model") == 4
    assert result.stderr.count("skipped: every update was rejected; nothing paid, it contributes nothing") == 2
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    ledger = Ledger.open(run_dir / "ledger.sqlite")
    rounds = ledger.rounds()
    assert [(r.round, r.round_total, r.status) for r in rounds] == [(1, 0, "settled"), (2, 0, "settled")]
    # Nobody earned anything: the whole budget went back to the funder, on chain, none stranded.
    assert (rounds[0].carried, rounds[-1].carried, rounds[-1].returned) == (2 * 100 * 10**18, 0, 2 * 100 * 10**18)
    (returned,) = ledger.returns()
    assert returned[0] == 2 and returned[2] == 2 * 100 * 10**18 and returned[3]
    assert "budget went unearned; returned to the funder" in result.stderr
    verify = fedlearn("verify", str(run_dir), cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_run_short_of_funds_says_how_to_top_up_and_resumes_after_chain_fund(tmp_path: Path) -> None:
    from fedlearn.payout.ledger import Ledger

    result = fedlearn(*run_args(tmp_path, "chain.funding='none'"), cwd=tmp_path)
    line = one_line_error(result)
    assert result.returncode == 5 and "lacks 200000000000000000000 wei" in line
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    # The run directory the failed start made is named: funding and resuming both need it.
    assert f"fedlearn chain fund --run {run_dir}" in line and f"fedlearn run --resume {run_dir}" in line
    assert Ledger.open(run_dir / "ledger.sqlite").rounds() == []  # failed before round 1: nothing journaled

    funded = fedlearn("chain", "fund", "--run", str(run_dir), cwd=tmp_path)
    assert funded.returncode == 0, funded.stderr
    assert "funded 200 tokens (200000000000000000000 base units)" in funded.stdout
    again = fedlearn("chain", "fund", "--run", str(run_dir), cwd=tmp_path)
    assert again.returncode == 0 and "nothing to fund" in again.stdout, again.stderr

    resumed = fedlearn("run", "--no-progress", "--resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r.status for r in Ledger.open(run_dir / "ledger.sqlite").rounds()] == ["settled", "settled"]


def test_resuming_a_finished_run_with_more_rounds_funds_the_extra_rounds(tmp_path: Path) -> None:
    from fedlearn.payout.ledger import Ledger

    first = fedlearn(*run_args(tmp_path), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    # Resumed as it is, a finished run only finishes again: the same published model.
    published = (run_dir / "model.npz").read_bytes()
    again = fedlearn("run", "--no-progress", "--resume", str(run_dir), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run_dir / "model.npz").read_bytes() == published
    more = fedlearn("run", "--no-progress", "--resume", str(run_dir), "--set", "run.rounds=3", cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-2000:]
    ledger = Ledger.open(run_dir / "ledger.sqlite")
    assert [r.round for r in ledger.rounds()] == [1, 2, 3]
    assert ledger.meta()["funded_wei"] == str(3 * 100 * 10**18)
    assert 'rounds = 3' in (run_dir / "config.toml").read_text()
    verify = fedlearn("verify", str(run_dir), cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # Round 2 was the last when it ran: it published its model with the output layer refitted (the file verify
    # hashed), and round 3 trained on from its aggregate, which the checkpoint kept beside it.
    import pickle

    import numpy as np

    from fedlearn.records import checkpoint

    kept = pickle.loads((run_dir / checkpoint.CHECKPOINT_DIR / "state-0002.pkl").read_bytes())["training"]
    published = checkpoint.read_model(checkpoint.model_path(run_dir, 2))
    assert {k for k in published if not np.array_equal(published[k], kept[k])} == {"2.weight", "2.bias"}
    assert checkpoint.latest(run_dir) is not None


def test_an_address_without_a_checksum_is_accepted_with_a_warning(tmp_path: Path, capsys) -> None:
    from fedlearn.config import RunConfig
    from fedlearn.payout.settlement import institution_addresses

    checksummed = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
    table = tmp_path / "addresses.toml"
    lowercase = "0x2b5ad5c4795c026514f8317c7a215e218dccd6cf"
    table.write_text(f'hospital-01 = "{checksummed}"\nhospital-02 = "{lowercase}"\n')
    config = RunConfig.load(overrides=[f"chain.addresses='{table}'"])
    capsys.readouterr()
    addresses = institution_addresses(config, ["hospital-01", "hospital-02"])
    assert addresses["hospital-02"] == "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "hospital-02" in warning and "carries no EIP-55 checksum" in warning
    assert "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF" in warning
