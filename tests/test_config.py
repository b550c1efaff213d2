"""Config: TOML + overrides, validation with one-line errors naming the key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedlearn.chain.artifacts import CONTRACT_NAMES
from fedlearn.config import RunConfig
from fedlearn.errors import ConfigError


def test_defaults_are_valid_and_round_trip_through_flat_keys() -> None:
    config = RunConfig()
    config.validate()
    assert RunConfig.from_flat(config.flat()) == config
    assert RunConfig.from_json(config.to_json()) == config


def test_toml_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[run]\nrounds = 7\n[data]\ndataset = "wine"\nalpha = 1\n')
    config = RunConfig.load(path, ["run.rounds=3", "scoring.method=loo", "train.learning_rate=0.1"])
    assert (config.run.rounds, config.data.dataset, config.data.alpha) == (3, "wine", 1.0)
    assert (config.scoring.method, config.train.learning_rate) == ("loo", 0.1)


def test_written_toml_reads_back(tmp_path: Path) -> None:
    config = RunConfig.load(overrides=["data.partition='iid'", "strategy.name='krum'"])
    path = tmp_path / "copy.toml"
    path.write_text(config.to_toml())
    assert RunConfig.load(path) == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.nope=1"], "unknown config key 'data.nope' (data keys: alpha, classes,"),
        (["scoring.metod='gtg'"], "unknown config key 'scoring.metod' (did you mean scoring.method?)"),
        (["run.utility='brier'"], "unknown config key 'run.utility' (did you mean scoring.utility?)"),
        (["colour.key=1"], "(sections: chain, data, integrity, model, payout, run, scoring, simulation, strategy,"),
        (["strategy.name=fedfoo"], "unknown strategy.name 'fedfoo'"),
        (["model.name=resnet"], "unknown model.name 'resnet'"),
        (["data.partition=zipf"], "unknown data.partition 'zipf'"),
        (["scoring.method=owen"], "unknown scoring.method 'owen'"),
        (["data.alpha=0"], "data.alpha = 0.0 must be > 0"),
        (["data.alpha=-1"], "data.alpha = -1.0 must be > 0"),
        (["run.rounds=0"], "run.rounds = 0 must be at least 1"),
        (["data.name_prefix=''"], "data.name_prefix = '' must name the institutions"),
        (["run.output_dir=''"], "run.output_dir = '' must name a directory ('.' for the working directory)"),
        (["run.rounds='three'"], "expects int, got 'three'"),
        (["train.learning_rate=true"], "expects float, got True"),
        (["data.validation_fraction=0.6", "data.test_fraction=0.5"], "plus data.validation_fraction must be < 1"),
        (["scoring.method=shapley", "data.institutions=11"], "exceeds 10"),
        (["strategy.fraction_train=1.5"], "strategy.fraction_train = 1.5 must be in (0, 1]"),
        (["strategy.min_nodes=11"], "strategy.min_nodes = 11 must be in [0, data.institutions = 10]"),
        (["strategy.round_timeout=0"], "strategy.round_timeout = 0.0 must be a positive number of seconds"),
        (["strategy.node_wait=-1"], "strategy.node_wait = -1.0 must be a positive number of seconds"),
        (["norun"], "is not of the form section.key=value"),
    ],
)
def test_bad_values_name_the_key_and_value(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.load(overrides=overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        RunConfig.load(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[run\nrounds = ")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        RunConfig.load(broken)
    flat = tmp_path / "flat.toml"
    flat.write_text("rounds = 3\n")
    with pytest.raises(ConfigError, match="must be a \\[table\\]"):
        RunConfig.load(flat)


def test_flower_app_config_lists_every_key() -> None:
    # `flwr run --run-config` refuses keys the app config does not list.
    import tomllib

    doc = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    app_config = doc["tool"]["flwr"]["app"]["config"]
    flat = {f"{section}.{key}": value for section, table in app_config.items() for key, value in table.items()}
    assert set(flat) == set(RunConfig().flat())
    RunConfig.from_flat(flat)  # and the values are valid
    # The defaults a `flwr run` deployment (a pilot's kit included) fills in are fedlearn's own, but for the size
    # of the example deployment.
    defaults = RunConfig().flat()
    assert {k for k in flat if flat[k] != defaults[k]} == {"run.rounds", "data.institutions"}


def test_the_flower_app_bundle_holds_the_code_and_artifacts_and_stays_well_under_flowers_limit() -> None:
    # `flwr run` ships the app as one bundle that Flower refuses over 10 MiB; without an include list it took every
    # tracked .json and .py (the compiler's 8 MB build-info, benchmark results) and sat 13 KB under the limit.
    import io
    import zipfile

    from flwr.cli.build import build_fab_from_disk
    from flwr.common.constant import FAB_MAX_SIZE

    fab = build_fab_from_disk(Path(__file__).resolve().parents[1])
    names = set(zipfile.ZipFile(io.BytesIO(fab)).namelist())
    assert {"server/app.py", "clients/app.py", "fedlearn/federation/strategy.py", "configs/demo.toml"} <= names
    assert {f"contracts/artifacts/{name}.json" for name in CONTRACT_NAMES} <= names
    assert not {n for n in names if n.startswith(("benchmarks/", "tests/", "docs/", "contracts/artifacts/build-info"))}
    assert len(fab) < FAB_MAX_SIZE // 4


def test_the_demo_is_the_default_configuration_run_longer() -> None:
    # What the integrity benchmark measures (configs/demo.toml) is what `fedlearn run` does unconfigured: stakes,
    # training settings and checks alike; only the run's name and length differ.
    demo = RunConfig.load(Path(__file__).resolve().parents[1] / "configs" / "demo.toml").flat()
    defaults = RunConfig().flat()
    assert {k for k in defaults if demo[k] != defaults[k]} == {"run.name", "run.rounds"}


def test_keys_given_are_what_the_file_and_overrides_name(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[run]\nrounds = 7\n[data]\ndataset = "wine"\n')
    assert RunConfig.keys_given(path, ["train.learning_rate=0.1"]) == {"run.rounds", "data.dataset",
                                                                       "train.learning_rate"}
    assert RunConfig.keys_given() == set()


def test_resume_compares_only_the_keys_the_given_config_names(tmp_path: Path) -> None:
    from argparse import Namespace

    from fedlearn.cli.runs import _resume_config

    # A run made while a default was different: its saved config records the value it ran with.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    made = RunConfig.load(overrides=["scoring.banzhaf_estimator='regression'", "run.rounds=4"])
    (run_dir / "config.toml").write_text(made.to_toml())
    given = tmp_path / "given.toml"
    given.write_text('[run]\nrounds = 6\n[data]\ndataset = "digits"\n')

    resumed = _resume_config(Namespace(resume=run_dir, config=given, set=[]))
    assert resumed == made.replace(run={"rounds": 6})  # the saved estimator, not today's default
    assert _resume_config(Namespace(resume=run_dir, config=None, set=["run.rounds=5"])) == made.replace(
        run={"rounds": 5})
    # A file that leaves run.rounds alone keeps the run's own count.
    given.write_text('[data]\ndataset = "digits"\n')
    assert _resume_config(Namespace(resume=run_dir, config=given, set=[])) == made
    # What the file or --set does name must match.
    with pytest.raises(ConfigError, match=r"differs in scoring\.banzhaf_estimator\)"):
        _resume_config(Namespace(resume=run_dir, config=given, set=["scoring.banzhaf_estimator='auto'"]))
    given.write_text('[data]\ndataset = "wine"\n')
    with pytest.raises(ConfigError, match=r"differs in data\.dataset\)"):
        _resume_config(Namespace(resume=run_dir, config=given, set=[]))


def test_a_run_made_before_a_key_existed_resumes_with_what_it_was_made_with(tmp_path: Path) -> None:
    from argparse import Namespace

    from fedlearn.cli.runs import _resume_config

    # Prepare: a saved config written before integrity.refit_noise, integrity.refit_check_folds,
    # integrity.backdoor_threshold and payout.round_weight existed (the keys removed from today's file), and one
    # written now.
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    for path in (old_dir, new_dir):
        path.mkdir()
    made = RunConfig.load(overrides=["run.rounds=4"])
    text = made.to_toml()
    assert "refit_noise = 1.0" in text and "refit_check_folds = 5" in text and "backdoor_threshold = 1.0" in text
    assert 'round_weight = "equal"' in text
    (old_dir / "config.toml").write_text("\n".join(
        line for line in text.splitlines() if not line.startswith(("refit_noise", "refit_check_folds",
                                                                   "backdoor_threshold", "round_weight"))))
    (new_dir / "config.toml").write_text(text)
    # Execute
    old = _resume_config(Namespace(resume=old_dir, config=None, set=["run.rounds=6"]))
    new = _resume_config(Namespace(resume=new_dir, config=None, set=[]))
    # Assert: the older run refits as it would have (no noisy copies, no check first) and checks for no backdoor,
    # the newer one with today's defaults; naming another value for the key is refused like any other change.
    assert old.integrity.refit_noise == 0.0 and old.integrity.refit_check_folds == 0 and old.run.rounds == 6
    assert old.integrity.backdoor_threshold == 0.0 and old.payout.round_weight == "equal"
    assert RunConfig.load_saved(old_dir / "config.toml") == old.replace(run={"rounds": 4})
    assert new == made and new.integrity.refit_noise == 1.0 and new.integrity.refit_check_folds == 5
    assert new.integrity.backdoor_threshold == 1.0
    with pytest.raises(ConfigError, match=r"differs in integrity\.refit_noise\)"):
        _resume_config(Namespace(resume=old_dir, config=None, set=["integrity.refit_noise=1.0"]))


def test_resume_refuses_a_round_count_the_run_has_already_reached(tmp_path: Path) -> None:
    from argparse import Namespace

    from fedlearn.cli.runs import _resume_config
    from fedlearn.records.checkpoint import CHECKPOINT_DIR

    # A 5-round run stopped after its second round (two checkpointed models).
    run_dir = tmp_path / "run"
    (run_dir / CHECKPOINT_DIR).mkdir(parents=True)
    made = RunConfig.load(overrides=["run.rounds=5"])
    (run_dir / "config.toml").write_text(made.to_toml())
    for r in (1, 2):
        (run_dir / CHECKPOINT_DIR / f"round-{r:04d}.npz").write_bytes(b"")

    for rounds in (1, 2):  # the run would end without its last round's true-up and refit
        with pytest.raises(ConfigError, match=f"run.rounds = {rounds}, but the run has completed 2 round"):
            _resume_config(Namespace(resume=run_dir, config=None, set=[f"run.rounds={rounds}"]))
    assert _resume_config(Namespace(resume=run_dir, config=None, set=["run.rounds=3"])).run.rounds == 3
    assert _resume_config(Namespace(resume=run_dir, config=None, set=["run.rounds=5"])) == made
