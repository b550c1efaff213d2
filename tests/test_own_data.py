"""A pilot's data: each institution's node reads its own file and nothing else, the coordinator its own
validation and test files; every file is checked against the federation's schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from sklearn.datasets import load_digits

from fedlearn.config import RunConfig
from fedlearn.data.schema import Schema, load_local
from fedlearn.errors import ConfigError, DataError
from fedlearn.federation import roster as roster_module
from fedlearn.federation.coordinator import RunOptions, build_server_app
from fedlearn.federation.institution import build_client_app
from fedlearn.federation.localgrid import LocalGrid
from tests.runs import ledger_of, rounds_json

NAMES = ["clinic-a", "clinic-b", "clinic-c"]
COLUMNS = [f"px{i}" for i in range(64)]


def _table(X: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(X / 16.0, columns=COLUMNS)  # the federation agreed on pixels scaled to [0, 1]
    frame["digit"] = y
    return frame


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Each party's own file, one of each format: the institutions' shards, the coordinator's two."""
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    X, y = X[order], y[order]
    shards = np.array_split(np.arange(900), 3)
    paths = {name: tmp_path / name / f"data{ext}" for name, ext in zip(NAMES, (".csv", ".parquet", ".npz"))}
    for path, rows in zip(paths.values(), shards):
        path.parent.mkdir()
        if path.suffix == ".npz":
            np.savez(path, X=X[rows] / 16.0, y=y[rows])
        elif path.suffix == ".csv":
            _table(X[rows], y[rows]).to_csv(path, index=False)
        else:
            _table(X[rows], y[rows]).to_parquet(path)
    (tmp_path / "coordinator").mkdir()
    paths["validation"] = tmp_path / "coordinator" / "validation.csv"
    _table(X[900:1300], y[900:1300]).to_csv(paths["validation"], index=False)
    paths["test"] = tmp_path / "coordinator" / "test.parquet"
    _table(X[1300:], y[1300:]).to_parquet(paths["test"])
    return paths


def _config(files: dict[str, Path], out: Path, *overrides: str) -> RunConfig:
    return RunConfig.load(overrides=[
        "data.dataset='files'", "data.institutions=3", f"data.institution_names='{','.join(NAMES)}'",
        "data.features=64", f"data.classes='{','.join(map(str, range(10)))}'", "data.label_column='digit'",
        f"data.validation_path='{files['validation']}'", f"data.test_path='{files['test']}'",
        "data.registered_examples='300,300,300'", "run.rounds=2", "model.hidden_units=32", "train.momentum=0.9",
        "train.local_epochs=2",
        f"run.output_dir='{out}'", *overrides,
    ])


def test_each_party_reads_only_its_own_file_and_the_run_pays(files, tmp_path: Path, monkeypatch) -> None:
    reads: list[tuple[str, Path]] = []
    real = roster_module.load_local

    def spy(path, schema, name):
        reads.append((name, Path(path)))
        return real(path, schema, name)

    monkeypatch.setattr(roster_module, "load_local", spy)
    config = _config(files, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "pilot"
    nodes = [{"institution": name, "data-path": str(files[name])} for name in NAMES]
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    build_server_app(config, RunOptions(run_dir=run_dir))(
        LocalGrid(build_client_app(config), 3, node_configs=nodes),
        Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))

    # The coordinator read its two files; each node read its own, once; nobody read anyone else's.
    by_reader: dict[str, set[Path]] = {}
    for name, path in reads:
        by_reader.setdefault(name, set()).add(path)
    assert by_reader == {"the coordinator's validation file": {files["validation"]},
                         "the coordinator's test file": {files["test"]},
                         **{name: {files[name]} for name in NAMES}}
    rounds = rounds_json(run_dir)
    assert all(sorted(r["scores"]["scores"]) == NAMES for r in rounds[1:])
    assert rounds[-1]["test_accuracy"] > rounds[0]["test_accuracy"]
    journaled, _, _ = ledger_of(run_dir)
    assert journaled[-1].status == "settled" and journaled[-1].released > 0


def test_a_node_file_that_breaks_the_schema_is_refused_with_one_line(files, tmp_path: Path) -> None:
    schema = Schema.parse(64, ",".join(map(str, range(10))), "digit")
    assert len(load_local(files["clinic-a"], schema, "clinic-a")) == 300
    threes = tmp_path / "threes.csv"
    frame = pd.read_csv(files["clinic-a"])
    frame[frame["digit"] == 3].to_csv(threes, index=False)
    one_class = load_local(threes, schema, "clinic-a")  # a single class is an institution's right
    assert one_class.num_classes == 10 and set(one_class.y.tolist()) == {3}  # the federation's numbering
    narrow = tmp_path / "narrow.csv"
    pd.read_csv(files["clinic-a"]).drop(columns=["px63"]).to_csv(narrow, index=False)
    stray = tmp_path / "stray.csv"
    frame = pd.read_csv(files["clinic-a"])
    frame.loc[0, "digit"] = 11
    frame.to_csv(stray, index=False)
    header = tmp_path / "header.csv"
    pd.read_csv(files["clinic-a"]).head(0).to_csv(header, index=False)
    cases = [
        (header, "header.csv has no rows$"),
        (narrow, "has 63 feature columns; the federation's schema has 64"),
        (stray, r"label\(s\) 11 are not among the federation.s classes"),
        (tmp_path / "missing.csv", "data file not found"),
        (tmp_path / "notes.txt", "has format '.txt'"),
    ]
    for path, message in cases:
        with pytest.raises(DataError, match=message) as err:
            load_local(path, schema, "clinic-a")
        assert "\n" not in str(err.value) and str(err.value).startswith("clinic-a: ")
    with pytest.raises(DataError, match="no label column 'label'"):
        load_local(files["clinic-a"], Schema.parse(64, "0,1", "label"), "clinic-a")


def test_pilot_data_settings_are_checked(files, tmp_path: Path) -> None:
    cases = [
        (["data.features=0"], "data.features = 0 must be the schema's number of feature columns"),
        (["data.institution_names='clinic-a,clinic-a,clinic-b'"], "must name the 3 institutions, each once"),
        (["data.registered_examples='300,300'"], "must give the 3 example counts registered at provisioning"),
        (["integrity.behaviours='clinic-a=free_rider'"], "simulates attacks, which a pilot's own files do not"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            _config(files, tmp_path, *overrides)
    assert _config(files, tmp_path, "data.registered_examples=''", "strategy.weighting='equal'")
    from fedlearn.federation.simulation import run_federation

    with pytest.raises(ConfigError, match="is a pilot: each institution's SuperNode reads its own file"):
        run_federation(_config(files, tmp_path), progress=False)


def test_a_reply_under_another_institutions_name_is_set_aside_and_recorded_under_its_own(
    files, tmp_path: Path
) -> None:
    """Node 2 is registered for clinic-b but its node config claims clinic-a (and its payouts)."""
    registry = tmp_path / "nodes.toml"
    registry.write_text('clinic-a = 1\nclinic-b = 2\nclinic-c = 3\n')
    config = _config(files, tmp_path / "runs", f"data.node_registry='{registry}'", "run.rounds=1")
    nodes = [{"institution": "clinic-a", "data-path": str(files["clinic-a"])},
             {"institution": "clinic-a", "data-path": str(files["clinic-b"])},
             {"institution": "clinic-c", "data-path": str(files["clinic-c"])}]
    run_dir = tmp_path / "runs" / "pilot"
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    build_server_app(config, RunOptions(run_dir=run_dir))(
        LocalGrid(build_client_app(config), 3, node_configs=nodes),
        Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    scores = rounds_json(run_dir)[1]["scores"]
    assert scores["scores"]["clinic-b"] == 0 and scores["scores"]["clinic-a"] > 0  # clinic-a's own reply counts
    assert scores["rejected"] == {"clinic-b": "replied under the name 'clinic-a', but its node 2 is registered "
                                              "for clinic-b"}
    (record,) = ledger_of(run_dir)[0]
    assert {e.institution: e.reward for e in record.entries}["clinic-b"] == 0


def test_a_node_registry_that_does_not_fit_the_federation_is_refused(files, tmp_path: Path) -> None:
    from fedlearn.federation.roster import node_registry

    for text, message in [('clinic-z = 4\n', "names 'clinic-z', not an institution of this federation"),
                          ('clinic-a = 1\nclinic-b = 1\n', "node 1 is registered for both clinic-a and clinic-b"),
                          ('clinic-a = "one"\n', "node id must be a positive integer")]:
        registry = tmp_path / "nodes.toml"
        registry.write_text(text)
        with pytest.raises(ConfigError, match=message):
            node_registry(_config(files, tmp_path, f"data.node_registry='{registry}'"))
