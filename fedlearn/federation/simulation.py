"""Run a federation in Flower's simulation engine from a config, with a progress bar and a run directory."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedlearn.config import FILES, RunConfig
from fedlearn.errors import ConfigError, FedlearnError
from fedlearn.federation.roster import federated_split, roster
from fedlearn.payout.ledger import LEDGER_FILE, RoundEntry
from fedlearn.payout.rewards import WEI_PER_TOKEN
from fedlearn.records import checkpoint
from fedlearn.records.rundir import RoundResult, new_run_dir


class SimulationFailed(FedlearnError):
    exit_code = 6


def check_resources(config: RunConfig) -> None:
    """Ray would wait forever to place a simulated institution that asks for more than the machine has."""
    if config.simulation.engine == "local":
        return
    import torch

    sim = config.simulation
    cpus, gpus = os.cpu_count() or 1, torch.cuda.device_count()
    if sim.client_cpus > cpus:
        raise ConfigError(f"simulation.client_cpus = {sim.client_cpus:g}: each simulated institution would need "
                          f"more CPUs than this machine has ({cpus})")
    if sim.client_gpus > 0 and gpus == 0:
        raise ConfigError(f"simulation.client_gpus = {sim.client_gpus:g} but this machine has no CUDA device "
                          "(set it to 0)")
    if sim.client_gpus > gpus:
        raise ConfigError(f"simulation.client_gpus = {sim.client_gpus:g}: each simulated institution would need "
                          f"more GPUs than this machine has ({gpus})")


@contextmanager
def stop_on_interrupt(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C sets ``stop`` instead of raising KeyboardInterrupt; a second Ctrl-C exits at once (130).

    Under the Ray engine the round loop runs in Flower's (non-daemon) ServerApp thread while the main thread
    waits in the engine's worker pool: a KeyboardInterrupt there makes Flower shut Ray down under workers blocked
    in ``ray.get`` (one logs ActorDiedError, another never returns) and leaves the ServerApp thread waiting
    ``strategy.round_timeout`` for replies, so the interpreter never exits. With ``stop`` set, the round loop
    ends itself (RunInterrupted) and Flower stops the engine in its own order."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():  # asked twice: do not wait for the engine
            print("fedlearn: interrupted", file=sys.stderr, flush=True)
            os._exit(130)
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_federation(
    config: RunConfig,
    *,
    run_dir: Path | None = None,
    quiet: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    observer: Callable[[RoundResult, int], None] | None = None,
) -> dict[str, Any]:
    """Train ``config.run.rounds`` rounds over ``config.data.institutions`` simulated institutions."""
    # Import lazily: Flower and Ray take seconds to import, and config errors should not wait for them.
    from flwr.simulation import run_simulation

    # Here, not later: importing Flower's simulation turns every library's deprecation notices back on
    # ("once"), and the imports below would print them. The `fedlearn` logger is never silenced.
    if quiet:
        logging.getLogger("flwr").setLevel(logging.ERROR)
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        warnings.filterwarnings("ignore")
    from tqdm import tqdm

    from fedlearn.federation.coordinator import RunInterrupted, RunOptions, build_server_app, preflight
    from fedlearn.federation.institution import build_client_app
    from fedlearn.federation.localgrid import run_in_process

    if config.data.dataset == FILES:
        raise ConfigError("data.dataset = 'files' is a pilot: each institution's SuperNode reads its own file (node "
                          "config institution and data-path) under `flwr run`; a simulation needs a dataset")
    if run_dir is None:  # its directory then resumes from anywhere
        config = config.anchored()
    else:  # with the settings and data it was made with, checked before its chain or node is touched
        checkpoint.require_made_with(Path(run_dir), config, federated_split(config).digest())
    # Data, addresses, keys, stakes and funds: before the engine starts or anything is written.
    preflight(config, fresh=run_dir is None or not (Path(run_dir) / LEDGER_FILE).exists())
    check_resources(config)
    run_dir = run_dir or new_run_dir(config)
    # disable=None: no bar when stdout is not a terminal (CI logs), the per-round lines still print.
    bar = tqdm(total=config.run.rounds, desc="rounds", unit="round", disable=None if progress else True)
    outcome: dict[str, Any] = {}

    def on_round(result: RoundResult, total: int, payout: RoundEntry | None) -> None:
        if observer is not None:
            observer(result, total)
        if result.server_round == 0:
            bar.write(f"round 0/{total}  test accuracy {result.test_accuracy:.4f}  loss {result.test_loss:.4f}")
            return
        s = result.scores
        scoring = ""
        if s is not None:
            detail = "round gain below epsilon, no scores" if s.truncated else f"{s.evaluations} evals"
            detail = f"skipped: {s.skipped}" if s.skipped else detail
            verdict = ("significant" if s.significant else "below scoring.min_gain: contributes nothing"
                       if s.gain_low > 0 else "not significant: contributes nothing")
            bound = (f"lower bound {s.gain_low:+.4f}" if config.scoring.significance == "bootstrap" else
                     "no significance test")
            detail += f"; gain {s.gain:+.4f} ({s.utility}, {bound}: {verdict})"
            scoring = f"  scoring {s.scoring_seconds:.2f}s ({s.label}, {detail})"
        rejected = f"  set aside: {', '.join(sorted(s.rejected))}" if s and s.rejected else ""
        paid = ""
        if payout is not None:
            paid = f"  paid {payout.round_total / WEI_PER_TOKEN:.2f} tokens"
            paid += " (final true-up)" if payout.final else ""
            if not payout.final and not payout.significant and payout.round_total > 0:
                # Not this round's: what earlier significant gains earned beyond the per-round rate the chain allows.
                paid += " (earned in earlier rounds, held back by the per-round rate)"
            paid += f" (tx {payout.tx_hash[:10]}…)" if payout.tx_hash else f" ({payout.status})"
        bar.write(
            f"round {result.server_round}/{total}  test accuracy {result.test_accuracy:.4f}  "
            f"loss {result.test_loss:.4f}{scoring}{paid}{rejected}"
        )
        bar.update(1)

    stop = threading.Event()  # Ray engine only: the local engine runs the round loop in this thread
    server_app = build_server_app(config, RunOptions(run_dir, stop_after, on_round, outcome.update,
                                                     None if config.simulation.engine == "local" else stop))
    client_app = build_client_app(config)
    try:
        if config.simulation.engine == "local":
            run_in_process(server_app, client_app, len(roster(config)))
        else:
            with stop_on_interrupt(stop):
                run_simulation(
                    server_app=server_app,
                    client_app=client_app,
                    num_supernodes=len(roster(config)),
                    backend_config={
                        "client_resources": {
                            "num_cpus": config.simulation.client_cpus,
                            "num_gpus": config.simulation.client_gpus,
                        },
                        "init_args": {"logging_level": "ERROR", "log_to_driver": not quiet},
                    },
                    verbose_logging=not quiet,
                )
    except (RunInterrupted, KeyboardInterrupt):
        # The CLI's one line and exit code 130, with the command that goes on from the last completed round.
        raise KeyboardInterrupt(f"resume with: fedlearn run --resume {run_dir}") from None
    finally:
        bar.close()
    if stop_after is not None and stop_after < config.run.rounds:
        return {"run_dir": str(run_dir), "stopped_after": stop_after}
    if not outcome:
        raise SimulationFailed(f"the federated run stopped before finishing; see {run_dir} and rerun with --verbose")
    return outcome
