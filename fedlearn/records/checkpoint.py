"""Per-round checkpoints in the run directory: the global model, the wrapped strategy's state, Python's RNG.

A round counts as completed once its checkpoint is written (after it was scored and journaled), so a resumed
run starts from the last checkpoint and replays nothing twice: a round journaled but not checkpointed is
recomputed identically and found already journaled.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedlearn.config import MOVABLE_KEYS, RunConfig
from fedlearn.errors import FedlearnError

if TYPE_CHECKING:  # reading a checkpoint's weights (verify) needs neither Flower nor torch
    from flwr.app import ArrayRecord
    from flwr.serverapp.strategy import Strategy

CHECKPOINT_DIR = "checkpoints"
_MODEL = re.compile(r"round-(\d{4,})\.npz$")


class CheckpointError(FedlearnError):
    exit_code = 9


@dataclass
class Checkpoint:
    server_round: int
    arrays: ArrayRecord  # what training goes on from
    strategy: Strategy
    random_state: Any
    published: ArrayRecord  # what the round published (its hash is on chain): ``arrays`` but in a last round
    checks: Any = None  # what the update checks remember across rounds (ScoredStrategy.check_state); None: older


def model_path(run_dir: Path, server_round: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"round-{server_round:04d}.npz"


def made_with(config: RunConfig, data_digest: str) -> dict[str, Any]:
    """What a run must keep to go on: its settings (all but the round count it may be resumed to and the places
    of the files that may move, ``MOVABLE_KEYS``) and the digest of the data it trains on
    (``FederatedSplit.digest``)."""
    kept = {k: v for k, v in config.flat().items() if k not in ("run.rounds", "run.output_dir", *MOVABLE_KEYS)}
    return {"config": kept, "data": data_digest}


def require_made_with(run_dir: Path, config: RunConfig, data_digest: str) -> None:
    """Refuse to go on with settings or data other than the run's own (CheckpointError, exit 9): a model of
    another shape would fail to load, other institutions would be paid for rounds they never ran, other data would
    score the rest of the run against other examples. A run checkpointed before runs recorded this goes on."""
    rounds = completed_rounds(run_dir)
    saved = _state(run_dir, rounds[-1]).get("made_with") if rounds else None
    if saved is None:
        return
    now = made_with(config, data_digest)
    changed = [f"{key} {saved['config'][key]!r} → {value!r}" for key, value in now["config"].items()
               if key in saved["config"] and saved["config"][key] != value]
    if changed:
        raise CheckpointError(f"{run_dir / 'config.toml'} was changed after the run began ({'; '.join(changed)}); "
                              "a run goes on only with the settings it was made with: put them back, or start a "
                              "new run")
    if saved["data"] != data_digest:
        raise CheckpointError(f"the data the run trains on changed after it began ({config.data.dataset} no longer "
                              "holds the same examples); a run goes on only with its own data: put the file back, "
                              "or start a new run")


def save(run_dir: Path, server_round: int, arrays: ArrayRecord, strategy: Strategy, random_state: Any,
         training: ArrayRecord | None = None, checks: Any = None, made: dict[str, Any] | None = None) -> None:
    """``arrays``: the round's published model (what its hash on chain is of); ``training``: the aggregate
    training goes on from, where it differs (the last round's, before its output layer was refitted); ``checks``:
    what the update checks remember across rounds, so that a resumed run checks as an uninterrupted one;
    ``made``: the run's :func:`made_with`, which a resumed run must match."""
    directory = run_dir / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    # State first, model last: the model file is what marks the round completed.
    state = directory / f"state-{server_round:04d}.pkl"
    with open(state.with_suffix(".tmp"), "wb") as fh:
        pickle.dump({"strategy": strategy, "random_state": random_state, "checks": checks, "made_with": made,
                     "training": None if training is None else numpy_arrays(training)}, fh)
    os.replace(state.with_suffix(".tmp"), state)
    target = model_path(run_dir, server_round)
    tmp = target.with_name(target.name + ".tmp.npz")
    # allow_pickle named (its default) so that no array name can be taken for it, and mypy can check the rest.
    np.savez(tmp, allow_pickle=True, **numpy_arrays(arrays))
    os.replace(tmp, target)


def numpy_arrays(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """A record's arrays as numpy arrays, by name."""
    return {name: array.numpy() for name, array in arrays.items()}


def read_model(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"model file {path} cannot be read: {exc}") from None


def completed_rounds(run_dir: Path) -> list[int]:
    directory = run_dir / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _MODEL.match(p.name)))


def latest(run_dir: Path) -> Checkpoint | None:
    rounds = completed_rounds(run_dir)
    if not rounds:
        return None
    server_round = rounds[-1]
    saved = _state(run_dir, server_round)
    from flwr.app import Array, ArrayRecord

    # A run extended past its last round goes on from that round's aggregate, not from the published model
    # whose output layer was fitted to the validation split that scores the next round.
    published = ArrayRecord({name: Array(value) for name, value in
                             read_model(model_path(run_dir, server_round)).items()})
    training = saved.get("training")
    arrays = published if training is None else ArrayRecord({name: Array(v) for name, v in training.items()})
    return Checkpoint(server_round, arrays, saved["strategy"], saved["random_state"], published, saved.get("checks"))


def _state(run_dir: Path, server_round: int) -> dict[str, Any]:
    state = run_dir / CHECKPOINT_DIR / f"state-{server_round:04d}.pkl"
    try:
        with open(state, "rb") as fh:
            saved: dict[str, Any] = pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise CheckpointError(f"checkpoint {state} cannot be read: {exc}") from None
    return saved
