"""The run directory: a copy of the config, per-round results, the final model and a summary.

Files are replaced atomically (write, then rename), so a run stopped at any point leaves readable files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedlearn.config import RunConfig
from fedlearn.errors import FedlearnError
from fedlearn.records.checkpoint import numpy_arrays
from fedlearn.scoring.round import RoundScores
from fedlearn.scoring.utility import UTILITY_MAX, round_weight
from fedlearn.weaker_options import weaker_options

if TYPE_CHECKING:
    from flwr.app import ArrayRecord

CONFIG_FILE = "config.toml"
ROUNDS_FILE = "rounds.json"
SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.npz"


class RunDirError(FedlearnError):
    exit_code = 9


def runs_inside(path: Path) -> str:
    """For a message about ``path`` not being a run directory: where it holds run directories (``fedlearn verify
    runs`` meant for ``runs/demo-…``), "; it holds N run directories, the newest …"; else ""."""
    try:
        # Newest by when each run wrote its config (the run's start): a directory's own time moves with every file
        # written in it, and two made in the same instant would tie.
        configs = sorted(Path(path).glob(f"*/{CONFIG_FILE}"), key=lambda p: p.stat().st_mtime)
        inside = [p.parent for p in configs]
    except OSError:  # unreadable: say nothing more than the message itself
        return ""
    if not inside:
        return ""
    count = "1 run directory" if len(inside) == 1 else f"{len(inside)} run directories"
    return f"; it holds {count}, the newest {inside[-1]}"


def new_run_dir(config: RunConfig) -> Path:
    """A fresh directory ``<output_dir>/<name>-<timestamp>`` (suffixed when it exists)."""
    base = Path(config.run.output_dir) / f"{config.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    try:
        path.mkdir(parents=True)
    except OSError as exc:  # output_dir is a file, unwritable, or on a full disk
        raise RunDirError(f"cannot make a run directory in run.output_dir = {config.run.output_dir!r}: "
                          f"{exc.strerror}") from None
    return path


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def save_model(path: Path, arrays: ArrayRecord) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    # allow_pickle named (its default) so that no array name can be taken for it, and mypy can check the rest.
    np.savez(tmp, allow_pickle=True, **numpy_arrays(arrays))
    os.replace(tmp, path)


@dataclass
class RoundResult:
    server_round: int
    test_accuracy: float
    test_loss: float
    scores: RoundScores | None = None
    backdoor_success: float | None = None  # the attack success rate, when a backdoor is configured
    seconds: float | None = None  # the round's wall time: training, scoring, evaluation (settlement follows)
    # Bytes per institution that took part, serialized as Flower sends them: mean of the messages to it
    # (down: the global model and round config) and of its replies (up: its update and metrics).
    bytes_down: int | None = None
    bytes_up: int | None = None


def saved_rounds(run_dir: Path) -> list[dict[str, Any]]:
    """The rounds a run directory records (``rounds.json``; none yet: empty); a corrupt file is RunDirError."""
    path = Path(run_dir) / ROUNDS_FILE
    try:
        return json.loads(path.read_text()) if path.exists() else []
    except ValueError:
        raise RunDirError(f"{path} is corrupt") from None


@dataclass
class RunRecorder:
    """Collects what every round produced and keeps the run directory current."""

    path: Path
    config: RunConfig
    institutions: list[str]
    examples: dict[str, int]
    backdoor_target: int | None = None  # the class a configured backdoor aims at; None: no backdoor
    rounds: list[RoundResult] = field(default_factory=list)
    _pending: RoundScores | None = None

    def __post_init__(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        # Always the effective config: a resumed run may have been given more rounds.
        (self.path / CONFIG_FILE).write_text(self.config.to_toml())

    def resume_after(self, server_round: int) -> None:
        """Keep the recorded rounds up to ``server_round`` (a resumed run recomputes the rest)."""
        saved = saved_rounds(self.path)
        self.rounds = [
            RoundResult(r["server_round"], r["test_accuracy"], r["test_loss"],
                        RoundScores(**r["scores"]) if r.get("scores") else None, r.get("backdoor_success"),
                        r.get("seconds"), r.get("bytes_down"), r.get("bytes_up"))
            for r in saved if r["server_round"] <= server_round
        ]

    def scored(self, scores: RoundScores) -> None:
        self._pending = scores

    def evaluated(self, server_round: int, accuracy: float, loss: float, backdoor_success: float | None = None,
                  **cost: Any) -> RoundResult:
        """``cost``: the round's ``seconds``, ``bytes_down`` and ``bytes_up`` (see RoundResult)."""
        result = RoundResult(server_round, accuracy, loss, self._pending if server_round > 0 else None,
                             backdoor_success, **cost)
        self._pending = None
        self.rounds.append(result)
        write_json(self.path / ROUNDS_FILE, [dataclasses.asdict(r) for r in self.rounds])
        return result

    def cumulative_scores(self, contribution: bool = False) -> dict[str, float]:
        """Each institution's scores summed over every round, or its contribution, what the payout rule follows:
        scores summed over the rounds whose gain was significant, each round's weighed by ``payout.round_weight``
        (``fedlearn.payout.schedule``)."""
        best = UTILITY_MAX[self.config.scoring.utility]
        weighting = self.config.payout.round_weight if contribution else "equal"
        total = {name: 0.0 for name in self.institutions}
        for r in self.rounds:
            if r.scores is not None and (r.scores.significant or not contribution):
                weight = round_weight(r.scores.start_utility, best, weighting)
                for name, value in r.scores.scores.items():
                    total[name] = total.get(name, 0.0) + value * weight
        return total

    def finish(self, arrays: ArrayRecord, tokens: dict[str, dict[str, Any]] | None = None,
               refit: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the final model and summary; ``tokens`` adds per-institution address, earned and claimed; ``refit``
        what the last round's refit of the published model did (None: the refit is off)."""
        save_model(self.path / MODEL_FILE, arrays)
        cumulative = self.cumulative_scores()
        contribution = self.cumulative_scores(contribution=True)
        positive = sum(max(v, 0.0) for v in contribution.values())
        earned = {name: int(t.get("tokens_earned", 0)) for name, t in (tokens or {}).items()}
        paid = sum(earned.values())
        summary = {
            "run_dir": str(self.path),
            "rounds": len(self.rounds) - 1,
            "final_test_accuracy": self.rounds[-1].test_accuracy if self.rounds else None,
            "final_test_loss": self.rounds[-1].test_loss if self.rounds else None,
            # None when no backdoor is configured, like every round's backdoor_success in rounds.json.
            "final_backdoor_success": self.rounds[-1].backdoor_success if self.rounds else None,
            "backdoor_target": self.backdoor_target,
            "published_model_refit": refit,
            # Settings that give up a protection the default has (fedlearn.weaker_options); [] for the default.
            "weaker_options": weaker_options(self.config),
            "institutions": [
                {
                    "name": name,
                    "examples": self.examples.get(name, 0),
                    "cumulative_score": cumulative[name],
                    # Scores summed over the rounds whose gain was significant, and its share of the positive
                    # total: what the tokens follow. The token share sits beside it, never mixed up with it.
                    "contribution": contribution[name],
                    "contribution_share": max(contribution[name], 0.0) / positive if positive > 0 else 0.0,
                    **({"token_share": earned.get(name, 0) / paid if paid else 0.0} if tokens else {}),
                    **(tokens or {}).get(name, {}),
                }
                for name in self.institutions
            ],
        }
        write_json(self.path / SUMMARY_FILE, summary)
        return summary
